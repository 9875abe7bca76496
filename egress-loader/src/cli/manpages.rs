use std::path::PathBuf;

use clap::CommandFactory;

use super::{Cli, Result};

/// Write the man pages, generated from this command line, into DIR:
/// egress-loader.1 and egress-loader-SUBCOMMAND.1 for each subcommand
/// (`cargo xtask package` runs it on the binary it packages).
#[derive(clap::Args)]
pub struct Args {
    /// Directory to write the pages into (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Every page: (file name, roff text).
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    let mut render = |name: String, cmd: clap::Command| -> Result {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.to_uppercase())
            .section("1")
            .manual("egress-filter")
            .source(format!("egress-loader {}", env!("CARGO_PKG_VERSION")))
            .render(&mut buf)?;
        out.push((format!("{name}.1"), buf));
        Ok(())
    };
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("egress-loader-{}", sub.get_name());
        render(
            name.clone(),
            sub.clone()
                .name(name)
                .bin_name(format!("egress-loader {}", sub.get_name())),
        )?;
    }
    render("egress-loader".into(), cmd)?;
    Ok(out)
}

pub fn main(a: Args) -> Result {
    std::fs::create_dir_all(&a.out)?;
    for (name, text) in pages()? {
        std::fs::write(a.out.join(&name), text)?;
        println!("{}", a.out.join(&name).display());
    }
    Ok(())
}
