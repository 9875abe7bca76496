//! Endpoints: the program on each container's veth with the bridge
//! program's fast exit behind it, against the bridge program alone (as
//! before endpoints); attaching 100 endpoints; the loader's memory with 100
//! of them.
//!
//! A container's packet now meets two programs: `egress_endpoint` judges it
//! on the veth and marks it, `egress_filter` on the bridge sees the mark
//! and returns at once. The target: together no more than `egress_filter`
//! alone costs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use egress_ebpf_common::{
    endpoint::{Endpoint, HANDOFF_MARK, endpoint_slot},
    maps::{ENDPOINT_PROGRAM, PROGRAM},
};
use egress_tests::{
    LoaderProcess, addrs,
    frames::{self, ACK, IPPROTO_UDP, V4},
    test_run::Classifier,
};
use serde::Serialize;

use crate::{
    plan::{Plan, part},
    prog_cost::Noop,
    setups::{Active, Setup},
    stats::median,
    workloads::Workload,
    world::{World, exec_with_input, rss_kib},
};

/// BPF_PROG_TEST_RUN of one frame: the bridge program alone, and the
/// endpoint program plus the bridge program seeing its mark.
#[derive(Debug, Clone, Serialize)]
pub struct TestRunPair {
    pub frame: String,
    /// ns per run (median over rounds), each including the test_run loop's
    /// own cost, which `noop_ns` is.
    pub bridge_alone_ns: f64,
    pub endpoint_ns: f64,
    pub fast_exit_ns: f64,
    pub noop_ns: f64,
    /// `fast_exit_ns` is timed one run per call (the exit clears the mark
    /// test_run's repeats would share): the empty classifier timed so.
    pub noop_single_ns: f64,
    /// Program time: `bridge_alone - noop`.
    pub before_ns: f64,
    /// Program time: `endpoint - noop + fast_exit - noop_single`.
    pub together_ns: f64,
}

