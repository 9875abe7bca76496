//! The four workloads, from the container namespace to the cloud namespace:
//! bulk TCP (iperf3), new connections per second (TCP_CRR-like), one-byte
//! request/response latency (TCP_RR-like) and the 64-byte UDP packet rate.
//!
//! Clients are pinned to CPU 0 and servers to CPU 1: on a veth path the
//! sender's CPU also runs the whole forwarding path in softirq (bridge, tc
//! ingress where the filter sits, netfilter FORWARD where iptables sits,
//! routing), so that is where any per-packet cost shows up. Every loop ends
//! at a deadline and at a count cap, and talks only to the cloud namespace.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use egress_tests::Workers;
use serde::Serialize;

use crate::world::{self, CRR_PORT, IPERF_PORT, RR_PORT, SERVER, UDP_PORT, World};

/// What a workload reports. Rates are "higher is better"; latencies and
/// CPU costs "lower is better".
///
/// The CPU costs count every thread of the workload (clients, servers,
/// sink) plus the ksoftirqd threads, from the scheduler's own per-thread
/// clocks: on this path the forwarding work runs in softirq in the context
/// of the thread that sent the packet (or in ksoftirqd), and without
/// IRQ-time accounting the kernel charges it to that thread. Unlike the
/// rates, these do not move when other processes compete for the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 64-byte UDP datagrams per second received in the cloud namespace.
    UdpPps,
    /// Short TCP connections (connect, 1-byte request, 1-byte reply, close) per second.
    CrrPerSec,
    /// Request/response round trips per second on one connection.
    RrPerSec,
    /// Median round-trip time, microseconds.
    RrP50Us,
    /// 99th-percentile round-trip time, microseconds.
    RrP99Us,
    /// iperf3 bulk TCP, one stream, Gbit/s received.
    TcpGbps,
    /// CPU time per UDP datagram received, ns.
    UdpCpuNs,
    /// CPU time per short connection, µs.
    CrrCpuUs,
    /// CPU time per request/response transaction, µs.
    RrCpuUs,
    /// CPU time (iperf3's client + server, ksoftirqd) per GB received, ms.
    TcpCpuMsPerGb,
}

impl Metric {
    pub const MAIN: [Metric; 10] = [
        Metric::TcpGbps,
        Metric::CrrPerSec,
        Metric::RrPerSec,
        Metric::RrP50Us,
        Metric::RrP99Us,
        Metric::UdpPps,
        Metric::TcpCpuMsPerGb,
        Metric::CrrCpuUs,
        Metric::RrCpuUs,
        Metric::UdpCpuNs,
    ];

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::UdpPps | Metric::CrrPerSec | Metric::RrPerSec | Metric::TcpGbps
        )
    }

    /// A CPU cost rather than a rate or a latency.
    pub fn is_cpu_cost(self) -> bool {
        matches!(
            self,
            Metric::UdpCpuNs | Metric::CrrCpuUs | Metric::RrCpuUs | Metric::TcpCpuMsPerGb
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Metric::UdpPps => "64-byte UDP packet rate",
            Metric::CrrPerSec => "new TCP connections (CRR)",
            Metric::RrPerSec => "request/response rate (RR)",
            Metric::RrP50Us => "RR latency p50",
            Metric::RrP99Us => "RR latency p99",
            Metric::TcpGbps => "bulk TCP (iperf3, 1 stream)",
            Metric::UdpCpuNs => "CPU per 64-byte UDP packet",
            Metric::CrrCpuUs => "CPU per new TCP connection",
            Metric::RrCpuUs => "CPU per RR transaction",
            Metric::TcpCpuMsPerGb => "CPU per GB of bulk TCP",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::UdpPps => "packets/s",
            Metric::CrrPerSec => "connections/s",
            Metric::RrPerSec => "transactions/s",
            Metric::RrP50Us | Metric::RrP99Us | Metric::CrrCpuUs | Metric::RrCpuUs => "µs",
            Metric::TcpGbps => "Gbit/s",
            Metric::UdpCpuNs => "ns",
            Metric::TcpCpuMsPerGb => "ms",
        }
    }
}

