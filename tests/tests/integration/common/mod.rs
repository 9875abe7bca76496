//! Helpers shared by the real-traffic suites (`filter_netns`, `demo`,
//! `lifecycle`...): starting the loader the same way everywhere and reading
//! the fields of its `status --json` and `counters --json` output. The harness
//! (`egress_tests`) deliberately assumes nothing about that JSON beyond its
//! validity; the shapes these tests rely on are the ones docs/observability.md documents.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use egress_tests::topology::Topology;
use egress_tests::traffic::{http_get, is_timeout};
use egress_tests::{
    BpffsMount, ChildGuard, EventsSocket, LoaderProcess, NetNs, loader_bin, wait_until,
};

pub use egress_tests::TempDir;
use serde_json::Value;

/// Interface rescan period passed to every loader: a new bridge is picked up
/// within 0.2 s instead of the default 1 s.
pub const RESCAN: &str = "0.2";

/// How long a loader gets to load, apply the policy and attach. A bound,
/// not a measurement: the verifier alone takes 1.1 s of a start on an idle
/// 2-CPU machine and was seen taking 7-8 s with test suites and builds
/// beside it (the `start:` log line has the phases).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect/read timeout for traffic that must get through (everything is
/// local to the machine: a reply takes well under a millisecond).
pub const REACHABLE: Duration = Duration::from_secs(3);

/// Connect timeout for traffic that must be dropped. Below Linux's initial
/// SYN retransmission timeout (1 s, TCP_TIMEOUT_INIT), so one attempt sends
/// exactly one SYN.
pub const DROPPED: Duration = Duration::from_millis(700);

/// A Docker-like topology with two containers (`test` names its namespaces).
pub fn topology(test: &str) -> Topology {
    Topology::docker_like(test).unwrap_or_else(|e| panic!("building the topology: {e:#}"))
}

/// A Docker-like topology with `containers` containers.
pub fn topology_with(test: &str, containers: usize) -> Topology {
    Topology::docker_like_with(test, containers)
        .unwrap_or_else(|e| panic!("building the topology: {e:#}"))
}

/// A command's stderr, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pin dir every test uses inside its private bpffs.
pub fn pin_dir(bpffs: &BpffsMount) -> PathBuf {
    bpffs.path().join("egress")
}

/// `egress-loader run --pin-dir <bpffs>/egress --rescan 0.2 ARGS...` in the
/// topology's host namespace.
pub fn start_loader(topo: &Topology, bpffs: &BpffsMount, args: &[&str]) -> LoaderProcess {
    let mut all = vec!["--rescan", RESCAN];
    all.extend_from_slice(args);
    LoaderProcess::run_in_ns(topo.host(), &pin_dir(bpffs), &all)
        .unwrap_or_else(|e| panic!("starting egress-loader: {e:#}"))
}

/// The `interfaces[]` entry of `status --json` named `iface`.
pub fn interface<'a>(status: &'a Value, iface: &str) -> Option<&'a Value> {
    status["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == iface)
}

/// Whether `status --json` lists `iface` with `attached: true`.
pub fn is_attached(status: &Value, iface: &str) -> bool {
    interface(status, iface).is_some_and(|i| i["attached"] == true)
}

/// Waits until `status --json` shows `iface` attached; returns a status read
/// after that (`status` reads the links before the policy, and the loader
/// writes the policy before it attaches, so that read has both).
pub fn wait_attached(loader: &mut LoaderProcess, iface: &str, timeout: Duration) -> Value {
    loader
        .wait_ready_until(timeout, |s| is_attached(s, iface))
        .unwrap_or_else(|e| panic!("waiting for {iface} to be attached: {e:#}"));
    let st = status(loader);
    assert!(is_attached(&st, iface), "{iface} no longer attached: {st}");
    st
}