/// Kernel run-time stats per packet during traffic.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficPair {
    pub workload: Workload,
    pub reps: u32,
    /// Repetitions of the 100-endpoint figures (fewer in a quick run).
    pub reps_100: u32,
    /// Median over reps of `run_time / run_cnt` on docker0, bridge only.
    pub bridge_alone_ns: f64,
    /// The same for the endpoint program on the veth...
    pub endpoint_ns: f64,
    /// ... and for the bridge program's fast exit.
    pub fast_exit_ns: f64,
    /// Their sum per packet (median of the per-rep sums).
    pub together_ns: f64,
    /// The empty classifier on docker0 alone, and on the veth and docker0.
    pub noop_one_ns: f64,
    pub noop_two_ns: f64,
    /// The same two programs with 99 more endpoints attached (idle veths,
    /// ports of docker0): the endpoint program, the fast exit, their sum
    /// per packet.
    pub endpoint_100_ns: f64,
    pub fast_exit_100_ns: f64,
    pub together_100_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachHundred {
    pub endpoints: usize,
    /// `ip -batch` creating the namespaces and veths (outside the loader).
    pub create_secs: f64,
    /// From the last veth's creation to all of them attached.
    pub attach_after_created_secs: f64,
    /// From the first veth's creation to all of them attached.
    pub attach_total_secs: f64,
    /// A loader started with them all present: start to all attached.
    pub startup_secs: f64,
    /// VmRSS idle with them attached (the running loader, then the
    /// restarted one).
    pub idle_rss_kib: u64,
    pub restarted_idle_rss_kib: u64,
    /// Endpoints left in `counters --json` once the veths are gone.
    pub endpoints_after_removal: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointsBench {
    pub test_run: Vec<TestRunPair>,
    pub traffic: Vec<TrafficPair>,
    pub attach: AttachHundred,
}

pub fn measure(world: &mut World, plan: &Plan) -> Result<EndpointsBench> {
    let test_run = part("endpoints/test-run", || test_run(plan))?;
    let traffic = part("endpoints/traffic", || traffic(world, plan))?;
    let attach = part("endpoints/attach-100", || attach_hundred(world, plan))?;
    Ok(EndpointsBench {
        test_run,
        traffic,
        attach,
    })
}

fn test_run(plan: &Plan) -> Result<Vec<TestRunPair>> {
    let mut noop = Noop::load()?;
    let mut c = Classifier::with_policy("");
    // The test skb's device is loopback (ifindex 1): its endpoint entry.
    let mut e = Endpoint::empty();
    e.id = 1;
    e.slot = endpoint_slot(1);
    // The frames go to the bridge's MAC: judged at the endpoint.
    e.bridge_mac = frames::DST_MAC;
    c.endpoint_maps()
        .endpoints
        .set(1, e, 0)
        .context("writing the endpoint entry")?;
    let server = addrs::SMTP_V4.octets();
    let frames = vec![
        (
            "pass: UDP, 64 bytes, to 198.51.100.25".to_owned(),
            frames::v4_frame(
                &V4::new(addrs::SMTP_V4, IPPROTO_UDP),
                &frames::udp(40000, 9000, &[0; 18]),
            ),
        ),
        (
            "pass: TCP ACK to 198.51.100.25:443".to_owned(),
            frames::v4_tcp(server, 443, ACK),
        ),
        (
            "pass: IPv6 TCP ACK to [2001:db8:25::25]:443".to_owned(),
            frames::v6_tcp("2001:db8:25::25", 443, ACK),
        ),
    ];
    let repeat = plan.test_run_repeat;
    let mut out = Vec::new();
    for (name, frame) in frames {
        let (mut b, mut e, mut f, mut z, mut z1) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.test_run_rounds {
            b.push(c.run_marked_repeat(PROGRAM, &frame, 0, repeat).2 as f64);
            let (_, mark, ns) = c.run_marked_repeat(ENDPOINT_PROGRAM, &frame, 0, repeat);
            anyhow::ensure!(mark & HANDOFF_MARK != 0, "{name}: no hand-off mark");
            e.push(ns as f64);
            // The fast exit clears the mark, and test_run repeats on one skb:
            // with `repeat` only the first run would take the exit. So it is
            // timed one run per call, against the empty classifier timed the
            // same way (each call's duration holds the loop's clock reads).
            let mut fr = Vec::new();
            let mut zr = Vec::new();
            for _ in 0..plan.single_calls {
                let (_, mark, ns) = c.run_marked_repeat(PROGRAM, &frame, HANDOFF_MARK, 1);
                anyhow::ensure!(mark & HANDOFF_MARK == 0, "{name}: fast exit kept the mark");
                fr.push(ns as f64);
                zr.push(noop.run(&frame, 1)? as f64);
            }
            f.push(median(&fr));
            z1.push(median(&zr));
            z.push(noop.run(&frame, repeat)? as f64);
        }
        let (b, e, f, z, z1) = (median(&b), median(&e), median(&f), median(&z), median(&z1));
        let pair = TestRunPair {
            frame: name,
            bridge_alone_ns: b,
            endpoint_ns: e,
            fast_exit_ns: f,
            noop_ns: z,
            noop_single_ns: z1,
            before_ns: (b - z).max(0.0),
            together_ns: (e - z).max(0.0) + (f - z1).max(0.0),
        };
        println!(
            "   {}: bridge alone {:.1} ns; endpoint {:.1} ns (empty {:.1} ns) + fast exit {:.1} ns (empty, one run a call, {:.1} ns): program time {:.1} -> {:.1} ns",
            pair.frame, b, e, z, f, z1, pair.before_ns, pair.together_ns
        );
        out.push(pair);
    }
    Ok(out)
}

/// `run_time_ns` and `run_cnt` of program `id` now.
fn stats(id: u32) -> Result<(u64, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time().as_nanos() as u64, info.run_count()));
        }
    }
    anyhow::bail!("program {id} not found among the loaded programs")
}

