//! `cargo xtask bench`: setup (toolchain, test and benchmark tools), build
//! the loader and `egress-bench` in release, run it as root.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;

use crate::{setup, util};

/// Programs the benchmark runs, with the Debian package providing each.
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("ipset", "ipset"),
    ("nft", "nftables"),
    ("bpftool", "bpftool"),
    ("timeout", "coreutils"),
];

/// The font the plot's text is drawn with, and its Debian package.
const FONT: (&str, &str) = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "fonts-dejavu-core",
);

/// The benchmark's package (bench/) and its binary.
const BENCH_PACKAGE: &str = "egress-bench";
const BENCH_BIN: &str = "egress-bench";

/// Measure the filter against no filter and against iptables (needs root).
///
/// Runs `setup --test-deps`, installs the benchmark tools if missing
/// (iperf3, iptables, ipset, nftables, bpftool, fonts-dejavu-core), builds
/// egress-loader and egress-bench in release, and runs egress-bench as root.
/// Everything happens in network namespaces that the run creates and
/// deletes; the machine's own network namespace is never touched.
///
/// The full run (under 15 minutes) writes docs/benchmarks.md, .json and
/// .png. `--quick` (under 3 minutes: fewer repetitions, shorter runs, fewer
/// list sizes) writes to target/bench-quick/ unless `--write-docs` is given.
/// Both times are the benchmark's own, after the release build.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask bench                        # full run, writes docs/benchmarks.*\n  \
    cargo xtask bench --quick                # writes target/bench-quick/benchmarks.*\n  \
    cargo xtask bench --reps 8               # exactly 8 repetitions\n  \
    cargo xtask bench --quick --out /tmp/b   # anywhere else\n  \
    cargo xtask bench --quick -- --only prog-cost --only footprint")]
pub struct Options {
    /// Few repetitions, short runs, fewer rule-list sizes (under 3 minutes,
    /// the release build apart).
    #[arg(long)]
    quick: bool,
    /// Exactly N repetitions of every comparison (default: a minimum, then
    /// more until every ratio's 95% interval is within ±2% or the section's
    /// time budget is spent).
    #[arg(long, value_name = "N")]
    reps: Option<u32>,
    /// With --quick, write docs/benchmarks.* anyway.
    #[arg(long, requires = "quick", conflicts_with = "out")]
    write_docs: bool,
    /// Write benchmarks.{md,json,png} here instead (e.g. while working, so
    /// that docs/ stays as committed; a benchmarks.md already there keeps
    /// its Analysis section).
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// More arguments for egress-bench (after `--`), e.g. `--only SECTION`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "BENCH_ARGS"
    )]
    args: Vec<OsString>,
}

pub fn main(opts: &Options) -> Result<()> {
    if !util::is_root()? {
        bail!(
            "the benchmark builds network namespaces, loads eBPF programs and runs iptables \
             inside a namespace: run it as root"
        );
    }
    setup::ensure(true)?;
    ensure_bench_tools()?;
    let loader = util::build_loader(true)?;
    util::run(util::cargo().args([
        "build",
        "--release",
        "--package",
        BENCH_PACKAGE,
        "--bin",
        BENCH_BIN,
    ]))?;
    let bench = util::built_binary(None, true, BENCH_BIN)?;
    let out = if let Some(dir) = &opts.out {
        dir.clone()
    } else if opts.quick && !opts.write_docs {
        util::target_dir().join("bench-quick")
    } else {
        util::workspace_root().join("docs")
    };
    // An `--out` among the arguments for egress-bench wins over ours (the
    // bench refuses two).
    let own_out = opts
        .args
        .iter()
        .any(|a| a == "--out" || a.to_string_lossy().starts_with("--out="));
    let mut cmd = util::command(&bench);
    cmd.env(util::LOADER_BIN_ENV, &loader);
    if !own_out {
        cmd.arg("--out").arg(&out);
    }
    if opts.quick {
        cmd.arg("--quick");
    }
    if let Some(n) = opts.reps {
        cmd.arg("--reps").arg(n.to_string());
    }
    cmd.args(&opts.args);
    util::run(&mut cmd)?;
    if !own_out {
        println!("results: {}", out.join("benchmarks.md").display());
    }
    Ok(())
}

/// Installs the Debian packages of missing benchmark tools and of the font.
fn ensure_bench_tools() -> Result<()> {
    let font: &[&str] = if Path::new(FONT.0).is_file() {
        &[]
    } else {
        &[FONT.1]
    };
    setup::ensure_tools("benchmark tools", BENCH_TOOLS, font)
}