/// Which traffic to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Udp,
    Crr,
    Rr,
    Iperf,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Workload::Udp, Workload::Crr, Workload::Rr, Workload::Iperf];

    /// Runs the workload for about `run` (iperf3: `iperf_secs`).
    pub fn run(self, w: &World, run: Duration, iperf_secs: u32) -> Result<Vec<(Metric, f64)>> {
        match self {
            Workload::Udp => {
                let (pps, cpu_ns) = udp_rate(w, run)?;
                Ok(vec![(Metric::UdpPps, pps), (Metric::UdpCpuNs, cpu_ns)])
            }
            Workload::Crr => {
                let (per_sec, cpu_us) = crr(w, run)?;
                Ok(vec![
                    (Metric::CrrPerSec, per_sec),
                    (Metric::CrrCpuUs, cpu_us),
                ])
            }
            Workload::Rr => {
                let r = rr(w, run)?;
                Ok(vec![
                    (Metric::RrPerSec, r.per_sec),
                    (Metric::RrP50Us, r.p50_us),
                    (Metric::RrP99Us, r.p99_us),
                    (Metric::RrCpuUs, r.cpu_us),
                ])
            }
            Workload::Iperf => {
                let (gbps, cpu_ms) = iperf(w, iperf_secs)?;
                Ok(vec![
                    (Metric::TcpGbps, gbps),
                    (Metric::TcpCpuMsPerGb, cpu_ms),
                ])
            }
        }
    }
}

/// CPU time the calling thread has run, ns (the scheduler's clock; on this
/// kernel it includes softirq work done in the thread's context).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The ksoftirqd threads, found once by name.
fn ksoftirqd_pids() -> &'static [u32] {
    static PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    PIDS.get_or_init(|| {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                comm.starts_with("ksoftirqd/").then_some(pid)
            })
            .collect()
    })
}

/// Total run time of the ksoftirqd threads, ns (/proc/PID/schedstat).
pub(crate) fn ksoftirqd_ns() -> u64 {
    ksoftirqd_pids()
        .iter()
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

pub(crate) const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;
/// UDP payload for a 64-byte frame on the wire: 14 Ethernet + 20 IPv4 +
/// 8 UDP + 18 payload + 4 FCS.
const UDP_PAYLOAD: usize = 18;
const UDP_BATCH: usize = 64;
/// Count caps, far above what this path can do in a run, so a loop ends at
/// its deadline in practice and at the cap in any case.
const MAX_UDP_PACKETS: u64 = 200_000_000;
const MAX_CONNECTIONS: u64 = 10_000_000;
const MAX_ROUND_TRIPS: usize = 5_000_000;
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a server thread waits in poll() before checking its stop flag.
const POLL_MS: i32 = 100;

/// Pins the calling thread to `cpu` (if the machine has it).
pub(crate) fn pin_to(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu % n).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Waits until `fd` is readable or `POLL_MS` passes; true if readable.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// Server threads, each returning the CPU time it used (ns); stopped and
/// joined by [`Servers::stop`] or on drop.
pub(crate) struct Servers(Workers<u64>);

impl Servers {
    /// Stops the threads; returns the CPU time they used, ns.
    pub(crate) fn stop(self) -> u64 {
        self.0.stop().into_iter().sum()
    }
}

/// Binds a TCP listener on SERVER:`port` in the cloud namespace and runs
/// `threads` acceptor threads (pinned to the server CPU) that hand every
/// accepted connection to `serve`.
fn tcp_servers(
    w: &World,
    port: u16,
    threads: usize,
    serve: fn(TcpStream, &AtomicBool),
) -> Result<Servers> {
    let sa = SocketAddr::new(SERVER, port);
    let listener = w
        .cloud()
        .run_in(|| TcpListener::bind(sa))?
        .with_context(|| format!("binding {sa} in the cloud namespace"))?;
    listener.set_nonblocking(true)?;
    let listener = Arc::new(listener);
    let mut workers = Workers::new();
    for i in 0..threads {
        let listener = listener.clone();
        workers.spawn(format!("bench-srv-{port}-{i}"), move |stop| {
            pin_to(SERVER_CPU);
            while !stop.load(Ordering::Relaxed) {
                if !readable(listener.as_raw_fd()) {
                    continue;
                }
                if let Ok((s, _)) = listener.accept() {
                    serve(s, stop);
                }
            }
            thread_cpu_ns()
        })?;
    }
    Ok(Servers(workers))
}

fn prepare(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
}

/// CRR server side: read the 1-byte request, answer, wait for the client's
/// close.
fn serve_crr(mut s: TcpStream, _stop: &AtomicBool) {
    let mut b = [0u8; 1];
    if prepare(&s).is_err() || s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
        return;
    }
    let _ = s.read(&mut b);
}