/// Runs `wl` once with the kernel's run-time stats on (BPF_ENABLE_STATS:
/// the switch behind `kernel.bpf_stats_enabled`, which turns itself off
/// when its fd closes, even if this process dies); returns the run time
/// and count of each program in `ids`.
fn with_stats(world: &World, plan: &Plan, wl: Workload, ids: &[u32]) -> Result<Vec<(u64, u64)>> {
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)")?;
    let before: Vec<(u64, u64)> = ids.iter().map(|&i| stats(i)).collect::<Result<_>>()?;
    let run = wl.run(world, plan.run_main, plan.iperf_secs);
    let after: Vec<(u64, u64)> = ids.iter().map(|&i| stats(i)).collect::<Result<_>>()?;
    drop(fd);
    run?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
        .collect())
}

/// Per-packet figures of one workload, one value per repetition.
#[derive(Default)]
struct TrafficRuns {
    one: Vec<f64>,
    two: Vec<f64>,
    alone: Vec<f64>,
    /// The endpoint program and the fast exit, with 1 and with 100 endpoints.
    with_1: EndpointPath,
    with_100: EndpointPath,
}

/// The endpoint program and the bridge's fast exit behind it, ns per
/// packet (the endpoint program's runs), one value per repetition.
#[derive(Default)]
struct EndpointPath {
    ep: Vec<f64>,
    fx: Vec<f64>,
    sum: Vec<f64>,
}

impl EndpointPath {
    /// From the run-time stats (time, runs) of the endpoint program `e`
    /// and of the bridge program `f`.
    fn push(&mut self, e: (u64, u64), f: (u64, u64)) {
        let packets = e.1.max(1) as f64;
        self.ep.push(e.0 as f64 / packets);
        self.fx.push(per_run(f));
        self.sum.push((e.0 + f.0) as f64 / packets);
    }
}

/// The endpoint program's id and the bridge program's, in the order
/// [`EndpointPath::push`] takes their stats.
fn endpoint_path_ids(a: &Active) -> Result<[u32; 2]> {
    let bridge_id = a.program_id().context("no bridge program id")?;
    let ep_id = a
        .endpoint_program_id()
        .context("the endpoint program is not attached to the container's veth")?;
    Ok([ep_id, bridge_id])
}

/// ns per run of one program: run time over run count.
fn per_run(r: (u64, u64)) -> f64 {
    r.0 as f64 / r.1.max(1) as f64
}

