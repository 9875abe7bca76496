//! Real packets through the real kernel program on a real bridge, loaded by
//! the real `egress-loader` binary. Each test builds its own Docker-like
//! topology (network namespaces) and its own bpffs, so they run in parallel,
//! and starts `egress-loader run --pin-dir <bpffs>/egress --rescan 0.2` in
//! the topology's host namespace.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use aya::programs::{SchedClassifier, TcAttachType};
use egress_tests::traffic::{http_get, is_timeout, ping, tcp_connect, tcp_server};
use egress_tests::{BpffsMount, ChildGuard, NetNs, addrs, loader_bin, require_privileges};

/// Ping timeout for a reply that must come back.
const PING_OK: Duration = Duration::from_secs(3);
/// Ping timeout for an echo that must be dropped (ping rounds up to 1 s).
const PING_DROPPED: Duration = Duration::from_secs(1);

fn sock(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// Programs attached with TCX to `iface`'s ingress hook, as the kernel sees
/// them from inside `ns` (ids).
fn tcx_ingress_programs(ns: &NetNs, iface: &str) -> Vec<u32> {
    let iface = iface.to_owned();
    ns.run_in(move || SchedClassifier::query_tcx(&iface, TcAttachType::Ingress))
        .expect("setns")
        .unwrap_or_else(|e| panic!("query_tcx: {e}"))
        .1
        .iter()
        .map(|p| p.id())
        .collect()
}

#[test]
fn metadata_blocked_other_destinations_reachable() {
    require_privileges!();
    let topo = topology("fmeta");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let imds6 = tcp_server(topo.cloud(), addrs::IMDS_V6, 80).unwrap();
    let ecs = tcp_server(topo.cloud(), addrs::ECS_V4, 80).unwrap();
    let web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let web6 = tcp_server(topo.cloud(), addrs::SMTP_V6, 8080).unwrap();

    // Without the filter everything is reachable: the assertions below can fail.
    for (addr, port) in [
        (IpAddr::from(addrs::IMDS_V4), 80),
        (addrs::ECS_V4.into(), 80),
        (addrs::SMTP_V4.into(), 8080),
        (addrs::IMDS_V6.into(), 80),
        (addrs::SMTP_V6.into(), 8080),
    ] {
        assert_http_ok(c0, addr, port);
    }
    for a in [IpAddr::from(addrs::IMDS_V4), addrs::IMDS_V6.into()] {
        ping(c0, a, PING_OK).unwrap_or_else(|e| panic!("before the loader: {e:#}"));
    }
    let accepted_before = [imds.accepted(), imds6.accepted(), ecs.accepted()];
    assert_eq!(accepted_before, [1, 1, 1]);

    let mut loader = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert_eq!(st["dry_run"], false, "{st}");

    let mut blocked_attempts = 0;
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert_http_refused(c0, addrs::IMDS_V6, 80);
    assert_http_refused(c0, addrs::ECS_V4, 80);
    blocked_attempts += 3;
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    assert_http_ok(c0, addrs::SMTP_V6, 8080);
    for a in [IpAddr::from(addrs::IMDS_V4), addrs::IMDS_V6.into()] {
        let r = ping(c0, a, PING_DROPPED);
        assert!(r.is_err(), "ping {a} got a reply through the filter");
        blocked_attempts += 1;
    }
    ping(c0, addrs::SMTP_V4, PING_OK).unwrap_or_else(|e| panic!("with the filter: {e:#}"));
    ping(c0, addrs::SMTP_V6, PING_OK).unwrap_or_else(|e| panic!("with the filter: {e:#}"));

    // The blocked servers saw nothing while the filter was there.
    assert_eq!(
        [imds.accepted(), imds6.accepted(), ecs.accepted()],
        accepted_before,
        "a metadata server accepted a connection through the filter"
    );
    assert_eq!(web.accepted(), 2);
    assert_eq!(web6.accepted(), 2);

    let c = counters(&loader);
    let blocked = packets(&c, "metadata_blocked");
    // At least one packet per attempt (ping may send a second echo before its
    // deadline, a TCP stack may retransmit), and never none.
    assert!(
        blocked >= blocked_attempts && blocked > 0,
        "metadata_blocked {blocked} < {blocked_attempts} blocked attempts: {c}"
    );
    assert!(packets(&c, "passed") > 0, "{c}");
    assert_eq!(packets(&c, "smtp_allowed"), 0, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 0, "{c}");
    assert_eq!(packets(&c, "evasive_dropped"), 0, "{c}");
    // Each drop is charged to the rule that matched it.
    assert!(rule_packets(&c, "169.254.169.254/32") >= 2, "{c}");
    assert!(rule_packets(&c, "fd00:ec2::254/128") >= 2, "{c}");
    assert!(rule_packets(&c, "169.254.170.2/32") >= 1, "{c}");
    assert_eq!(rule_packets(&c, "100.100.100.200/32"), 0, "{c}");
    assert_eq!(c["dry_run"], false, "{c}");
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn smtp_burst_then_refill() {
    require_privileges!();
    let topo = topology("fsmtp");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let dest = sock(addrs::SMTP_V4, 25);
    // 30/minute: one token every 2 s.
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--smtp-burst", "3", "--smtp-rate", "30/minute"],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);

    // 500 ms is below the 1 s initial SYN retransmission timeout: a refused
    // attempt sends exactly one SYN, so the counters below are exact.
    let attempt = Duration::from_millis(500);
    let burst_start = Instant::now();
    // The first token is spent no later than this first connect returns.
    let mut first_admitted = None;
    for i in 0..3 {
        tcp_connect(c0, dest, attempt)
            .unwrap_or_else(|e| panic!("attempt {} within the burst: {e}", i + 1));
        first_admitted.get_or_insert_with(Instant::now);
    }
    for i in 0..2 {
        let err = tcp_connect(c0, dest, attempt).expect_err("over the burst, must be dropped");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::TimedOut,
            "attempt {} over the burst: {err}",
            i + 4
        );
    }
    // The first token comes back 2 s after it was spent: the refused SYNs
    // must have been sent before that, the next attempt after it.
    assert!(
        burst_start.elapsed() < Duration::from_secs(2),
        "too slow to test the refill: {:?}",
        burst_start.elapsed()
    );
    let refill = first_admitted.unwrap() + Duration::from_millis(2200);
    std::thread::sleep(refill.saturating_duration_since(Instant::now()));
    tcp_connect(c0, dest, attempt).unwrap_or_else(|e| panic!("after the refill: {e}"));

    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 4, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 2, "{c}");
    assert_eq!(packets(&c, "metadata_blocked"), 0, "{c}");
    assert!(smtp.wait_accepted(4, REACHABLE));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(smtp.accepted(), 4);
}

