//! `cargo xtask test`: setup (toolchain and test tools), build the loader,
//! run the workspace tests against it.

use std::ffi::OsString;

use anyhow::{Result, bail};
use clap::Args;

use crate::{package, setup, util};

/// The eBPF crate only builds for bpfel-unknown-none (nightly, no_std); the
/// loader's build script builds it, so the host test run leaves it out.
const EBPF_PACKAGE: &str = "egress-ebpf";

/// Run the test suite (needs root).
///
/// Runs `setup --test-deps` (which includes Docker's engine for the
/// end-to-end test, installed but never started), builds egress-loader
/// (debug, statically linked), then
/// `cargo test --workspace --exclude egress-ebpf` with EGRESS_LOADER_BIN set
/// to the absolute path of target/<arch>-unknown-linux-gnu/debug/egress-loader,
/// EGRESS_DEB to the Debian package of the debug build (target/debian-test/)
/// and EGRESS_KUBERNETES_VALIDATE to the validator setup installed.
/// Arguments after `--` are passed to `cargo test`; if they select packages
/// (-p/--package), the `--workspace --exclude egress-ebpf` pair is left out.
/// The tests build network namespaces and load eBPF programs, so they need
/// root: with CI=true and not root this fails at once.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask test                                   # everything\n  \
    cargo xtask test -- -p egress-tests                # only the namespace tests\n  \
    cargo xtask test -- -p egress-tests --test demo -- --nocapture\n  \
    cargo xtask test -- -- --test-threads=1            # args for the test binaries")]
pub struct Options {
    /// Arguments for `cargo test` (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CARGO_TEST_ARGS"
    )]
    args: Vec<OsString>,
}

/// Whether `cargo test` arguments (before any `--`) select packages.
fn selects_packages(args: &[OsString]) -> bool {
    args.iter()
        .map_while(|arg| {
            arg.to_str()
                .map(|arg| arg != "--")
                .unwrap_or(true)
                .then_some(arg)
        })
        .filter_map(|arg| arg.to_str())
        .any(|arg| {
            arg == "-p"
                || arg == "--package"
                || arg.starts_with("--package=")
                || (arg.starts_with("-p") && arg.len() > 2)
        })
}

/// Fails under CI when not root; warns otherwise.
pub fn check_root() -> Result<()> {
    if util::is_root()? {
        return Ok(());
    }
    if util::in_ci() {
        bail!(
            "CI=true and not root: the tests create network namespaces and load eBPF programs, run them as root"
        );
    }
    println!("warning: not root; the tests need root (network namespaces, eBPF), expect failures");
    Ok(())
}

pub fn main(opts: &Options) -> Result<()> {
    check_root()?;
    setup::ensure(true)?;
    // Statically linked, so that the Docker end-to-end test can put this
    // very binary into its FROM-scratch image (tests/tests/docker_e2e.rs).
    let loader = util::build_static_loader(false)?;
    // The Debian package of the (dynamically linked) debug build, for
    // tests/tests/deploy.rs: its contents, lintian, its check-config.
    let deb = package::build_deb(
        &util::build_loader(false)?,
        &util::target_dir().join("debian-test"),
    )?;

    let mut cmd = util::cargo();
    cmd.env(util::LOADER_BIN_ENV, &loader)
        .env("EGRESS_DEB", &deb)
        .env("EGRESS_KUBERNETES_VALIDATE", setup::kubernetes_validate())
        .arg("test");
    if !selects_packages(&opts.args) {
        cmd.args(["--workspace", "--exclude", EBPF_PACKAGE]);
    }
    cmd.args(&opts.args);
    util::run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn package_selection() {
        assert!(!selects_packages(&[]));
        assert!(selects_packages(&strings(&["-p", "egress-tests"])));
        assert!(selects_packages(&strings(&["-pegress-tests"])));
        assert!(selects_packages(&strings(&["--package=egress-tests"])));
        assert!(!selects_packages(&strings(&["--", "-p"])));
        assert!(!selects_packages(&strings(&["--test", "demo"])));
    }
}
