//! The paths added after the bridge program: host-network containers through
//! the cgroup hooks (CRR and UDP `sendto` from a process in a cgroup this
//! run created, in the bench's host namespace), the reject path's cost per
//! packet (the reply built in the kernel against a plain drop), the pass
//! path with and without the matched rule's `except_ports` in traffic, and
//! the time from `docker network create` to the new bridge attached.
//!
//! The cgroup hooks are attached only to the cgroup this run made (never to
//! the root cgroup), and they act only on sockets in the namespace whose
//! cookie the loader wrote: the bench's host namespace. The client process
//! is the bench binary itself re-executed (`--hostnet-client`), because a
//! cgroup holds processes, not threads of this one.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use egress_tests::{
    LoaderProcess, addrs,
    cgroups::TestCgroup,
    frames::{self, IPPROTO_UDP, SYN, V4},
    test_run::{Classifier, DROP, REDIRECT},
};
use serde::Serialize;

use crate::plan::{PRECISION, Plan, Repeat, part};
use crate::prog_cost::Noop;
use crate::setups::Setup;
use crate::stats::{Estimate, median, paired_ratios};
use crate::workloads::{self, Workload};
use crate::world::{CRR_PORT, SERVER, UDP_PORT, World};

const LOADER_READY: Duration = Duration::from_secs(20);

// ---- host network through the cgroup hooks ----

/// One repetition's figures for one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct HostnetSample {
    pub rep: u32,
    /// "no-filter", "empty-program" (UDP only: its CRR fields are NaN,
    /// null in the JSON) or "cgroup-hooks".
    pub setup: String,
    pub crr_per_sec: f64,
    /// CPU µs per connection (client process, servers, ksoftirqd).
    pub crr_cpu_us: f64,
    /// UDP datagrams per second sent in the socket's own turns of
    /// [`udp_turns`], one `sendto()` each.
    pub udp_pps: f64,
    /// CPU ns of the sending thread per datagram, over the same turns.
    pub udp_cpu_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hostnet {
    /// The cgroup the hooks are attached to (`--cgroup`).
    pub cgroup: String,
    /// Its sibling without them, where the no-filter runs go.
    pub baseline: String,
    pub run_secs: f64,
    pub repeat: Repeat,
    pub reps: u32,
    pub samples: Vec<HostnetSample>,
    /// Connections the hooks counted (cgroup/connect4 packets), to show the
    /// traffic went through them.
    pub hook_packets: u64,
}

/// The metrics of the host-network comparison, with their direction.
pub const HOSTNET_METRICS: [(&str, bool); 4] = [
    ("CRR rate", true),
    ("CPU per connection", false),
    ("UDP sendto rate", true),
    ("CPU per UDP datagram", false),
];

impl Hostnet {
    fn values(&self, setup: &str, i: usize) -> Vec<(u32, f64)> {
        self.samples
            .iter()
            .filter(|s| s.setup == setup)
            .map(|s| {
                let v = [s.crr_per_sec, s.crr_cpu_us, s.udp_pps, s.udp_cpu_ns][i];
                (s.rep, v)
            })
            .collect()
    }

    /// The hooks' ratio to no filter on metric `i` of [`HOSTNET_METRICS`].
    pub fn ratio(&self, i: usize) -> Option<Estimate> {
        self.ratio_of(CGROUP_HOOKS, i)
    }

    /// The empty program's ratio to no filter, on the UDP metrics (2, 3):
    /// the kernel's hook before any work of a program.
    pub fn floor(&self, i: usize) -> Option<Estimate> {
        self.ratio_of(EMPTY_PROGRAM, i)
    }

    /// The hooks' ratio to the empty program on the UDP metrics (2, 3):
    /// what the program's own work costs, the kernel's hook set aside.
    pub fn over_floor(&self, i: usize) -> Option<Estimate> {
        let r = paired_ratios(
            &self.values(EMPTY_PROGRAM, i),
            &self.values(CGROUP_HOOKS, i),
            HOSTNET_METRICS[i].1,
        );
        Estimate::of(&r)
    }

    fn ratio_of(&self, setup: &str, i: usize) -> Option<Estimate> {
        let r = paired_ratios(
            &self.values(NO_FILTER, i),
            &self.values(setup, i),
            HOSTNET_METRICS[i].1,
        );
        Estimate::of(&r)
    }