/// RR server side: echo single bytes until EOF, a timeout or stop.
fn serve_rr(mut s: TcpStream, stop: &AtomicBool) {
    let mut b = [0u8; 1];
    if prepare(&s).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut b) {
            Ok(1) if s.write_all(&b).is_ok() => {}
            _ => return,
        }
    }
}

/// The CRR servers alone (for clients in other processes).
pub(crate) fn crr_servers(w: &World) -> Result<Servers> {
    tcp_servers(w, CRR_PORT, 2, serve_crr)
}

/// Short TCP connections per second from the container to the cloud, two
/// client threads, each: connect, send 1 byte, read 1 byte, close. Returns
/// connections per second and CPU µs per connection.
pub fn crr(w: &World, run: Duration) -> Result<(f64, f64)> {
    let servers = tcp_servers(w, CRR_PORT, 2, serve_crr)?;
    let sa = SocketAddr::new(SERVER, CRR_PORT);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let k0 = ksoftirqd_ns();
    let (client_cpu, secs) = w
        .client()
        .run_in(|| crr_clients(sa, run, &done, &failed, one_connection, thread_cpu_ns))?;
    let cpu = client_cpu + servers.stop() + (ksoftirqd_ns() - k0);
    let (done, failed) = (done.into_inner(), failed.into_inner());
    if failed * 100 > done.max(1) {
        bail!("CRR: {failed} of {} connections failed", done + failed);
    }
    if done == 0 {
        bail!("CRR: no connection completed in {secs:.2} s");
    }
    Ok((done as f64 / secs, cpu as f64 / 1000.0 / done as f64))
}

/// The CRR client side: two threads pinned to the client CPU, each
/// connecting, sending 1 byte, reading 1 byte and closing until `run` has
/// passed (`connect` is one such connection). The clock starts once both threads are pinned and ready, so that
/// starting them (thread creation, the move to the client CPU, which waits
/// for that CPU on a busy machine) is not in the timed window: it was, and
/// a quick run's 0.5 s could end before the first connection. Returns the
/// sum of `cpu()` over the threads as each ends, and the window's length.
pub(crate) fn crr_clients(
    sa: SocketAddr,
    run: Duration,
    done: &AtomicU64,
    failed: &AtomicU64,
    connect: fn(SocketAddr) -> io::Result<()>,
    cpu: fn() -> u64,
) -> (u64, f64) {
    const THREADS: usize = 2;
    let ready = std::sync::Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    pin_to(CLIENT_CPU);
                    ready.wait();
                    let deadline = Instant::now() + run;
                    while Instant::now() < deadline
                        && done.load(Ordering::Relaxed) < MAX_CONNECTIONS
                    {
                        match connect(sa) {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(1));
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    cpu()
                })
            })
            .collect();
        ready.wait();
        let t0 = Instant::now();
        let cpu = clients
            .into_iter()
            .filter_map(|c| c.join().ok())
            .sum::<u64>();
        (cpu, t0.elapsed().as_secs_f64())
    })
}