#[test]
fn dry_run_drops_nothing_counts_everything() {
    require_privileges!();
    let topo = topology("fdry");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let mut loader = start_loader(&topo, &bpffs, &["--dry-run", "--smtp-burst", "1"]);
    let st = wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert_eq!(st["dry_run"], true, "{st}");

    assert_http_ok(c0, addrs::IMDS_V4, 80);
    assert_eq!(imds.accepted(), 1);
    for i in 0..2 {
        tcp_connect(c0, sock(addrs::SMTP_V4, 25), REACHABLE)
            .unwrap_or_else(|e| panic!("SMTP attempt {} in dry-run: {e}", i + 1));
    }
    assert!(smtp.wait_accepted(2, REACHABLE));

    let c = counters(&loader);
    assert_eq!(c["dry_run"], true, "{c}");
    // SYN, ACK, request, ACKs, FIN: every packet to the blocked address counts.
    assert!(packets(&c, "metadata_blocked") > 0, "{c}");
    assert!(rule_packets(&c, "169.254.169.254/32") > 0, "{c}");
    assert_eq!(packets(&c, "smtp_allowed"), 1, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 1, "{c}");
}

#[test]
fn container_to_container_untouched() {
    require_privileges!();
    let topo = topology("fc2c");
    let bpffs = BpffsMount::new();
    let (c0, c1) = (topo.container(0), topo.container(1));
    let peer25 = tcp_server(c1.ns(), c1.ipv4(), 25).unwrap();
    let peer80 = tcp_server(c1.ns(), c1.ipv4(), 80).unwrap();
    let peer25v6 = tcp_server(c1.ns(), c1.ipv6(), 25).unwrap();
    let cloud25 = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let mut loader = start_loader(&topo, &bpffs, &["--smtp-burst", "1"]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);

    for i in 0..10 {
        tcp_connect(c0.ns(), sock(c1.ipv4(), 25), REACHABLE)
            .unwrap_or_else(|e| panic!("c0 -> c1:25 attempt {}: {e}", i + 1));
        tcp_connect(c0.ns(), sock(c1.ipv4(), 80), REACHABLE)
            .unwrap_or_else(|e| panic!("c0 -> c1:80 attempt {}: {e}", i + 1));
    }
    for i in 0..3 {
        tcp_connect(c0.ns(), sock(c1.ipv6(), 25), REACHABLE)
            .unwrap_or_else(|e| panic!("c0 -> [c1]:25 attempt {}: {e}", i + 1));
    }
    assert!(peer25.wait_accepted(10, REACHABLE));
    assert!(peer80.wait_accepted(10, REACHABLE));
    assert!(peer25v6.wait_accepted(3, REACHABLE));
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 0, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 0, "{c}");

    // The filter is live: the same port towards the outside is limited to
    // a burst of 1.
    tcp_connect(c0.ns(), sock(addrs::SMTP_V4, 25), REACHABLE)
        .unwrap_or_else(|e| panic!("first SMTP attempt to the outside: {e}"));
    let err = tcp_connect(c0.ns(), sock(addrs::SMTP_V4, 25), DROPPED)
        .expect_err("second SMTP attempt to the outside must be dropped");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(cloud25.wait_accepted(1, REACHABLE));
    assert_eq!(cloud25.accepted(), 1);
    let c = counters(&loader);
    assert_eq!(packets(&c, "smtp_allowed"), 1, "{c}");
    assert_eq!(packets(&c, "smtp_limited"), 1, "{c}");
}

