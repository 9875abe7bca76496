//! `cargo xtask build`: setup, then build the loader (its build script builds
//! and embeds the eBPF object).

use anyhow::Result;
use clap::Args;

use crate::{setup, util};

/// Build egress-loader, with the eBPF object embedded.
///
/// Runs `setup` first (fast when everything is present), then
/// `cargo build --package egress-loader`; the loader's build script builds
/// the eBPF crate for bpfel-unknown-none with nightly and bpf-linker.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask build            # target/debug/egress-loader\n  \
    cargo xtask build --release  # target/release/egress-loader")]
pub struct Options {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
}

pub fn main(opts: &Options) -> Result<()> {
    setup::ensure(false)?;
    let bin = util::build_loader(opts.release)?;
    println!("built {}", bin.display());
    Ok(())
}