fn one_connection(sa: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&sa, IO_TIMEOUT)?;
    prepare(&s)?;
    let mut b = [1u8; 1];
    s.write_all(&b)?;
    s.read_exact(&mut b)
}

pub struct RrResult {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU µs per transaction.
    pub cpu_us: f64,
}

/// One connection, one byte each way, as fast as it goes for `run`.
pub fn rr(w: &World, run: Duration) -> Result<RrResult> {
    let servers = tcp_servers(w, RR_PORT, 1, serve_rr)?;
    let sa = SocketAddr::new(SERVER, RR_PORT);
    let k0 = ksoftirqd_ns();
    let (samples, secs, client_cpu) =
        w.client().run_in(|| -> io::Result<(Vec<u32>, f64, u64)> {
            pin_to(CLIENT_CPU);
            let mut s = TcpStream::connect_timeout(&sa, IO_TIMEOUT)?;
            prepare(&s)?;
            let mut samples = Vec::with_capacity(MAX_ROUND_TRIPS.min(1 << 21));
            let mut b = [7u8; 1];
            let t0 = Instant::now();
            let deadline = t0 + run;
            while samples.len() < MAX_ROUND_TRIPS {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                samples.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
            }
            let secs = t0.elapsed().as_secs_f64();
            drop(s);
            Ok((samples, secs, thread_cpu_ns()))
        })??;
    let cpu = client_cpu + servers.stop() + (ksoftirqd_ns() - k0);
    anyhow::ensure!(!samples.is_empty(), "RR: no round trip completed");
    let mut sorted = samples;
    sorted.sort_unstable();
    let pct = |p: f64| {
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        f64::from(sorted[i]) / 1000.0
    };
    Ok(RrResult {
        per_sec: sorted.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us: cpu as f64 / 1000.0 / sorted.len() as f64,
    })
}

/// 64-byte UDP datagrams from the container (one sender, sendmmsg batches)
/// to a sink in the cloud; returns datagrams received per second and the
/// sending CPU's ns per datagram received (sender thread and ksoftirqd).
pub fn udp_rate(w: &World, run: Duration) -> Result<(f64, f64)> {
    udp_rate_to(
        w,
        run,
        SocketAddr::new(SERVER, UDP_PORT),
        &[0x42u8; UDP_PAYLOAD],
    )
}

/// [`udp_rate`] with the datagrams' destination and payload given: the
/// sink still counts what arrives at SERVER:UDP_PORT (for a tunnel, the
/// inner packets the payloads carry there).
pub fn udp_rate_to(w: &World, run: Duration, sa: SocketAddr, payload: &[u8]) -> Result<(f64, f64)> {
    let sink = UdpSink::start(w)?;
    let k0 = ksoftirqd_ns();
    let sent = w.client().run_in(|| -> io::Result<(u64, f64, u64)> {
        pin_to(CLIENT_CPU);
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(sa)?;
        let t0 = Instant::now();
        let deadline = t0 + run;
        let mut sent = 0u64;
        while Instant::now() < deadline && sent < MAX_UDP_PACKETS {
            sent += send_batch(&sock, payload)?;
        }
        Ok((sent, t0.elapsed().as_secs_f64(), thread_cpu_ns()))
    });
    let got = sink.stop();
    let (sent, secs, sender_cpu) = sent??;
    // The sending thread runs the whole path up to the sink's socket in
    // softirq; the spinning sink's own time is not a cost of the path.
    let cpu = sender_cpu + (ksoftirqd_ns() - k0);
    if got * 2 < sent {
        bail!("UDP: only {got} of {sent} datagrams arrived (sink too slow or packets dropped)");
    }
    Ok((got as f64 / secs, cpu as f64 / got.max(1) as f64))
}