#[test]
fn detach_leaves_no_trace() {
    require_privileges!();
    let topo = topology("fdet");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let host = topo.host();
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let mut loader = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let prog_id = interface(&st, "docker0").unwrap()["program_id"].as_u64();
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    let before = tcx_ingress_programs(host, "docker0");
    assert_eq!(
        before.iter().map(|&id| u64::from(id)).collect::<Vec<_>>(),
        prog_id.into_iter().collect::<Vec<_>>(),
        "TCX ingress programs on docker0 while attached (status: {st})"
    );

    let out = loader.cli("detach", &[] as &[&str]).unwrap();
    assert!(
        out.status.success(),
        "detach failed: {}",
        egress_tests::loader::describe_output(&out)
    );

    // The running loader notices the pins are gone and exits by itself.
    let exited = egress_tests::wait_until(Duration::from_secs(3), || !loader.is_running());
    assert!(
        exited,
        "loader still running 3 s after detach:\n{}",
        loader.log()
    );
    let st = loader.try_wait().unwrap().unwrap();
    assert!(st.success(), "loader exit status {st}:\n{}", loader.log());

    assert!(!pin_dir(&bpffs).exists(), "pin dir still there");
    let left: Vec<_> = bpffs
        .list()
        .unwrap()
        .into_iter()
        .filter(|p| !matches!(p.to_str(), Some("maps.debug" | "progs.debug")))
        .collect();
    assert!(left.is_empty(), "left on bpffs: {left:?}");
    let tc = host
        .exec_stdout(&["tc", "filter", "show", "dev", "docker0", "ingress"])
        .unwrap();
    assert!(tc.trim().is_empty(), "tc filters left on docker0: {tc}");
    let after = tcx_ingress_programs(host, "docker0");
    assert!(after.is_empty(), "TCX programs left on docker0: {after:?}");

    assert_http_ok(c0, addrs::IMDS_V4, 80);
}