fn traffic(world: &mut World, plan: &Plan) -> Result<Vec<TrafficPair>> {
    let workloads = [Workload::Udp, Workload::Crr];
    let veth = world.topo.container(0).host_veth().to_owned();
    let bridge = world.topo.bridge_name().to_owned();
    let mut runs: [TrafficRuns; 2] = Default::default();
    // The workloads that share one activation of each configuration (see
    // Plan::share_activation); `i` indexes `runs`.
    let groups = plan.activation_groups(&workloads);
    for group in &groups {
        for rep in 0..plan.endpoint_reps {
            // The empty classifier on docker0, then on the veth too.
            {
                let mut n = Noop::load()?;
                let id = n.attach(world.host(), &bridge)?;
                for &(i, wl) in group {
                    let r = with_stats(world, plan, wl, &[id])?;
                    runs[i].one.push(per_run(r[0]));
                }
                n.attach(world.host(), &veth)?;
                for &(i, wl) in group {
                    let r = with_stats(world, plan, wl, &[id])?;
                    // One program, two hooks: its runs count both.
                    runs[i].two.push(2.0 * per_run(r[0]));
                }
            }
            let a = Setup::FilterBridgeOnly(0).activate(world)?;
            let id = a.program_id().context("no bridge program id")?;
            for &(i, wl) in group {
                let r = with_stats(world, plan, wl, &[id])?;
                runs[i].alone.push(per_run(r[0]));
            }
            a.deactivate(world)?;

            let a = Setup::Filter(0).activate(world)?;
            let ids = endpoint_path_ids(&a)?;
            for &(i, wl) in group {
                let r = with_stats(world, plan, wl, &ids)?;
                runs[i].with_1.push(r[0], r[1]);
            }
            a.deactivate(world)?;

            if rep >= plan.endpoint_100_reps {
                continue;
            }
            // With 99 more endpoints: idle veths on docker0, each with its
            // entry and its link.
            let extra = part("endpoints/99-veths-created", || {
                ExtraPorts::create(world, HUNDRED - 1)
            })?;
            let a = part("endpoints/loader-with-100", || {
                Setup::Filter(0).activate(world)
            })?;
            let ids = endpoint_path_ids(&a)?;
            let r = a.with_loader(|l| wait_attached(l, HUNDRED - 1).map(|_| ()));
            if let Some(r) = r {
                r?;
            }
            for &(i, wl) in group {
                let r = with_stats(world, plan, wl, &ids)?;
                runs[i].with_100.push(r[0], r[1]);
            }
            a.deactivate(world)?;
            part("endpoints/99-veths-removed", || extra.remove(world))?;
        }
    }
    let mut out = Vec::new();
    for (wl, r) in workloads.into_iter().zip(&runs) {
        let pair = TrafficPair {
            workload: wl,
            reps: plan.endpoint_reps,
            reps_100: plan.endpoint_100_reps.min(plan.endpoint_reps),
            bridge_alone_ns: median(&r.alone),
            endpoint_ns: median(&r.with_1.ep),
            fast_exit_ns: median(&r.with_1.fx),
            together_ns: median(&r.with_1.sum),
            noop_one_ns: median(&r.one),
            noop_two_ns: median(&r.two),
            endpoint_100_ns: median(&r.with_100.ep),
            fast_exit_100_ns: median(&r.with_100.fx),
            together_100_ns: median(&r.with_100.sum),
        };
        println!(
            "   {wl:?}: bridge alone {:.1} ns/packet; endpoint {:.1} + fast exit {:.1} = {:.1} ns/packet (empty: {:.1} on one hook, {:.1} on two)",
            pair.bridge_alone_ns,
            pair.endpoint_ns,
            pair.fast_exit_ns,
            pair.together_ns,
            pair.noop_one_ns,
            pair.noop_two_ns
        );
        println!(
            "   {wl:?}, {HUNDRED} endpoints: endpoint {:.1} + fast exit {:.1} = {:.1} ns/packet",
            pair.endpoint_100_ns, pair.fast_exit_100_ns, pair.together_100_ns
        );
        out.push(pair);
    }
    Ok(out)
}

const HUNDRED: usize = 100;

/// Idle veths (`ebx*`, peers in namespaces of their own) as ports of
/// docker0 in the host namespace: endpoints that carry no traffic.
struct ExtraPorts {
    del: String,
}

impl ExtraPorts {
    fn create(world: &World, n: usize) -> Result<Self> {
        let tag = std::process::id() % 10_000;
        let (mut add, mut del) = (String::new(), String::new());
        for i in 0..n {
            let ns = format!("eb{tag}x{i}");
            add.push_str(&format!(
                "netns add {ns}\nlink add ebv{i}x type veth peer name eth0 netns {ns}\n\
                 link set ebv{i}x master docker0 up\n"
            ));
            del.push_str(&format!("netns del {ns}\n"));
        }
        // A bridge without an address of its own takes the lowest of its
        // ports' MACs: 99 new ports could change docker0's MAC under the
        // container's neighbour entry (and the endpoints' bridge MAC).
        // Setting it explicitly keeps it.
        // (`ip` in the host namespace: /sys under nsenter is the machine's.)
        let out = world
            .host()
            .exec_stdout(&["ip", "-br", "link", "show", "docker0"])?;
        let mac = out
            .split_whitespace()
            .nth(2)
            .filter(|m| m.len() == 17)
            .with_context(|| format!("no MAC address for docker0 in {out:?}"))?
            .to_owned();
        add.insert_str(0, &format!("link set docker0 address {mac}\n"));
        let this = Self { del };
        if let Err(e) = exec_with_input(world.host(), &["ip", "-batch", "-"], &add) {
            let _ = this.remove(world);
            return Err(e);
        }
        Ok(this)
    }