/// `status --json`.
pub fn status(loader: &LoaderProcess) -> Value {
    loader
        .cli_json("status", &[])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `counters --json`.
pub fn counters(loader: &LoaderProcess) -> Value {
    loader
        .cli_json("counters", &[])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Packets of the verdict counter `name` (`metadata_blocked`, `passed`...)
/// in `counters --json` output.
pub fn packets(counters: &Value, name: &str) -> u64 {
    counters["counters"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name:?} in {counters}"))
}

/// The `endpoints[]` entry of `counters --json` whose container is `name`.
pub fn endpoint_of(c: &Value, name: &str) -> Option<Value> {
    c["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["container"]["name"] == name)
        .cloned()
}

/// Packets of the verdict counter `verdict` of container `name`'s endpoint
/// in `counters --json` output; 0 when it has no entry (yet).
pub fn endpoint_count(c: &Value, name: &str, verdict: &str) -> u64 {
    endpoint_of(c, name)
        .and_then(|e| {
            e["counters"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == verdict)?["packets"]
                .as_u64()
        })
        .unwrap_or(0)
}

/// Packets of the per-rule counter whose destination is `destination`
/// (`"169.254.169.254/32"`).
pub fn rule_packets(counters: &Value, destination: &str) -> u64 {
    counters["rules"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["destination"] == destination))
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("no rule for {destination:?} in {counters}"))
}

/// `GET /metrics` of a loader serving on `port` in `ns`, retried for up to
/// five seconds while it starts.
pub fn metrics_text(ns: &NetNs, port: u16) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match http_get(
            ns,
            std::net::Ipv4Addr::LOCALHOST,
            port,
            "/metrics",
            Duration::from_secs(3),
        ) {
            Ok(body) => return body,
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET /metrics: {last}");
}

/// An HTTP GET from `ns` that must fail because its packets were silently
/// dropped (a timeout, not a refusal or an ICMP error). One SYN is sent.
pub fn assert_http_dropped(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) {
    let addr = addr.into();
    match http_get(ns, addr, port, "/", DROPPED) {
        Ok(body) => panic!(
            "GET {addr} port {port} from {} got through: {body:?}",
            ns.name()
        ),
        Err(e) => assert!(
            is_timeout(&e),
            "GET {addr} port {port} from {} failed, but not by a timeout \
             (so not a silent drop): {e:#}",
            ns.name()
        ),
    }
}

/// An HTTP GET from `ns` that must fail because the filter rejected it: the
/// connection refused (a TCP reset came back) before the client's first SYN
/// retransmission (Linux's initial RTO, 1 s: a later answer would mean the
/// first SYN went unanswered). Returns how long the client took to fail.
pub fn assert_http_refused(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) -> Duration {
    let addr = addr.into();
    let t = std::time::Instant::now();
    let r = http_get(ns, addr, port, "/", REACHABLE);
    let took = t.elapsed();
    match r {
        Ok(body) => panic!(
            "GET {addr} port {port} from {} got through: {body:?}",
            ns.name()
        ),
        Err(e) => assert!(
            is_refused(&e),
            "GET {addr} port {port} from {} failed, but not by a refusal \
             (so not rejected): {e:#}",
            ns.name()
        ),
    }
    assert!(
        took < FIRST_RETRANSMISSION,
        "GET {addr} port {port} refused only after {took:?}: the first SYN went unanswered"
    );
    took
}

/// Linux's initial TCP retransmission timeout (TCP_TIMEOUT_INIT).
pub const FIRST_RETRANSMISSION: Duration = Duration::from_secs(1);

/// Whether an error chain holds `ECONNREFUSED`.
pub fn is_refused(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// An HTTP GET from `ns` that must succeed; returns the body.
pub fn assert_http_ok(ns: &NetNs, addr: impl Into<IpAddr>, port: u16) -> String {
    let addr = addr.into();
    let body = http_get(ns, addr, port, "/", REACHABLE).unwrap_or_else(|e| {
        panic!(
            "GET {addr} port {port} from {} should work: {e:#}",
            ns.name()
        )
    });
    assert!(body.starts_with("ok"), "unexpected body {body:?}");
    body
}

/// Follows `egress-loader events --socket PATH` from `ns`, once the loader
/// has made the socket: the follower and its events, one JSON value each.
pub fn follow_events(ns: &NetNs, socket: &EventsSocket) -> (ChildGuard, mpsc::Receiver<Value>) {
    assert!(
        wait_until(READY_TIMEOUT, || socket.path().exists()),
        "no events socket at {}",
        socket.path().display()
    );
    let mut cmd = ns.command(loader_bin().unwrap());
    cmd.args(["events", "--socket", socket.arg()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(cmd, "egress-loader events").unwrap();
    let rx = child.json_lines();
    (child, rx)
}