#[test]
fn protection_outlives_a_killed_loader() {
    require_privileges!();
    let topo = topology("fkill");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let mut first = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut first, "docker0", READY_TIMEOUT);
    let first_prog = interface(&st, "docker0").unwrap()["program_id"].as_u64();
    assert!(first_prog.is_some(), "{st}");

    let probe_for = Duration::from_secs(4);
    let (outcomes, before_kill, second) = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            let end = Instant::now() + probe_for;
            let mut outcomes = Vec::new();
            while Instant::now() < end {
                let r = http_get(c0, addrs::IMDS_V4, 80, "/", Duration::from_millis(300));
                // Blocked: rejected (refused at once) or, over the reply
                // budget, dropped (a timeout).
                outcomes.push(r.map_err(|e| (is_timeout(&e) || is_refused(&e), format!("{e:#}"))));
                std::thread::sleep(Duration::from_millis(20));
            }
            outcomes
        });
        std::thread::sleep(Duration::from_millis(500));
        let before_kill = packets(&counters(&first), "metadata_blocked");
        first.kill().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let mut second = start_loader(&topo, &bpffs, &[]);
        wait_attached(&mut second, "docker0", READY_TIMEOUT);
        (probe.join().unwrap(), before_kill, second)
    });

    assert!(outcomes.len() >= 5, "only {} probes", outcomes.len());
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(body) => panic!("probe {i} reached the metadata service: {body:?}"),
            Err((true, _)) => {}
            Err((false, e)) => {
                panic!("probe {i} failed other than by a refusal or a timeout: {e}")
            }
        }
    }
    assert_eq!(imds.accepted(), 0);
    // `status` reads the first loader's attachments at once: the second
    // one's log may still be to come (it loads and verifies two programs),
    // and it logs "adopted" for the maps before it swaps the program in the
    // link (seen on a loaded machine: the old program id read back).
    assert!(
        egress_tests::wait_until(READY_TIMEOUT, || {
            second.log().contains("adopted")
                && interface(&status(&second), "docker0").and_then(|i| i["program_id"].as_u64())
                    != first_prog
        }),
        "second loader did not adopt:\n{}",
        second.log()
    );
    let st = status(&second);
    assert!(is_attached(&st, "docker0"), "{st}");
    assert_eq!(st["loader_running"], true, "{st}");
    // Adopting swaps the program inside the pinned link: still exactly one
    // program on the hook, and it is the second loader's.
    let progs = tcx_ingress_programs(topo.host(), "docker0");
    let prog_id = interface(&st, "docker0").unwrap()["program_id"].as_u64();
    assert_eq!(progs.len(), 1, "TCX programs on docker0: {progs:?}");
    assert_eq!(Some(u64::from(progs[0])), prog_id, "{st}");
    assert_ne!(prog_id, first_prog, "the first loader's program still runs");
    // Counters live in the pinned maps: they carry on from the first loader.
    let after = packets(&counters(&second), "metadata_blocked");
    assert!(
        after >= before_kill,
        "counters reset: {after} < {before_kill}"
    );
    assert!(
        after >= outcomes.len() as u64,
        "{after} < {} probes",
        outcomes.len()
    );
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert!(packets(&counters(&second), "metadata_blocked") > after);
}