    /// The median over repetitions of `setup`'s CPU ns per UDP datagram
    /// minus `base`'s in the same repetition: what `setup` adds to each
    /// datagram.
    pub fn added_udp_ns(&self, base: &str, setup: &str) -> Option<Estimate> {
        let base = self.values(base, 3);
        let d: Vec<f64> = self
            .values(setup, 3)
            .iter()
            .filter_map(|&(rep, v)| {
                let &(_, b) = base.iter().find(|(r, _)| *r == rep)?;
                (v - b).is_finite().then_some(v - b)
            })
            .collect();
        Estimate::of(&d)
    }

    pub fn median(&self, setup: &str, i: usize) -> f64 {
        let v: Vec<f64> = self.values(setup, i).iter().map(|x| x.1).collect();
        median(&v)
    }

    pub fn precise(&self) -> bool {
        self.reps >= 2
            && (0..HOSTNET_METRICS.len())
                .all(|i| self.ratio(i).is_some_and(|e| e.within(PRECISION)))
    }
}

/// What the client process prints: operations done, failed, seconds, its
/// own CPU time (user + system, softirq work in its context included).
#[derive(Debug, serde::Deserialize, Serialize)]
pub struct ClientResult {
    pub done: u64,
    pub failed: u64,
    pub secs: f64,
    pub cpu_ns: u64,
}