/// A UDP sink on SERVER:UDP_PORT in the cloud namespace, counting what
/// arrives.
pub(crate) struct UdpSink {
    thread: Workers<()>,
    received: Arc<AtomicU64>,
}

impl UdpSink {
    pub(crate) fn start(w: &World) -> Result<Self> {
        let sa = SocketAddr::new(SERVER, UDP_PORT);
        let sink = w
            .cloud()
            .run_in(|| UdpSocket::bind(sa))?
            .with_context(|| format!("binding UDP {sa} in the cloud namespace"))?;
        set_rcvbuf(&sink, 32 << 20);
        // The sink polls without sleeping, so the sender's softirq never has
        // a sleeping reader to wake: its cost per packet does not depend on
        // whether the sink keeps up.
        sink.set_nonblocking(true)?;
        let received = Arc::new(AtomicU64::new(0));
        let mut thread = Workers::new();
        {
            let received = received.clone();
            thread.spawn("bench-udp-sink", move |stop| {
                pin_to(SERVER_CPU);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match sink.recv(&mut buf) {
                        Ok(_) => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::hint::spin_loop(),
                    }
                }
            })?;
        }
        Ok(Self { thread, received })
    }

    /// Lets the sink drain what is queued, stops it; returns the count.
    pub(crate) fn stop(self) -> u64 {
        std::thread::sleep(Duration::from_millis(150));
        self.thread.stop();
        self.received.load(Ordering::SeqCst)
    }
}

fn set_rcvbuf(s: &UdpSocket, bytes: i32) {
    // SO_RCVBUFFORCE (root) ignores net.core.rmem_max.
    set_buf(s, libc::SO_RCVBUFFORCE, bytes);
}

/// SO_SNDBUFFORCE (root; net.core.wmem_max does not apply).
pub(crate) fn set_sndbuf(s: &UdpSocket, bytes: i32) {
    set_buf(s, libc::SO_SNDBUFFORCE, bytes);
}

fn set_buf(s: &UdpSocket, opt: libc::c_int, bytes: i32) {
    // SAFETY: valid fd, pointer to an int of the given size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// One sendmmsg() of UDP_BATCH datagrams on a connected socket; returns how
/// many went out.
fn send_batch(sock: &UdpSocket, payload: &[u8]) -> io::Result<u64> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: [libc::mmsghdr; UDP_BATCH] = unsafe { std::mem::zeroed() };
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at the one live iovec and payload.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), UDP_BATCH as u32, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A full queue is back-pressure, not a failure.
        if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as u64)
}

/// iperf3, one TCP stream container -> cloud for `secs`; Gbit/s received
/// and CPU ms per GB (iperf3's own client and server CPU use, plus
/// ksoftirqd).
pub fn iperf(w: &World, secs: u32) -> Result<(f64, f64)> {
    let server = SERVER.to_string();
    let k0 = ksoftirqd_ns();
    let out = w.client().exec(&[
        "timeout",
        "-k",
        "2",
        &(secs + 15).to_string(),
        "iperf3",
        "-c",
        &server,
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
        "-A",
        &format!("{CLIENT_CPU},{SERVER_CPU}"),
        "--connect-timeout",
        "3000",
    ])?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J: invalid JSON")?;
    let soft_ns = ksoftirqd_ns() - k0;
    let end = &v["end"];
    let field = |a: &str, b: &str| {
        end[a][b]
            .as_f64()
            .with_context(|| format!("iperf3 -J: no end.{a}.{b}: {}", world::short(&v)))
    };
    let bps = field("sum_received", "bits_per_second")?;
    let bytes = field("sum_received", "bytes")?;
    let seconds = field("sum_received", "seconds")?;
    let cpu_pct = field("cpu_utilization_percent", "host_total")?
        + field("cpu_utilization_percent", "remote_total")?;
    let cpu_ms = cpu_pct / 100.0 * seconds * 1000.0 + soft_ns as f64 / 1e6;
    Ok((bps / 1e9, cpu_ms / (bytes / 1e9)))
}