#[test]
fn second_run_on_same_pin_dir_refuses() {
    require_privileges!();
    let topo = topology("ftwo");
    let bpffs = BpffsMount::new();
    let mut first = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut first, "docker0", READY_TIMEOUT);
    let prog_id = interface(&st, "docker0").unwrap()["program_id"].clone();

    let mut cmd = topo.host().command(loader_bin().unwrap());
    cmd.args(["run", "--pin-dir"])
        .arg(pin_dir(&bpffs))
        .args(["--rescan", RESCAN])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut second = ChildGuard::spawn(cmd, "second egress-loader run").unwrap();
    // Bounded: if it did not refuse, it would run until killed (on drop).
    let exit = second
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("second `run` on the same pin dir did not exit within 5 s");
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.child_mut().stderr.as_mut().unwrap(), &mut stderr)
        .unwrap();
    assert!(
        !exit.success(),
        "second run exited {exit}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("another egress-loader is running"),
        "stderr:\n{stderr}"
    );

    // The first one is untouched.
    assert!(first.is_running(), "first loader died:\n{}", first.log());
    let st = status(&first);
    assert!(is_attached(&st, "docker0"), "{st}");
    assert_eq!(
        interface(&st, "docker0").unwrap()["program_id"],
        prog_id,
        "{st}"
    );
}

#[test]
fn new_bridge_is_filtered_and_vanished_bridge_forgotten() {
    require_privileges!();
    const BRIDGE: &str = "br-egrtest8";
    let mut topo = topology("fbrid");
    let bpffs = BpffsMount::new();
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let mut loader = start_loader(&topo, &bpffs, &[]);
    let st = wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(interface(&st, BRIDGE).is_none(), "{st}");

    topo.add_bridge(BRIDGE, "172.18.0.0/16").unwrap();
    let added = Instant::now();
    let st = wait_attached(&mut loader, BRIDGE, Duration::from_secs(2));
    eprintln!(
        "{BRIDGE} attached {:?} after add_bridge returned",
        added.elapsed()
    );
    assert!(is_attached(&st, "docker0"), "{st}");
    let c = topo.containers().last().unwrap();
    assert_eq!(c.bridge(), BRIDGE);
    assert_http_refused(c.ns(), addrs::IMDS_V4, 80);
    assert_http_ok(c.ns(), addrs::SMTP_V4, 8080);

    topo.host().ip(&["link", "del", BRIDGE]).unwrap();
    let forgotten = egress_tests::wait_until(Duration::from_secs(3), || {
        interface(&status(&loader), BRIDGE).is_none()
    });
    assert!(
        forgotten,
        "{BRIDGE} still listed 3 s after it was deleted: {}\nlog:\n{}",
        status(&loader),
        loader.log()
    );
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
    let st = status(&loader);
    assert!(is_attached(&st, "docker0"), "{st}");
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
}

/// The names under `<pin dir>/links/`, as they are on bpffs.
fn link_pins(bpffs: &BpffsMount) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pin_dir(bpffs).join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `detach` run against `loader`'s pin dir must succeed and take `iface`'s
/// program off its hook; the loader then exits by itself.
fn detach_and_check(
    loader: &mut egress_tests::LoaderProcess,
    bpffs: &BpffsMount,
    host: &NetNs,
    iface: &str,
) {
    let out = loader.cli("detach", &[] as &[&str]).unwrap();
    let described = egress_tests::loader::describe_output(&out);
    assert!(out.status.success(), "detach failed: {described}");
    assert!(
        egress_tests::wait_until(Duration::from_secs(3), || !loader.is_running()),
        "loader still running 3 s after detach:\n{}",
        loader.log()
    );
    assert!(!pin_dir(bpffs).exists(), "pins left: {:?}", bpffs.list());
    let left = tcx_ingress_programs(host, iface);
    assert!(left.is_empty(), "TCX programs left on {iface}: {left:?}");
}