/// `egress-bench --hostnet-client crr CGROUP_DIR MILLIS`: joins the
/// cgroup, runs the client side against the cloud server, prints one JSON
/// line. Run by [`hostnet`] in the bench's host namespace.
pub fn client_main(args: &[String]) -> Result<()> {
    if let [op, millis, cgroups @ ..] = args
        && op == "udp-turns"
    {
        let run = Duration::from_millis(millis.parse().context("MILLIS")?);
        let cgroups: Vec<&str> = cgroups.iter().map(String::as_str).collect();
        let results = udp_turns(&cgroups, run)?;
        println!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    let [op, cgroup, millis] = args else {
        bail!(
            "usage: --hostnet-client crr CGROUP_DIR MILLIS, \
             or --hostnet-client udp-turns MILLIS CGROUP_DIR..."
        );
    };
    let run = Duration::from_millis(millis.parse().context("MILLIS")?);
    join_cgroup(cgroup)?;
    let (done, failed, secs) = match op.as_str() {
        "crr" => crr_client(run),
        other => bail!("unknown client {other:?}"),
    };
    let r = ClientResult {
        done,
        failed,
        secs,
        cpu_ns: process_cpu_ns(),
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// Moves this process into the cgroup at directory `cg`.
fn join_cgroup(cg: &str) -> Result<()> {
    std::fs::write(format!("{cg}/cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining {cg}"))
}

fn process_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn thread_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Two threads, each: connect, 1 byte, 1 byte back, close, timed from when
/// both are ready (workloads::crr_clients). The process's CPU time is read
/// at its end, so the threads report none of their own.
fn crr_client(run: Duration) -> (u64, u64, f64) {
    let sa = SocketAddr::new(SERVER, CRR_PORT);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let (_, secs) = workloads::crr_clients(sa, run, &done, &failed, one_connection, || 0);
    (done.into_inner(), failed.into_inner(), secs)
}

fn one_connection(sa: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&sa, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut b = [1u8; 1];
    s.write_all(&b)?;
    s.read_exact(&mut b)
}

/// Datagrams a socket sends in one turn of [`udp_turns`]: a few ms of
/// work, so that the turns are many and the clock reads few.
pub const TURN: u64 = 2048;
/// Rounds between fresh sockets, so that no one socket's placement (its
/// slab object, its cache lines) weighs on a whole run. Two sockets in the
/// same cgroup still differed by up to ±5% in single runs, with or without
/// it; the medians over repetitions are what the report uses.
pub const TURNS_PER_SOCKET: u32 = 8;

/// The host-network UDP comparison in one process, on one CPU, turn by
/// turn: one socket per cgroup of `cgroups`, each made while the process
/// was in that cgroup. The hooks judge a packet by its socket's cgroup
/// (`__cgroup_bpf_run_filter_skb` takes `sock_cgroup_ptr(&sk->sk_cgrp_data)`,
/// set when the socket is made), so the sockets differ in the programs on
/// their cgroups alone. Turns of [`TURN`] datagrams go round the sockets,
/// the first cgroup of the round rotating, until `run` has passed and
/// every socket has had as many turns: the machine's drift, which spread
/// runs 1.5 s apart by up to ±20%, falls on all of them alike. Each
/// result's `secs` and `cpu_ns` (this thread's CPU time, softirq work in
/// its context included) are sums over its turns.
fn udp_turns(cgroups: &[&str], run: Duration) -> Result<Vec<ClientResult>> {
    workloads::pin_to(workloads::CLIENT_CPU);
    let sockets = || -> Result<Vec<UdpSocket>> {
        cgroups
            .iter()
            .map(|cg| {
                join_cgroup(cg)?;
                // A send buffer no turn fills: a socket that waits for the
                // sink to free its datagrams would time the sink.
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP socket")?;
                workloads::set_sndbuf(&s, 32 << 20);
                Ok(s)
            })
            .collect()
    };
    let sa = SocketAddr::new(SERVER, UDP_PORT);
    let payload = [0x42u8; 18];
    let n = cgroups.len();
    // Per cgroup: done, failed, ns of wall clock, ns of CPU.
    let mut acc = vec![[0u64; 4]; n];
    let deadline = Instant::now() + run;
    let mut round = 0u32;
    let mut socks = Vec::new();
    while Instant::now() < deadline {
        if round.is_multiple_of(TURNS_PER_SOCKET) {
            socks = sockets()?;
        }
        for k in 0..n {
            let i = (k + round as usize) % n;
            let (t0, c0) = (Instant::now(), thread_cpu_ns());
            let (mut sent, mut failed) = (0u64, 0u64);
            while sent < TURN && failed < 10 * TURN {
                match socks[i].send_to(&payload, sa) {
                    Ok(_) => sent += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => failed += 1,
                    Err(e) => return Err(e).context("sendto"),
                }
            }
            let a = &mut acc[i];
            a[0] += sent;
            a[1] += failed;
            a[2] += t0.elapsed().as_nanos() as u64;
            a[3] += thread_cpu_ns() - c0;
        }
        round += 1;
    }
    Ok(acc
        .into_iter()
        .map(|a| ClientResult {
            done: a[0],
            failed: a[1],
            secs: a[2] as f64 / 1e9,
            cpu_ns: a[3],
        })
        .collect())
}

/// Runs `egress-bench --hostnet-client ARGS...` in the bench's host
/// namespace and parses the one JSON line it prints.
fn run_client<T: serde::de::DeserializeOwned>(
    world: &World,
    args: &[&std::ffi::OsStr],
) -> Result<T> {
    let exe = std::env::current_exe()?;
    let out = world
        .host()
        .command(&exe)
        .arg("--hostnet-client")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the host-network client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "host-network client {args:?} failed ({}): {}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).with_context(|| format!("client output: {text}"))
}

/// One CRR run from `cg`: connections/s and CPU µs per connection.
fn crr_once(world: &World, cg: &std::path::Path, run: Duration) -> Result<[f64; 2]> {
    // The servers in the cloud namespace, the client in the cgroup.
    let servers = workloads::crr_servers(world)?;
    let k0 = workloads::ksoftirqd_ns();
    let millis = run.as_millis().to_string();
    let c: Result<ClientResult> =
        run_client(world, &["crr".as_ref(), cg.as_os_str(), millis.as_ref()]);
    let server_cpu = servers.stop();
    let c = c?;
    if c.failed * 100 > c.done.max(1) {
        bail!(
            "host-network CRR: {} of {} connections failed",
            c.failed,
            c.done + c.failed
        );
    }
    let cpu = c.cpu_ns + server_cpu + (workloads::ksoftirqd_ns() - k0);
    Ok([
        c.done as f64 / c.secs,
        cpu as f64 / 1000.0 / c.done.max(1) as f64,
    ])
}

/// One UDP run of [`udp_turns`] over `cgroups`: per cgroup, datagrams/s
/// sent in its turns and CPU ns per datagram. The busy-polling sink in the
/// cloud counts what arrives, to show the datagrams got there.
fn udp_once(world: &World, cgroups: &[&std::path::Path], run: Duration) -> Result<Vec<[f64; 2]>> {
    let sink = workloads::UdpSink::start(world)?;
    let millis = run.as_millis().to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec!["udp-turns".as_ref(), millis.as_ref()];
    args.extend(cgroups.iter().map(|c| c.as_os_str()));
    let results: Result<Vec<ClientResult>> = run_client(world, &args);
    let got = sink.stop();
    let results = results?;
    let sent: u64 = results.iter().map(|r| r.done).sum();
    if got * 2 < sent {
        bail!("host-network UDP: only {got} of {sent} datagrams arrived");
    }
    Ok(results
        .iter()
        .map(|r| {
            [
                r.done as f64 / r.secs,
                r.cpu_ns as f64 / r.done.max(1) as f64,
            ]
        })
        .collect())
}

pub(crate) const NO_FILTER: &str = "no-filter";
pub(crate) const EMPTY_PROGRAM: &str = "empty-program";
pub(crate) const CGROUP_HOOKS: &str = "cgroup-hooks";

/// The empty `cgroup_skb/egress` program of the object, attached to one
/// of the bench's cgroups until dropped.
struct CgroupNoop {
    _ebpf: aya::Ebpf,
    _mount: egress_tests::BpffsMount,
}

impl CgroupNoop {
    fn attach(cgroup: &std::path::Path) -> Result<Self> {
        use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
        let name = egress_ebpf_common::maps::CGROUP_NOOP_PROGRAM;
        let (mut ebpf, mount) = crate::prog_cost::object()?;
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the object"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        let dir =
            std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        prog.attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
        Ok(Self {
            _ebpf: ebpf,
            _mount: mount,
        })
    }
}

/// The hooks' counters: packets counted on cgroup/connect4.
fn connect4_packets(loader: &LoaderProcess) -> u64 {
    let Ok(v) = loader.cli_json("counters", &[]) else {
        return 0;
    };
    v["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["hook"] == "cgroup/connect4")
        .flat_map(|h| h["counters"].as_array().into_iter().flatten())
        .filter_map(|c| c["packets"].as_u64())
        .sum()
}

fn cgroup_attached(status: &serde_json::Value, cgroup: &str) -> bool {
    status["coverage"]["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            // Every hook live (connect4/6, cgroup_skb).
            format!("/{}", c["cgroup"].as_str().unwrap_or_default()) == cgroup
                && c["live"]
                    .as_array()
                    .is_some_and(|l| l.len() == egress_ebpf_common::maps::CGROUP_PROGRAMS.len())
                && c["stale"].as_array().is_some_and(Vec::is_empty)
        })
}

pub fn hostnet(world: &mut World, plan: &Plan) -> Result<Hostnet> {
    let h = world.host();
    // Short connections from one address, as in the container (world.rs).
    h.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    h.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    // Each repetition opens ~80,000 connections from one address: without
    // a bound, the TIME_WAIT sockets of the last minute fill the host's and
    // the cloud's connection tables, and CRR fell from 13,700 to 3,100
    // connections/s over five repetitions, with and without the filter
    // alike. Past the bound a closing socket skips TIME_WAIT (a namespace's
    // own setting; both of these are the bench's).
    for ns in [h, world.cloud()] {
        ns.sysctl("net.ipv4.tcp_max_tw_buckets", "4096")?;
    }
    // The hooks on `app`; no filter is the same client in `plain`, a
    // sibling the hooks are not attached to, with the loader running all
    // along. No loader starts between the two halves of a CRR pair, so
    // they lie 1.5 s apart: with a loader start per pair (and runs of 3 s)
    // the machine's drift between them was most of the spread. What `plain`
    // still pays is the kernel's check that its cgroup has no program
    // (the hooks' static key is on), as on any host where some cgroup has
    // a BPF program.
    //
    // UDP runs once per repetition for the three of them, turn by turn in
    // one process (udp_turns): no filter, `empty` with an empty
    // cgroup_skb/egress program (what the kernel's hook costs before any
    // work of a program), and the hooks.
    let tree = TestCgroup::new("bench")?;
    tree.mkdir("app")?;
    tree.mkdir("plain")?;
    tree.mkdir("empty")?;
    let app = tree.dir("app");
    let plain = tree.dir("plain");
    let empty = tree.dir("empty");
    let _noop = CgroupNoop::attach(&empty)?;
    let target = tree.arg("app");
    let run = plan.run_main / 2;
    let mut out = Hostnet {
        cgroup: target.clone(),
        baseline: tree.arg("plain"),
        run_secs: run.as_secs_f64(),
        repeat: plan.hostnet,
        reps: 0,
        samples: Vec::new(),
        hook_packets: 0,
    };
    let mut loader = world.start_loader(&[
        "--no-docker",
        "--events-socket",
        "none",
        "--cgroup",
        &target,
    ])?;
    loader
        .wait_ready_until(LOADER_READY, |v| cgroup_attached(v, &target))
        .with_context(|| format!("the cgroup hooks on {target}"))?;
    let started = Instant::now();
    let mut precise = false;
    let result = (|| -> Result<()> {
        while plan.hostnet.another(out.reps, started.elapsed(), precise) {
            let rep = out.reps;
            let order: &[bool] = if rep.is_multiple_of(2) {
                &[false, true]
            } else {
                &[true, false]
            };
            let mut crr = [[f64::NAN; 2]; 2];
            for &hooks in order {
                crr[usize::from(hooks)] = crr_once(world, if hooks { &app } else { &plain }, run)?;
            }
            let udp = udp_once(world, &[&plain, &empty, &app], run)?;
            for (k, setup) in [NO_FILTER, EMPTY_PROGRAM, CGROUP_HOOKS]
                .into_iter()
                .enumerate()
            {
                // The empty program is measured on UDP alone.
                let c = match k {
                    0 => crr[0],
                    2 => crr[1],
                    _ => [f64::NAN; 2],
                };
                let u = udp[k];
                println!(
                    "   rep {} {setup:<13} crr/s={:.0} cpu_us/conn={:.1} udp_sendto/s={:.0} cpu_ns/pkt={:.0}",
                    rep + 1,
                    c[0],
                    c[1],
                    u[0],
                    u[1]
                );
                out.samples.push(HostnetSample {
                    rep,
                    setup: setup.into(),
                    crr_per_sec: c[0],
                    crr_cpu_us: c[1],
                    udp_pps: u[0],
                    udp_cpu_ns: u[1],
                });
            }
            out.reps += 1;
            precise = out.precise();
        }
        Ok(())
    })();
    out.hook_packets = connect4_packets(&loader);
    loader.terminate(Duration::from_secs(10))?;
    result?;
    Ok(out)
}

// ---- the reject path ----

/// BPF_PROG_TEST_RUN, one run per call (a reject rewrites the frame into
/// its reply, and test_run's repeats share one buffer: from the second
/// repeat on it would judge its own reply).
#[derive(Debug, Clone, Serialize)]
pub struct RejectCost {
    pub frame: String,
    /// Verdict names of the rejecting and the dropping policy.
    pub reject_verdict: String,
    pub drop_verdict: String,
    /// Median ns per call: the same frame rejected (reply built, tail call,
    /// redirect) and dropped (the metadata rule's action set to drop).
    pub reject_ns: f64,
    pub drop_ns: f64,
    /// The empty classifier timed the same way.
    pub noop_ns: f64,
    /// `reject - drop`: what answering costs per rejected packet.
    pub reply_ns: f64,
}

/// The defaults with a reply budget test_run cannot exhaust (the default
/// budget, 100/s with a burst of 1000, would turn most calls into silent
/// drops).
const REJECT_POLICY: &str = "[reject]\nrate = \"1000000/second\"\nburst = 1000000\n";
const DROP_POLICY: &str = "[[unblock]]\nname = \"metadata\"\n\n\
    [[block]]\ncidr = \"169.254.169.254/32\"\naction = \"drop\"\n";

fn verdict(v: u32) -> String {
    match v {
        REDIRECT => "REDIRECT (reply sent)".into(),
        DROP => "DROP".into(),
        egress_tests::test_run::PASS => "PASS".into(),
        o => o.to_string(),
    }
}

pub fn reject_cost(plan: &Plan) -> Result<Vec<RejectCost>> {
    let mut noop = Noop::load()?;
    let mut rej = Classifier::with_policy(REJECT_POLICY);
    let mut drp = Classifier::with_policy(DROP_POLICY);
    let imds = addrs::IMDS_V4;
    let frames = vec![
        (
            "TCP SYN to 169.254.169.254:80 → TCP RST",
            frames::to_this_host(frames::v4_tcp(imds.octets(), 80, SYN)),
        ),
        (
            "UDP to 169.254.169.254:123 → ICMP port unreachable",
            frames::to_this_host(frames::v4_frame(
                &V4::new(imds, IPPROTO_UDP),
                &frames::udp(40000, 123, &[0; 18]),
            )),
        ),
        (
            "IPv6 TCP SYN to [fd00:ec2::254]:80 → TCP RST",
            frames::to_this_host(frames::v6_tcp("fd00:ec2::254", 80, SYN)),
        ),
    ];
    let mut out = Vec::new();
    for (name, frame) in frames {
        let (mut r, mut d, mut z) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rv, mut dv) = (0, 0);
        for _ in 0..plan.test_run_rounds {
            let (mut rr, mut dd, mut zz) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..plan.single_calls {
                let (v, ns) = rej.run_repeat(&frame, 1);
                rv = v;
                rr.push(ns as f64);
                let (v, ns) = drp.run_repeat(&frame, 1);
                dv = v;
                dd.push(ns as f64);
                zz.push(noop.run(&frame, 1)? as f64);
            }
            r.push(median(&rr));
            d.push(median(&dd));
            z.push(median(&zz));
        }
        anyhow::ensure!(
            rv == REDIRECT,
            "{name}: the rejecting policy gave {} (no reply built)",
            verdict(rv)
        );
        anyhow::ensure!(
            dv == DROP,
            "{name}: the dropping policy gave {}",
            verdict(dv)
        );
        let (r, d, z) = (median(&r), median(&d), median(&z));
        let c = RejectCost {
            frame: name.into(),
            reject_verdict: verdict(rv),
            drop_verdict: verdict(dv),
            reject_ns: r,
            drop_ns: d,
            noop_ns: z,
            reply_ns: r - d,
        };
        println!(
            "   {}: rejected {:.0} ns, dropped {:.0} ns, empty {:.0} ns (one run a call): the reply costs {:.0} ns",
            c.frame, r, d, z, c.reply_ns
        );
        out.push(c);
    }
    Ok(out)
}

// ---- the pass path with and without except_ports, in traffic ----

#[derive(Debug, Clone, Serialize)]
pub struct ExceptionsTraffic {
    pub workload: Workload,
    pub reps: u32,
    /// Median ns per run of the bridge program (`--no-endpoints`), run-time
    /// stats, at the defaults (the metadata rule with its DNS exception)
    /// and with the same rules without `except_ports`; interleaved.
    pub with_ns: f64,
    pub without_ns: f64,
    pub with_runs: Vec<f64>,
    pub without_runs: Vec<f64>,
}

impl ExceptionsTraffic {
    /// with ÷ without, paired by repetition (lower-is-better times, so
    /// a value above 1 means the exception check costs).
    pub fn ratio(&self) -> Option<Estimate> {
        let r: Vec<f64> = self
            .with_runs
            .iter()
            .zip(&self.without_runs)
            .map(|(a, b)| a / b)
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        Estimate::of(&r)
    }
}

fn prog_stats(id: u32) -> Result<(u64, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time().as_nanos() as u64, info.run_count()));
        }
    }
    bail!("program {id} not found among the loaded programs")
}