    fn remove(self, world: &World) -> Result<()> {
        // `-force`: go on past a namespace that is already gone.
        exec_with_input(world.host(), &["ip", "-force", "-batch", "-"], &self.del).map(|_| ())
    }
}
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Pinned links named `ebv*` (the bench's veths).
fn attached(loader: &LoaderProcess) -> usize {
    std::fs::read_dir(loader.pin_dir().join("links"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ebv"))
                .count()
        })
        .unwrap_or(0)
}

fn wait_attached(loader: &LoaderProcess, want: usize) -> Result<Instant> {
    let t0 = Instant::now();
    loop {
        if attached(loader) >= want {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            t0.elapsed() < ATTACH_TIMEOUT,
            "{} of {want} endpoints attached after {ATTACH_TIMEOUT:?}; log:\n{}",
            attached(loader),
            loader.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn attach_hundred(world: &mut World, plan: &Plan) -> Result<AttachHundred> {
    let tag = std::process::id() % 10_000;
    let ns: Vec<String> = (0..HUNDRED).map(|i| format!("eb{tag}n{i}")).collect();
    let mut add = String::new();
    for (i, n) in ns.iter().enumerate() {
        // The netns is created in the machine's namespace list but holds
        // nothing but the peer; the veth's host end is in the bench's host
        // namespace, a port of its docker0.
        add.push_str(&format!("netns add {n}\n"));
        add.push_str(&format!(
            "link add ebv{i} type veth peer name eth0 netns {n}\nlink set ebv{i} master docker0 up\n"
        ));
    }
    let mut del = String::new();
    for n in &ns {
        del.push_str(&format!("netns del {n}\n"));
    }
    let mut loader = world.start_loader(&["--no-docker"])?;
    loader.wait_ready(Duration::from_secs(15))?;
    let result = (|| -> Result<AttachHundred> {
        let t0 = Instant::now();
        exec_with_input(world.host(), &["ip", "-batch", "-"], &add)?;
        let created = Instant::now();
        let done = wait_attached(&loader, HUNDRED)?;
        let create_secs = (created - t0).as_secs_f64();
        let attach_total_secs = (done - t0).as_secs_f64();
        let attach_after_created_secs = done.saturating_duration_since(created).as_secs_f64();
        std::thread::sleep(plan.idle);
        let (idle_rss_kib, _) = rss_kib(loader.pid())?;
        println!(
            "   {HUNDRED} endpoints: created in {create_secs:.2} s, all attached {attach_total_secs:.2} s after the first ({attach_after_created_secs:.2} s after the last); idle VmRSS {idle_rss_kib} KiB"
        );
        // A loader that starts with the hundred present.
        loader.terminate(Duration::from_secs(10))?;
        let t0 = Instant::now();
        let mut second = world.start_loader(&["--no-docker"])?;
        let done = wait_attached(&second, HUNDRED)?;
        let startup_secs = (done - t0).as_secs_f64();
        std::thread::sleep(plan.idle);
        let (restarted_idle_rss_kib, _) = rss_kib(second.pid())?;
        println!(
            "   started with {HUNDRED} present: all attached {startup_secs:.2} s after the start; idle VmRSS {restarted_idle_rss_kib} KiB"
        );
        exec_with_input(world.host(), &["ip", "-batch", "-"], &del)?;
        let gone = egress_tests::wait_until(Duration::from_secs(10), || attached(&second) == 0);
        let c = second.cli_json("counters", &[])?;
        let left = c["endpoints"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|e| e["veth"].as_str().is_some_and(|v| v.starts_with("ebv")))
                .count()
        });
        anyhow::ensure!(gone, "endpoint links left after the veths went");
        second.terminate(Duration::from_secs(10))?;
        Ok(AttachHundred {
            endpoints: HUNDRED,
            create_secs,
            attach_after_created_secs,
            attach_total_secs,
            startup_secs,
            idle_rss_kib,
            restarted_idle_rss_kib,
            endpoints_after_removal: left,
        })
    })();
    if result.is_err() {
        let _ = exec_with_input(world.host(), &["ip", "-batch", "-"], &del);
    }
    result
}