/// bpffs refuses a dot in a pin's name: a bridge named as Docker lets one
/// be named (`com.docker.network.bridge.name=dk.br0`) is pinned under an
/// encoded name, filters its containers, and `status`, `counters` and
/// `detach` speak of it by its own name.
#[test]
fn a_bridge_with_a_dot_in_its_name_is_filtered() {
    require_privileges!();
    const BRIDGE: &str = "dk.br0";
    let mut topo = topology("fdotb");
    let bpffs = BpffsMount::new();
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    topo.add_bridge(BRIDGE, "172.18.0.0/16").unwrap();
    let c = topo.containers().last().unwrap().ns();
    // Without the filter the metadata service answers: the refusal below can fail.
    assert_http_ok(c, addrs::IMDS_V4, 80);

    // Bridges only: the containers' veths would judge their packets first.
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--no-endpoints", "--iface", "docker0", "--iface", BRIDGE],
    );
    let st = wait_attached(&mut loader, BRIDGE, READY_TIMEOUT);
    assert_http_refused(c, addrs::IMDS_V4, 80);
    assert_http_ok(c, addrs::SMTP_V4, 8080);

    // One program on the hook, the one `status` names, held by one pin.
    let progs = tcx_ingress_programs(topo.host(), BRIDGE);
    let prog_id = interface(&st, BRIDGE).unwrap()["program_id"].as_u64();
    assert_eq!(progs.len(), 1, "TCX programs on {BRIDGE}: {progs:?}");
    assert_eq!(Some(u64::from(progs[0])), prog_id, "{st}");
    let pinned = link_pins(&bpffs);
    assert!(pinned.iter().any(|p| p == "dk%2Ebr0"), "{pinned:?}");
    let names: Vec<&serde_json::Value> = st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["name"])
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains('%'))),
        "{st}"
    );

    let c = counters(&loader);
    let blocked = c["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["interface"] == BRIDGE))
        .and_then(|i| i["counters"].as_array())
        .and_then(|a| a.iter().find(|x| x["name"] == "metadata_blocked"))
        .and_then(|x| x["packets"].as_u64());
    assert!(blocked.is_some_and(|n| n > 0), "{BRIDGE}'s counters: {c}");
    // The drop events name it too.
    let log = loader.log();
    assert!(log.contains(r#""interface":"dk.br0""#), "{log}");

    detach_and_check(&mut loader, &bpffs, topo.host(), BRIDGE);
    assert_http_ok(topo.containers().last().unwrap().ns(), addrs::IMDS_V4, 80);
}

/// An overlay's VXLAN device named as flannel names it, chosen by an
/// `--iface` pattern: attached, pinned under an encoded name, listed by
/// `status` under its own name, and detached by `detach`. (What it
/// decapsulates is another test's concern; this one is about the name.)
#[test]
fn a_vxlan_device_with_a_dot_in_its_name_is_attached_and_detached() {
    require_privileges!();
    const VXLAN: &str = "flannel.1";
    let topo = topology("fdotv");
    let bpffs = BpffsMount::new();
    let host = topo.host();
    host.ip(&[
        "link",
        "add",
        VXLAN,
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "local",
        &addrs::UPLINK_HOST_V4.to_string(),
        "dev",
        addrs::UPLINK,
        "nolearning",
    ])
    .unwrap();
    host.ip(&["link", "set", VXLAN, "up"]).unwrap();

    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--iface", "docker0", "--iface", "flannel.*"],
    );
    let st = wait_attached(&mut loader, VXLAN, READY_TIMEOUT);
    let progs = tcx_ingress_programs(host, VXLAN);
    let prog_id = interface(&st, VXLAN).unwrap()["program_id"].as_u64();
    assert_eq!(progs.len(), 1, "TCX programs on {VXLAN}: {progs:?}");
    assert_eq!(Some(u64::from(progs[0])), prog_id, "{st}");
    let pinned = link_pins(&bpffs);
    assert!(pinned.iter().any(|p| p == "flannel%2E1"), "{pinned:?}");
    // Attached once: a later scan finds its own pin and leaves it.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(tcx_ingress_programs(host, VXLAN), progs);
    let log = loader.log();
    assert_eq!(log.matches("flannel.1 (ifindex").count(), 1, "{log}");
    assert!(!log.contains("BPF_OBJ_PIN"), "{log}");

    detach_and_check(&mut loader, &bpffs, host, VXLAN);
}