pub fn exceptions_traffic(world: &mut World, plan: &Plan) -> Result<Vec<ExceptionsTraffic>> {
    let workloads = [Workload::Udp, Workload::Crr];
    let reps = plan.exception_reps;
    // (with, without) per workload, one value per repetition.
    let mut runs: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    // The workloads that share one activation (Plan::share_activation).
    let groups = plan.activation_groups(&workloads);
    for group in &groups {
        for rep in 0..reps {
            let order = if rep.is_multiple_of(2) {
                [false, true]
            } else {
                [true, false]
            };
            for no_exc in order {
                let setup = if no_exc {
                    Setup::FilterNoExceptions
                } else {
                    Setup::FilterBridgeOnly(0)
                };
                let a = setup.activate(world)?;
                let id = a.program_id().context("no program id")?;
                let mut measured = Vec::new();
                for &(i, wl) in group {
                    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                        .context("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)")?;
                    let (t0, c0) = prog_stats(id)?;
                    let r = wl.run(world, plan.run_main, plan.iperf_secs);
                    let (t1, c1) = prog_stats(id)?;
                    drop(fd);
                    measured.push((i, r.map(|_| (t1 - t0) as f64 / (c1 - c0).max(1) as f64)));
                }
                a.deactivate(world)?;
                for (i, ns) in measured {
                    let (with, without) = &mut runs[i];
                    let v = if no_exc { without } else { with };
                    v.push(ns?);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (wl, (with, without)) in workloads.into_iter().zip(runs) {
        let e = ExceptionsTraffic {
            workload: wl,
            reps,
            with_ns: median(&with),
            without_ns: median(&without),
            with_runs: with,
            without_runs: without,
        };
        println!(
            "   {wl:?}: bridge program {:.1} ns/run with the DNS exception, {:.1} without except_ports",
            e.with_ns, e.without_ns
        );
        out.push(e);
    }
    Ok(out)
}

// ---- docker network create -> attached ----

#[derive(Debug, Clone, Serialize)]
pub struct NetworkCreate {
    /// `docker network create` itself, seconds, per network.
    pub create_secs: Vec<f64>,
    /// From the command's start to the bridge's TCX ingress holding the
    /// program, seconds, per network.
    pub attached_secs: Vec<f64>,
    /// Attached after the command returned, seconds, per network.
    pub after_return_secs: Vec<f64>,
}

/// `None` with the reason when no Docker engine can be started here.
pub fn network_create(
    world: &mut World,
    plan: &Plan,
) -> Result<std::result::Result<NetworkCreate, String>> {
    use egress_tests::docker::{DockerHost, docker_problem};
    if let Some(reason) = docker_problem() {
        return Ok(Err(reason));
    }
    let dh = match DockerHost::start("bnet") {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("the test engine did not start: {e:#}"))),
    };
    let pin_dir = world.new_pin_dir()?;
    let url = dh.docker_host();
    let mut loader = LoaderProcess::run_in_ns(
        dh.host(),
        &pin_dir,
        &[
            "--iface",
            "docker0",
            "--rescan",
            "30",
            "--docker-host",
            &url,
            "--events-socket",
            "none",
            "--detach-on-exit",
        ],
    )?;
    loader.wait_ready(LOADER_READY)?;
    anyhow::ensure!(
        egress_tests::wait_until(LOADER_READY, || loader
            .log()
            .contains("following its networks")),
        "the loader does not follow the engine's networks: {}",
        loader.log()
    );
    let n = plan.networks;
    let mut r = NetworkCreate {
        create_secs: Vec::new(),
        attached_secs: Vec::new(),
        after_return_secs: Vec::new(),
    };
    for i in 0..n {
        let name = format!("bnet{i}");
        let bridge = format!("bnetbr{i}");
        let opt = format!("com.docker.network.bridge.name={bridge}");
        let subnet = format!("172.29.{i}.0/24");
        let t0 = Instant::now();
        dh.docker(&[
            "network",
            "create",
            "-o",
            opt.as_str(),
            "--subnet",
            subnet.as_str(),
            name.as_str(),
        ])?;
        let created = t0.elapsed();
        let ok = egress_tests::wait_until(Duration::from_secs(10), || {
            tcx_ingress(dh.host(), &bridge) >= 1
        });
        let attached = t0.elapsed();
        anyhow::ensure!(ok, "{bridge} not attached within 10 s: {}", loader.log());
        println!(
            "   docker network create {name}: {} ms; attached {} ms after the command started",
            created.as_millis(),
            attached.as_millis()
        );
        r.create_secs.push(created.as_secs_f64());
        r.attached_secs.push(attached.as_secs_f64());
        r.after_return_secs
            .push(attached.saturating_sub(created).as_secs_f64());
        dh.docker(&["network", "rm", name.as_str()])?;
    }
    loader.terminate(Duration::from_secs(10))?;
    Ok(Ok(r))
}

/// Programs on `iface`'s TCX ingress inside `ns`.
fn tcx_ingress(ns: &egress_tests::NetNs, iface: &str) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    let name = iface.to_owned();
    ns.run_in(move || SchedClassifier::query_tcx(&name, TcAttachType::Ingress))
        .ok()
        .and_then(Result::ok)
        .map(|(_, p)| p.len())
        .unwrap_or(0)
}

// ---- the section ----

#[derive(Debug, Clone, Serialize)]
pub struct Paths {
    pub hostnet: std::result::Result<Hostnet, String>,
    pub reject: Vec<RejectCost>,
    pub exceptions: Vec<ExceptionsTraffic>,
    /// `Err(reason)` when the section could not run (no Docker engine).
    pub network_create: std::result::Result<NetworkCreate, String>,
    /// The tunnel program on a VXLAN device's ingress (crate::tunnels).
    pub vxlan: std::result::Result<crate::tunnels::Vxlan, String>,
}

pub fn measure(world: &mut World, plan: &Plan, warnings: &mut Vec<String>) -> Result<Paths> {
    println!("   -- reject path (BPF_PROG_TEST_RUN, one run a call)");
    let reject = part("paths/reject", || reject_cost(plan))?;
    println!("   -- pass path with and without except_ports, in traffic");
    let exceptions = part("paths/except-ports", || exceptions_traffic(world, plan))?;
    println!("   -- host network through the cgroup hooks");
    let hostnet = part("paths/hostnet", || hostnet(world, plan)).map_err(|e| {
        let w = format!("host-network section not run: {e:#}");
        println!("   {w}");
        warnings.push(w.clone());
        w
    });
    println!("   -- docker network create to attached");
    let network_create = part("paths/network-create", || network_create(world, plan))?;
    if let Err(reason) = &network_create {
        let w = format!("`docker network create` to attached: skipped: {reason}");
        println!("   {w}");
        warnings.push(w);
    }
    println!("   -- the tunnel program on a VXLAN device's ingress");
    let vxlan = part("paths/vxlan", || crate::tunnels::vxlan(world, plan)).map_err(|e| {
        let w = format!("VXLAN section not run: {e:#}");
        println!("   {w}");
        warnings.push(w.clone());
        w
    });
    Ok(Paths {
        hostnet,
        reject,
        exceptions,
        network_create,
        vxlan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rep: u32, setup: &str, pps: f64, ns: f64) -> HostnetSample {
        HostnetSample {
            rep,
            setup: setup.into(),
            crr_per_sec: f64::NAN,
            crr_cpu_us: f64::NAN,
            udp_pps: pps,
            udp_cpu_ns: ns,
        }
    }

    /// Three repetitions, each a no-filter / empty / hooks triple whose
    /// absolute level drifts from one repetition to the next; written out
    /// of order, so that a pairing by position instead of by repetition
    /// would give other figures.
    fn drifting() -> Hostnet {
        let mut samples = Vec::new();
        for (rep, level) in [(2u32, 1.2), (0, 1.0), (1, 0.8)] {
            samples.push(sample(
                rep,
                CGROUP_HOOKS,
                1e9 / (1360.0 * level),
                1360.0 * level,
            ));
            samples.push(sample(
                rep,
                NO_FILTER,
                1e9 / (1300.0 * level),
                1300.0 * level,
            ));
            samples.push(sample(
                rep,
                EMPTY_PROGRAM,
                1e9 / (1340.0 * level),
                1340.0 * level,
            ));
        }
        Hostnet {
            cgroup: "/t/app".into(),
            baseline: "/t/plain".into(),
            run_secs: 1.5,
            repeat: Repeat::fixed(3),
            reps: 3,
            samples,
            hook_packets: 0,
        }
    }

    #[test]
    fn the_program_is_measured_against_the_empty_one_within_each_repetition() {
        let h = drifting();
        // CPU: empty ÷ hooks, the same in every repetition.
        let cpu = h.over_floor(3).unwrap();
        assert!((cpu.median - 1340.0 / 1360.0).abs() < 1e-9, "{cpu:?}");
        assert!((cpu.lo - cpu.median).abs() < 1e-9 && (cpu.hi - cpu.median).abs() < 1e-9);
        // Rate: hooks ÷ empty, the same figure seen from the other side.
        let rate = h.over_floor(2).unwrap();
        assert!((rate.median - 1340.0 / 1360.0).abs() < 1e-9, "{rate:?}");
        // The differences follow each repetition's level: 40, 32, 48 ns
        // for the hook, 20, 16, 24 ns for the work; their medians.
        let hook = h.added_udp_ns(NO_FILTER, EMPTY_PROGRAM).unwrap();
        assert!((hook.median - 40.0).abs() < 1e-9, "{hook:?}");
        assert_eq!((hook.min, hook.max, hook.n), (32.0, 48.0, 3));
        let work = h.added_udp_ns(EMPTY_PROGRAM, CGROUP_HOOKS).unwrap();
        assert!((work.median - 20.0).abs() < 1e-9, "{work:?}");
    }

    #[test]
    fn a_repetition_missing_a_setup_is_left_out() {
        let mut h = drifting();
        h.samples
            .retain(|s| !(s.rep == 1 && s.setup == EMPTY_PROGRAM));
        assert_eq!(h.added_udp_ns(NO_FILTER, EMPTY_PROGRAM).unwrap().n, 2);
        assert_eq!(h.over_floor(3).unwrap().n, 2);
        h.samples.retain(|s| s.setup != EMPTY_PROGRAM);
        assert!(h.added_udp_ns(NO_FILTER, EMPTY_PROGRAM).is_none());
        assert!(h.over_floor(2).is_none());
    }
}
