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
/// and EGRESS_KUBERNETES_VALIDATE to the validator setup installed, then a
/// bounded fuzz run of the parser against etherparse (fuzz/, nightly,
/// libFuzzer; EGRESS_FUZZ_SECONDS, default 60).
/// Arguments after `--` are passed to `cargo test`; if they select packages
/// (-p/--package), the `--workspace --exclude egress-ebpf` pair and the fuzz
/// run are left out.
/// The tests build network namespaces and load eBPF programs, so they need
/// root: with CI=true and not root this fails at once.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask test                                   # everything\n  \
    cargo xtask test -- -p egress-tests                # only the namespace tests\n  \
    cargo xtask test -- -p egress-tests --test integration demo:: -- --nocapture\n  \
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

/// The `cargo test` arguments before any `--` (those after it go to the
/// test binaries), as far as they are UTF-8.
fn cargo_flags(args: &[OsString]) -> impl Iterator<Item = &str> {
    args.iter()
        .map_while(|arg| {
            arg.to_str()
                .map(|arg| arg != "--")
                .unwrap_or(true)
                .then_some(arg)
        })
        .filter_map(|arg| arg.to_str())
}

/// Whether `cargo test` arguments (before any `--`) select packages.
fn selects_packages(args: &[OsString]) -> bool {
    cargo_flags(args).any(|arg| {
        arg == "-p"
            || arg == "--package"
            || arg.starts_with("--package=")
            || (arg.starts_with("-p") && arg.len() > 2)
    })
}

/// What `cargo xtask test` adds to the user's `cargo test` arguments: the
/// whole workspace but the eBPF crate (which only builds for bpfel), unless
/// packages are selected. `--workspace` is not given twice (cargo refuses
/// that) when the user gave it already.
fn workspace_args(args: &[OsString]) -> Vec<&'static str> {
    if selects_packages(args) {
        return Vec::new();
    }
    let mut added = Vec::new();
    if !cargo_flags(args).any(|arg| arg == "--workspace" || arg == "--all") {
        added.push("--workspace");
    }
    added.extend(["--exclude", EBPF_PACKAGE]);
    added
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
    // very binary into its FROM-scratch image (tests/tests/integration/docker_e2e.rs).
    let loader = util::build_static_loader(false)?;
    // The Debian package of the (dynamically linked) debug build, for
    // tests/tests/integration/deploy.rs: its contents, lintian, its check-config.
    let deb = package::build_deb(
        &util::build_loader(false)?,
        &util::target_dir().join("debian-test"),
    )?;

    let mut cmd = util::cargo();
    cmd.env(util::LOADER_BIN_ENV, &loader)
        .env("EGRESS_DEB", &deb)
        .env("EGRESS_KUBERNETES_VALIDATE", setup::kubernetes_validate())
        .arg("test");
    cmd.args(workspace_args(&opts.args));
    cmd.args(&opts.args);
    util::run(&mut cmd)?;
    if !selects_packages(&opts.args) {
        fuzz_parser()?;
    }
    Ok(())
}

/// Default length of the fuzz run in `cargo xtask test`.
const FUZZ_SECONDS: u64 = 60;

/// `cargo fuzz run parse` for `EGRESS_FUZZ_SECONDS` (default 60; 0 skips
/// it, which CI=true refuses): arbitrary bytes through the parser, checked
/// against etherparse. No sanitizer (the parser is safe Rust; a panic is
/// the failure), debug assertions on (arithmetic overflow panics).
fn fuzz_parser() -> Result<()> {
    let seconds = match std::env::var("EGRESS_FUZZ_SECONDS") {
        Ok(s) => s
            .parse::<u64>()
            .map_err(|e| anyhow::anyhow!("EGRESS_FUZZ_SECONDS={s:?}: {e}"))?,
        Err(_) => FUZZ_SECONDS,
    };
    if seconds == 0 {
        if util::in_ci() {
            bail!("CI=true and EGRESS_FUZZ_SECONDS=0: the fuzz run is part of the test suite");
        }
        println!("EGRESS_FUZZ_SECONDS=0: skipping the parser's fuzz run");
        return Ok(());
    }
    let root = util::workspace_root();
    let mut cmd = util::command("rustup");
    // The nightly toolchain's cargo, not the one running xtask.
    cmd.current_dir(root)
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["run", "nightly", "cargo", "fuzz", "run", "parse"])
        .args(["--sanitizer", "none", "--debug-assertions", "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=512")
        .arg("-print_final_stats=1")
        .arg(format!("-dict={}", root.join("fuzz/parse.dict").display()));
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
        assert!(!selects_packages(&strings(&["--test", "integration"])));
    }

    #[test]
    fn workspace_given_once() {
        let excl = ["--exclude", EBPF_PACKAGE];
        assert_eq!(workspace_args(&[]), ["--workspace", excl[0], excl[1]]);
        assert_eq!(workspace_args(&strings(&["--workspace"])), excl);
        assert_eq!(workspace_args(&strings(&["--all"])), excl);
        // After `--` it is the test binaries' argument, not cargo's.
        assert_eq!(
            workspace_args(&strings(&["--", "--workspace"])),
            ["--workspace", excl[0], excl[1]]
        );
        assert!(workspace_args(&strings(&["-p", "egress-tests"])).is_empty());
    }
}
