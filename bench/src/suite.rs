//! Runs the sections of the plan and collects their results.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::footprint::{self, Footprint};
use crate::plan::{PRECISION, Plan, Repeat, Section};
use crate::prog_cost::{self, PolicyCost};
use crate::setups::Setup;
use crate::stats::{Estimate, Summary, paired_ratios};
use crate::workloads::{Metric, Workload};
use crate::world::{self, World};

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub setup: String,
    pub rep: u32,
    pub metric: Metric,
    pub value: f64,
}

/// Interleaved repetitions of several setups on several workloads.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub setups: Vec<Setup>,
    pub workloads: Vec<Workload>,
    /// Repetitions run (each one measures every setup).
    pub reps: u32,
    /// What was asked: a minimum, a cap and a time budget.
    pub repeat: Repeat,
    /// Whether every ratio's 95% interval came within ±PRECISION of its
    /// median before the budget or the cap ran out.
    pub precise: bool,
    pub run_secs: f64,
    pub samples: Vec<Sample>,
    /// Seconds from "switch on" to "in force", per setup (median).
    pub setup_secs: BTreeMap<String, f64>,
    /// Packets the filter counted / DOCKER-USER's jump matched during the
    /// whole comparison, per setup: proof that the traffic went through it.
    pub packets_seen: BTreeMap<String, u64>,
}

impl Comparison {
    /// The values of `metric` for `setup`, one per repetition that produced one.
    pub fn values(&self, setup: Setup, metric: Metric) -> Vec<(u32, f64)> {
        let key = setup.key();
        self.samples
            .iter()
            .filter(|s| s.setup == key && s.metric == metric)
            .map(|s| (s.rep, s.value))
            .collect()
    }

