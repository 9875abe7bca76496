//! `egress-bench`: the egress filter side by side with the iptables rules it
//! replaces and with no filter at all, in network namespaces built for the
//! run. `cargo xtask bench` builds it in release and runs it as root.
//!
//! Sections, in the order they run:
//! 1. program cost: BPF_PROG_TEST_RUN on representative frames, minus the
//!    empty classifier in the same object;
//! 2. the main comparison: no filter / the seed's iptables rules / the filter,
//!    interleaved, on four workloads;
//! 3. scaling: 1..10,000 blocked CIDRs as iptables rules, as an ipset and in
//!    the filter's LPM trie, on the two per-packet-sensitive workloads;
//! 4. in-kernel run time per packet (BPF_ENABLE_STATS) during traffic;
//! 5. the loader's footprint: resident memory idle and while 50 bridges
//!    appear, and the memory of its maps;
//! 6. endpoints: the veth program with the bridge's fast exit against the
//!    bridge program alone, attaching 100 endpoints, memory with 100;
//! 7. paths: the reject path's cost per packet, the pass path with and
//!    without except_ports in traffic, host-network CRR and UDP `sendto`
//!    through the cgroup hooks, `docker network create` to attached, and the
//!    tunnel program on a VXLAN device's ingress per inner packet.
//!
//! Nothing here touches the machine's root network namespace: every address,
//! route and firewall rule is made inside namespaces this run created, and
//! every traffic loop is bounded in time and count.

mod cidrs;
mod endpoints;
mod footprint;
mod paths;
mod plan;
mod plot;
mod prog_cost;
mod report;
mod setups;
mod stats;
mod suite;
mod tunnels;
mod workloads;
mod world;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use plan::{Plan, Section};

/// Measure the egress filter against no filter and against iptables (needs
/// root; builds its own network namespaces and removes them afterwards).
#[derive(Debug, Parser)]
#[command(
    name = "egress-bench",
    after_help = "Examples:\n  \
        egress-bench --out docs                      # the full run (under 15 minutes)\n  \
        egress-bench --quick --out target/bench-quick\n  \
        egress-bench --quick --only prog-cost --out /tmp/b"
)]
struct Args {
    /// Few repetitions, short runs, fewer rule-list sizes (under 3 minutes;
    /// `cargo xtask bench --quick` builds in release first, apart from these).
    #[arg(long)]
    quick: bool,
    /// Exactly N repetitions of every comparison (default: a minimum, then
    /// more until every ratio's 95% interval is within ±2% of its median or
    /// the comparison's time budget is spent).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    reps: Option<u32>,
    /// Directory for benchmarks.md, benchmarks.json and benchmarks.png.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Run only these sections (repeatable); default: all.
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Vec<Section>,
}

fn main() -> std::process::ExitCode {
    // The host-network section re-executes this binary as its client, in a
    // cgroup (a cgroup holds processes, not threads of this one).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--hostnet-client") {
        return match paths::client_main(&argv[2..]) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("egress-bench --hostnet-client: error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, bpffs, eBPF, iptables inside a namespace)"
    );
    let plan = Plan::new(args.quick, args.reps, &args.only);
    let started = Instant::now();
    println!("egress-bench: {}", plan.describe());
    println!("egress-bench: planned: {}", plan.describe_estimate());
    let results = suite::run(&plan)?;
    let elapsed = started.elapsed();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let report = report::Report::new(&plan, results, elapsed);
    let png = args.out.join("benchmarks.png");
    let plotted = plot::draw(&report, &png)?;
    report.write(&args.out, plotted)?;
    println!(
        "egress-bench: done in {:.0} s; wrote {}/benchmarks.{{md,json{}}}",
        elapsed.as_secs_f64(),
        args.out.display(),
        if plotted { ",png" } else { "" }
    );
    Ok(())
}
