use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Result};

/// Print a shell completion script, generated from this command line.
///
/// The Debian package installs them (bash, zsh, fish); elsewhere, write one
/// where your shell looks.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    egress-loader completions bash > /etc/bash_completion.d/egress-loader\n  \
    egress-loader completions zsh > \"${fpath[1]}/_egress-loader\"\n  \
    egress-loader completions fish > ~/.config/fish/completions/egress-loader.fish")]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn main(a: Args) -> Result {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "egress-loader", &mut std::io::stdout());
    Ok(())
}