    /// The blocked-list sizes the filter ran with, in the order of `setups`.
    pub fn filter_sizes(&self) -> Vec<usize> {
        self.setups
            .iter()
            .filter_map(|x| match x {
                Setup::Filter(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    pub fn summary(&self, setup: Setup, metric: Metric) -> Option<Summary> {
        let v: Vec<f64> = self.values(setup, metric).iter().map(|x| x.1).collect();
        (!v.is_empty()).then(|| Summary::of(&v))
    }

    /// Performance relative to "no filter" in the same repetition, so that
    /// higher is better for every metric (for latencies and CPU costs:
    /// no-filter value divided by this one). The median over repetitions
    /// with its bootstrap 95% interval (resampling repetitions).
    pub fn ratio(&self, setup: Setup, metric: Metric) -> Option<Estimate> {
        self.ratio_to(Setup::NoFilter, setup, metric)
    }

    /// The same against another baseline than no filter.
    pub fn ratio_to(&self, base: Setup, setup: Setup, metric: Metric) -> Option<Estimate> {
        let r = paired_ratios(
            &self.values(base, metric),
            &self.values(setup, metric),
            metric.higher_is_better(),
        );
        Estimate::of(&r)
    }

    /// The ratios whose interval is still wider than ±`tolerance`, as
    /// "setup: metric (±x%)".
    pub fn imprecise(&self, tolerance: f64) -> Vec<String> {
        let metrics: std::collections::BTreeSet<Metric> =
            self.samples.iter().map(|s| s.metric).collect();
        let mut out = Vec::new();
        for &setup in self.setups.iter().filter(|s| **s != Setup::NoFilter) {
            for &m in &metrics {
                if let Some(e) = self.ratio(setup, m)
                    && !e.within(tolerance)
                {
                    out.push(format!(
                        "{}: {} (±{:.1}%)",
                        setup.label(),
                        m.label(),
                        e.half_width().min(9.99) * 100.0
                    ));
                }
            }
        }
        out
    }
}

/// In-kernel run time of the attached classifier during real traffic.
#[derive(Debug, Clone, Serialize)]
pub struct RunTime {
    pub program: &'static str,
    pub cidrs: usize,
    pub workload: Workload,
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub iptables: String,
    pub iperf3: String,
    pub date: String,
    /// /proc/loadavg (1, 5, 15 minutes) when the run started and ended:
    /// other work on the machine shows up as noise.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// The source measured: `git rev-parse --short HEAD` of the workspace
    /// this binary was built from, with a note if it had uncommitted changes.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub prog_cost: Option<Vec<PolicyCost>>,
    pub main: Option<Comparison>,
    pub scaling: Option<Comparison>,
    pub run_time: Option<Vec<RunTime>>,
    pub footprint: Option<Footprint>,
    pub endpoints: Option<crate::endpoints::EndpointsBench>,
    pub paths: Option<crate::paths::Paths>,
    /// Wall-clock seconds of each part of the run, in the order they ran
    /// ("world" is building the namespaces and the iperf3 server).
    pub section_secs: Vec<SectionTime>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SectionTime {
    pub section: String,
    pub secs: f64,
}

/// Times the parts of the run and prints each one's end.
#[derive(Default)]
struct Clock(Vec<SectionTime>);

impl Clock {
    fn time<T>(&mut self, key: &str, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !name.is_empty() {
            section(name);
        }
        let t0 = Instant::now();
        let r = f();
        let secs = t0.elapsed().as_secs_f64();
        println!("   [{key}: {secs:.1} s]");
        self.0.push(SectionTime {
            section: key.to_owned(),
            secs,
        });
        r
    }
}

pub fn run(plan: &Plan) -> Result<Results> {
    let mut warnings = Vec::new();
    let mut clock = Clock::default();
    let machine = machine();
    let prog_cost = if plan.has(Section::ProgCost) {
        Some(clock.time(
            Section::ProgCost.key(),
            "program cost (BPF_PROG_TEST_RUN)",
            || prog_cost::measure(plan),
        )?)
    } else {
        None
    };
    let needs_world = [
        Section::Main,
        Section::Scaling,
        Section::RunTime,
        Section::Footprint,
        Section::Endpoints,
        Section::Paths,
    ]
    .iter()
    .any(|&s| plan.has(s));
    let (mut main, mut scaling, mut run_time, mut footprint) = (None, None, None, None);
    let mut endpoints = None;
    let mut paths = None;
    if needs_world {
        let mut world = clock.time("world", "", World::build)?;
        let w = &mut warnings;
        if plan.has(Section::Main) {
            main = Some(clock.time(Section::Main.key(), "main comparison", || {
                compare(
                    &mut world,
                    &[Setup::NoFilter, Setup::Iptables(0), Setup::Filter(0)],
                    &Workload::ALL,
                    plan.main,
                    plan.run_main,
                    plan.iperf_secs,
                    w,
                )
            })?);
        }
        if plan.has(Section::Scaling) {
            let mut setups = vec![Setup::NoFilter];
            for &n in &plan.sizes {
                setups.extend([Setup::Iptables(n), Setup::Ipset(n), Setup::Filter(n)]);
            }
            scaling = Some(clock.time(
                Section::Scaling.key(),
                "scaling with the blocked-list size",
                || {
                    compare(
                        &mut world,
                        &setups,
                        &[Workload::Udp, Workload::Crr],
                        plan.scaling,
                        plan.run_scaling,
                        plan.iperf_secs,
                        w,
                    )
                },
            )?);
        }
        if plan.has(Section::RunTime) {
            run_time = Some(clock.time(
                Section::RunTime.key(),
                "in-kernel run time during traffic (BPF_ENABLE_STATS)",
                || measure_run_time(&mut world, plan),
            )?);
        }
        if plan.has(Section::Footprint) {
            footprint = Some(
                clock.time(Section::Footprint.key(), "loader footprint", || {
                    footprint::measure(&mut world, plan)
                })?,
            );
        }
        if plan.has(Section::Endpoints) {
            endpoints = Some(clock.time(
                Section::Endpoints.key(),
                "endpoints: veth program + bridge fast exit, attaching 100",
                || crate::endpoints::measure(&mut world, plan),
            )?);
        }
        if plan.has(Section::Paths) {
            paths = Some(clock.time(
                Section::Paths.key(),
                "paths: reject, except_ports in traffic, host network, network create",
                || crate::paths::measure(&mut world, plan, w),
            )?);
        }
    }
    let mut machine = machine;
    machine.loadavg_end = loadavg();
    Ok(Results {
        machine,
        prog_cost,
        main,
        scaling,
        run_time,
        footprint,
        endpoints,
        paths,
        section_secs: clock.0,
        warnings,
    })
}

fn section(name: &str) {
    println!("== {name}");
}

/// Every repetition switches each setup on in turn (the order rotates from
/// one repetition to the next), runs the workloads, and switches it off.
fn compare(
    world: &mut World,
    setups: &[Setup],
    workloads: &[Workload],
    repeat: Repeat,
    run: Duration,
    iperf_secs: u32,
    warnings: &mut Vec<String>,
) -> Result<Comparison> {
    let mut c = Comparison {
        setups: setups.to_vec(),
        workloads: workloads.to_vec(),
        reps: 0,
        repeat,
        precise: false,
        run_secs: run.as_secs_f64(),
        samples: Vec::new(),
        setup_secs: BTreeMap::new(),
        packets_seen: BTreeMap::new(),
    };
    let mut setup_times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let started = Instant::now();
    let mut precise = false;
    let mut rep = 0u32;
    while repeat.another(rep, started.elapsed(), precise) {
        let samples = &mut c.samples;
        let packets_seen = &mut c.packets_seen;
        let mut order = setups.to_vec();
        order.rotate_left(rep as usize % setups.len());
        for setup in order {
            let t0 = Instant::now();
            let active = setup
                .activate(world)
                .with_context(|| format!("switching on {}", setup.label()))?;
            setup_times
                .entry(setup.key())
                .or_default()
                .push(active.setup_time.as_secs_f64());
            let mut line = format!("rep {} {:<28}", rep + 1, setup.label());
            for &wl in workloads {
                match wl.run(world, run, iperf_secs) {
                    Ok(values) => {
                        for (metric, value) in values {
                            line.push_str(&format!(" {}={}", short_metric(metric), fmt(value)));
                            samples.push(Sample {
                                setup: setup.key(),
                                rep,
                                metric,
                                value,
                            });
                        }
                    }
                    Err(e) => {
                        let w = format!("rep {rep}, {}, {wl:?}: {e:#}", setup.label());
                        println!("   warning: {w}");
                        warnings.push(w);
                    }
                }
            }
            match active.packets_seen(world) {
                Ok(p) => *packets_seen.entry(setup.key()).or_default() += p,
                Err(e) => warnings.push(format!("{}: reading counters: {e:#}", setup.label())),
            }
            active
                .deactivate(world)
                .with_context(|| format!("switching off {}", setup.label()))?;
            println!("   {line} ({:.1} s)", t0.elapsed().as_secs_f64());
        }
        rep += 1;
        c.reps = rep;
        let left = c.imprecise(PRECISION);
        precise = left.is_empty() && rep >= 2;
        if !precise {
            println!(
                "   after {rep} reps ({:.0} s), {} ratios not yet within ±{:.0}%, e.g. {}",
                started.elapsed().as_secs_f64(),
                left.len(),
                PRECISION * 100.0,
                left.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            );
        }
    }
    c.precise = precise;
    c.setup_secs = setup_times
        .into_iter()
        .map(|(k, v)| (k, crate::stats::median(&v)))
        .collect();
    Ok(c)
}

fn short_metric(m: Metric) -> &'static str {
    match m {
        Metric::UdpPps => "udp_pps",
        Metric::CrrPerSec => "crr/s",
        Metric::RrPerSec => "rr/s",
        Metric::RrP50Us => "p50us",
        Metric::RrP99Us => "p99us",
        Metric::TcpGbps => "gbps",
        Metric::UdpCpuNs => "cpu_ns/pkt",
        Metric::CrrCpuUs => "cpu_us/conn",
        Metric::RrCpuUs => "cpu_us/rr",
        Metric::TcpCpuMsPerGb => "cpu_ms/GB",
    }
}

pub fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Program run time and count of the classifier with id `id`.
fn prog_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    anyhow::bail!("program {id} not found among the loaded programs")
}

/// The classifier's in-kernel time per packet during UDP and CRR traffic,
/// at the default policy and with the largest blocked list. Run-time stats
/// are global to the kernel: they are switched on with BPF_ENABLE_STATS,
/// which reverts by itself when its fd closes (even if this process dies),
/// only around these runs; the throughput runs never have them on.
fn measure_run_time(world: &mut World, plan: &Plan) -> Result<Vec<RunTime>> {
    let mut out = Vec::new();
    // The empty classifier alone on docker0 first: what the stats report
    // for a program that does nothing (call, clock reads, cold caches).
    for n in [None, Some(0), Some(plan.max_size())] {
        let mut noop = None;
        let mut active = None;
        let id = match n {
            None => {
                let mut p = crate::prog_cost::Noop::load()?;
                let id = p.attach(world.host(), world.topo.bridge_name())?;
                noop = Some(p);
                id
            }
            Some(n) => {
                // The bridge program alone, as before endpoints; the two
                // programs together are the endpoints section's.
                let a = Setup::FilterBridgeOnly(n).activate(world)?;
                let id = a.program_id().context("no program id")?;
                active = Some(a);
                id
            }
        };
        for wl in [Workload::Udp, Workload::Crr] {
            let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)")?;
            let (t0, c0) = prog_stats(id)?;
            wl.run(world, plan.run_main, plan.iperf_secs)?;
            let (t1, c1) = prog_stats(id)?;
            drop(stats_fd);
            let runs = c1 - c0;
            let ns = (t1 - t0).as_nanos() as u64;
            let r = RunTime {
                program: if n.is_none() {
                    "egress_noop"
                } else {
                    "egress_filter"
                },
                cidrs: n.unwrap_or(0),
                workload: wl,
                runs,
                run_time_ns: ns,
                ns_per_run: ns as f64 / runs.max(1) as f64,
            };
            println!(
                "   {} ({} CIDRs), {wl:?}: {runs} runs, {:.1} ns per run",
                r.program, r.cidrs, r.ns_per_run
            );
            out.push(r);
        }
        if let Some(a) = active {
            a.deactivate(world)?;
        }
        drop(noop);
    }
    Ok(out)
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        iptables: world::tool_version("iptables", "--version"),
        iperf3: world::tool_version("iperf3", "--version"),
        date: utc_date(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        source: source(),
    }
}

/// Today's date in UTC, `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The workspace's commit, and whether tracked files had uncommitted changes.
fn source() -> String {
    let root = egress_devtools::workspace::workspace_root();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "unknown (not a git checkout)".into(),
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if s.is_empty() => format!("commit {head}"),
            _ => format!("commit {head} with uncommitted changes"),
        },
    }
}
