//! `cargo xtask demo`: the narrated end-to-end demo (tests/tests/integration/demo.rs).

use anyhow::Result;
use clap::Args;

use crate::{setup, test, util};

/// Run the end-to-end demo (needs root).
///
/// Runs `setup --test-deps`, builds egress-loader (debug), then
/// `cargo test -p egress-tests --test integration demo:: -- --nocapture` with
/// EGRESS_LOADER_BIN set, so the demo's narration is shown as it runs.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo xtask demo")]
pub struct Options {}

pub fn main(_opts: &Options) -> Result<()> {
    test::check_root()?;
    setup::ensure(true)?;
    let loader = util::build_loader(false)?;
    let mut cmd = util::cargo();
    cmd.env(util::LOADER_BIN_ENV, &loader).args([
        "test",
        "-p",
        "egress-tests",
        "--test",
        "integration",
        "demo::",
        "--",
        "--nocapture",
    ]);
    util::run(&mut cmd)
}
