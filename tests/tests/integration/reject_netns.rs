//! Rejects with real clients, through the real loader on a Docker-like
//! bridge (network namespaces): a blocked client fails at once with
//! ECONNREFUSED (TCP reset, ICMP port unreachable), DNS on the metadata
//! address stays open, every cloud endpoint of the tables gets what the
//! default policy says, replies stay within their budget and go back only
//! out of the port the packet came in on. Nothing reaches the cloud
//! namespace's blocked services.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::*;
use egress_loader::policy::defaults::{KEEP_OPEN, KNOWN_METADATA};
use egress_loader::policy::values::Protocol;
use egress_tests::frames::{SYN, V4, tcp, v4_frame};
use egress_tests::topology::Topology;
use egress_tests::traffic::{tcp_connect, tcp_server, udp_echo, udp_request, udp_sink};
use egress_tests::wire::{Capture, Layout, mac, send_frames};
use egress_tests::{BpffsMount, LoaderProcess, addrs};
use egress_tests::{require_privileges, test_name};

fn sock(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// A loader with `config` (TOML) as its `--config`, attached to docker0.
fn loader_with(topo: &Topology, bpffs: &BpffsMount, config: &str) -> (LoaderProcess, TempDir) {
    let dir = TempDir::new("reject");
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut l = start_loader(topo, bpffs, &["--config", path.to_str().unwrap()]);
    wait_attached(&mut l, "docker0", READY_TIMEOUT);
    (l, dir)
}

fn replies(c: &serde_json::Value, what: &str) -> u64 {
    c["replies"][what]
        .as_u64()
        .unwrap_or_else(|| panic!("no replies.{what} in {c}"))
}

/// `curl` with no timeout of its own (the way the issue measured 134 s),
/// bounded from outside; returns (exit status, stderr, seconds taken).
fn curl(ns: &egress_tests::NetNs, url: &str) -> (i32, String, f64) {
    let t = Instant::now();
    let out = ns
        .exec_unchecked(&["timeout", "30", "curl", "-sS", "-v", "-o", "/dev/null", url])
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed().as_secs_f64(),
    )
}

#[test]
fn blocked_clients_fail_at_once() {
    require_privileges!();
    let topo = topology("rjfast");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let imds6 = tcp_server(topo.cloud(), addrs::IMDS_V6, 80).unwrap();
    let udp4 = udp_sink(topo.cloud(), addrs::IMDS_V4, 8125).unwrap();
    let udp6 = udp_sink(topo.cloud(), addrs::IMDS_V6, 8125).unwrap();
    // Without the filter the clients connect: the assertions below can fail.
    assert_http_ok(c0, addrs::IMDS_V4, 80);
    assert_http_ok(c0, addrs::IMDS_V6, 80);

    let mut loader = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let before = counters(&loader);

    for url in ["http://169.254.169.254/", "http://[fd00:ec2::254]/"] {
        let (code, err, secs) = curl(c0, url);
        eprintln!("curl {url}: exit {code} after {secs:.3} s");
        assert_eq!(code, 7, "curl {url}: exit 7 (could not connect): {err}");
        assert!(
            err.contains("Connection refused"),
            "curl {url}: refused: {err}"
        );
        assert!(
            secs < FIRST_RETRANSMISSION.as_secs_f64(),
            "curl {url} took {secs} s: its first SYN went unanswered"
        );
    }
    for a in [IpAddr::from(addrs::IMDS_V4), addrs::IMDS_V6.into()] {
        let t = Instant::now();
        let e = tcp_connect(c0, sock(a, 80), REACHABLE).expect_err("connect must fail");
        assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect to {a}: {e}"
        );
        assert!(t.elapsed() < FIRST_RETRANSMISSION, "{:?}", t.elapsed());
        // A connected UDP socket learns of the ICMP port unreachable.
        let t = Instant::now();
        let e = udp_request(c0, sock(a, 8125), b"metric:1|c", REACHABLE)
            .expect_err("the datagram must be answered by a refusal");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "UDP to {a}: {e}");
        eprintln!("connected UDP to {a}: refused after {:?}", t.elapsed());
    }
    // Nothing reached the cloud namespace.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        (imds.accepted(), imds6.accepted()),
        (1, 1),
        "only the probes before the filter"
    );
    assert_eq!((udp4.count(), udp6.count()), (0, 0));
    let after = counters(&loader);
    assert_eq!(
        replies(&after, "sent") - replies(&before, "sent"),
        6,
        "two curls, two connects, two datagrams: {after}"
    );
    assert!(
        packets(&after, "metadata_blocked") - packets(&before, "metadata_blocked") >= 6,
        "{after}"
    );
}

#[test]
fn dns_on_the_metadata_address_stays_open() {
    require_privileges!();
    let topo = topology("rjdns");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0).ns();
    // The resolver (GCP's is the metadata address) and the metadata server.
    let dns_udp = udp_echo(topo.cloud(), addrs::IMDS_V4, 53).unwrap();
    let dns_tcp = tcp_server(topo.cloud(), addrs::IMDS_V4, 53).unwrap();
    let http = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let mut l = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut l, "docker0", READY_TIMEOUT);

    let answer = udp_request(c0, sock(addrs::IMDS_V4, 53), b"query", REACHABLE)
        .unwrap_or_else(|e| panic!("DNS over UDP to the metadata address: {e}"));
    assert_eq!(answer, b"ok query");
    assert_eq!(dns_udp.answered(), 1);
    assert_http_ok(c0, addrs::IMDS_V4, 53);
    assert_eq!(dns_tcp.accepted(), 1, "DNS over TCP reached the resolver");
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert_eq!(http.accepted(), 0, "nothing reached port 80");
    let explained = l
        .cli_json("explain", &["--to", "169.254.169.254:53/udp"])
        .unwrap();
    assert_eq!(explained["verdict"], "passed", "{explained}");
    for to in ["169.254.169.254:53/udp", "169.254.169.254:80/tcp"] {
        let out = l
            .cli("explain", &["--from", "172.17.0.2", "--to", to])
            .unwrap();
        eprintln!(
            "$ egress-loader explain --from 172.17.0.2 --to {to}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("explain --json: {explained}");
    assert!(
        explained["exception"]
            .as_str()
            .is_some_and(|e| e.contains("53")),
        "{explained}"
    );
}

/// Every address of the clouds' tables as the default policy must treat
/// it, with one extra `[[block]]` in the file (which must not take the
/// defaults away): each known metadata endpoint refused, each "keep open"
/// endpoint answered, and `explain` saying the same for each.
#[test]
fn the_cloud_endpoint_tables_on_real_sockets() {
    require_privileges!();
    let mut topo = topology("rjtable");
    let bpffs = BpffsMount::new();
    let mut have: Vec<IpAddr> = addrs::CLOUD_V4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(addrs::CLOUD_V6.iter().map(|a| IpAddr::V6(*a)))
        .collect();
    for e in KNOWN_METADATA.iter().chain(KEEP_OPEN) {
        let a = e.ip();
        if !have.contains(&a) {
            topo.add_cloud_address(a).unwrap();
            have.push(a);
        }
    }
    let mut tcp_servers = Vec::new();
    let mut udp_servers = Vec::new();
    for e in KNOWN_METADATA.iter().chain(KEEP_OPEN) {
        match e.protocol {
            Protocol::Tcp => tcp_servers.push(tcp_server(topo.cloud(), e.ip(), e.port).unwrap()),
            _ => udp_servers.push(udp_echo(topo.cloud(), e.ip(), e.port).unwrap()),
        }
    }
    let (l, _dir) = loader_with(&topo, &bpffs, "[[block]]\ncidr = \"10.0.0.0/8\"\n");
    let c0 = topo.container(0).ns();
    let explain = |e: &egress_loader::policy::defaults::Endpoint| {
        let to = match e.ip() {
            IpAddr::V6(a) => format!("[{a}]:{}/{}", e.port, e.protocol),
            a => format!("{a}:{}/{}", e.port, e.protocol),
        };
        let from = match e.ip() {
            IpAddr::V6(_) => topo.container(0).ipv6().to_string(),
            _ => topo.container(0).ipv4().to_string(),
        };
        l.cli_json("explain", &["--from", &from, "--to", &to])
            .unwrap_or_else(|err| panic!("explain --to {to}: {err:#}"))
    };
    for e in KNOWN_METADATA {
        let dst = sock(e.ip(), e.port);
        let r = tcp_connect(c0, dst, REACHABLE);
        assert!(
            matches!(&r, Err(err) if err.kind() == ErrorKind::ConnectionRefused),
            "{dst} ({}): must be refused, got {r:?}",
            e.what
        );
        let x = explain(e);
        assert_eq!(x["verdict"], "metadata_blocked", "{dst}: {x}");
        assert_eq!(x["action"], "reject", "{dst}: {x}");
    }
    for s in &tcp_servers {
        assert_eq!(s.accepted(), 0, "{}: nothing reached it", s.addr());
    }
    for e in KEEP_OPEN {
        let dst = sock(e.ip(), e.port);
        match e.protocol {
            Protocol::Tcp => {
                tcp_connect(c0, dst, REACHABLE)
                    .unwrap_or_else(|err| panic!("{dst} ({}): must stay open: {err}", e.what));
            }
            _ => {
                let a = udp_request(c0, dst, b"q", REACHABLE)
                    .unwrap_or_else(|err| panic!("{dst} ({}): must stay open: {err}", e.what));
                assert_eq!(a, b"ok q");
            }
        }
        let x = explain(e);
        assert_eq!(x["verdict"], "passed", "{dst}: {x}");
        assert_eq!(x["action"], "pass", "{dst}: {x}");
    }
    // The extra rule is there too, and drops (its action is the default).
    let x = l
        .cli_json("explain", &["--to", "10.1.2.3:443/tcp"])
        .unwrap();
    assert_eq!(
        (x["verdict"].as_str(), x["action"].as_str()),
        (Some("metadata_blocked"), Some("drop")),
        "{x}"
    );
}

/// Hand-built SYNs from container 0's own port, with its MACs toward
/// docker0: `count` of them to `dst:80`, source address `src`, IP ids from
/// `first_id`.
fn syns(topo: &Topology, src: Ipv4Addr, dst: Ipv4Addr, count: u16, first_id: u16) -> Vec<Vec<u8>> {
    let bridge_mac = mac(topo.host(), "docker0").unwrap();
    let c0_mac = mac(topo.container(0).ns(), "eth0").unwrap();
    (0..count)
        .map(|i| {
            let mut ip = V4::new(dst, 6);
            ip.src = src;
            ip.id = first_id + i;
            let mut f = v4_frame(&ip, &tcp(41000 + i, 80, SYN));
            f[..6].copy_from_slice(&bridge_mac);
            f[6..12].copy_from_slice(&c0_mac);
            f
        })
        .collect()
}

/// TCP resets from `from` to `to` among captured frames.
fn resets(frames: &[Vec<u8>], from: Ipv4Addr, to: Ipv4Addr) -> usize {
    frames
        .iter()
        .filter(|f| {
            f.len() >= 54
                && f[12..14] == [0x08, 0x00]
                && f[23] == 6
                && f[26..30] == from.octets()
                && f[30..34] == to.octets()
                && f[47] & 0x04 != 0
        })
        .count()
}

#[test]
fn a_syn_flood_gets_at_most_the_budget_of_resets() {
    require_privileges!();
    let topo = topology("rjflood");
    let bpffs = BpffsMount::new();
    let (l, _dir) = loader_with(&topo, &bpffs, "[reject]\nrate = \"1/hour\"\nburst = 5\n");
    let c0 = topo.container(0);
    let at_c0 = Capture::start(c0.ns(), "eth0").unwrap();
    let at_cloud = Capture::start(topo.cloud(), "eth0").unwrap();
    let before = counters(&l);
    const N: u16 = 60;
    let frames = syns(&topo, c0.ipv4(), addrs::IMDS_V4, N, 0x5100);
    send_frames(c0.ns(), "eth0", &frames, Layout::Linear).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = resets(&at_c0.frames(), addrs::IMDS_V4, c0.ipv4());
    let after = counters(&l);
    eprintln!("{N} SYNs: {got} resets");
    let out = l.cli("counters", &[] as &[&str]).unwrap();
    eprintln!(
        "$ egress-loader counters\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(got, 5, "the burst of the budget, no more");
    let reached: usize = (0..N).map(|i| at_cloud.v4_with_id(0x5100 + i)).sum();
    assert_eq!(reached, 0, "every SYN dropped");
    assert_eq!(
        replies(&after, "sent") - replies(&before, "sent"),
        5,
        "{after}"
    );
    assert_eq!(
        replies(&after, "suppressed") - replies(&before, "suppressed"),
        u64::from(N) - 5,
        "{after}"
    );
    assert_eq!(
        packets(&after, "metadata_blocked") - packets(&before, "metadata_blocked"),
        u64::from(N)
    );
}

/// Container 0 sends SYNs claiming container 1's address; `config` picks
/// the hook that answers (the veth program by default, the bridge with
/// `attach.endpoints = false`).
fn forged_source(test: &str, config: &str, through_veth: bool) {
    let mut topo = topology(test);
    topo.add_container("docker0").unwrap();
    let bpffs = BpffsMount::new();
    let (l, _dir) = loader_with(&topo, &bpffs, config);
    let (c0, c1) = (topo.container(0), topo.container(1));
    // Which hook answers: c0's veth program once it is attached.
    let veth_attached = || {
        l.cli_json("counters", &[]).is_ok_and(|c| {
            c["endpoints"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["veth"] == c0.host_veth()))
        })
    };
    if through_veth {
        assert!(
            egress_tests::wait_until(Duration::from_secs(10), veth_attached),
            "the endpoint program never reached {}: {}",
            c0.host_veth(),
            l.log()
        );
    } else {
        assert!(
            !veth_attached(),
            "endpoints = false, yet {} has one",
            c0.host_veth()
        );
    }
    let at_c0 = Capture::start(c0.ns(), "eth0").unwrap();
    let at_c1 = Capture::start(c1.ns(), "eth0").unwrap();
    let before = counters(&l);
    let frames = syns(&topo, c1.ipv4(), addrs::IMDS_V4, 3, 0x5200);
    send_frames(c0.ns(), "eth0", &frames, Layout::Linear).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = counters(&l);
    assert_eq!(
        replies(&after, "sent") - replies(&before, "sent"),
        3,
        "{after}"
    );
    assert_eq!(
        resets(&at_c0.frames(), addrs::IMDS_V4, c1.ipv4()),
        3,
        "the resets go back out of the port the SYNs came in on"
    );
    assert_eq!(
        resets(&at_c1.frames(), addrs::IMDS_V4, c1.ipv4()),
        0,
        "the owner of the forged address gets nothing"
    );
}

#[test]
fn a_forged_source_gets_its_reset_only_on_its_own_port() {
    require_privileges!();
    // The veth program answers (endpoints are attached by default).
    forged_source("rjforge", "", true);
}

#[test]
fn a_forged_source_gets_its_reset_only_on_its_own_port_from_the_bridge() {
    require_privileges!();
    // The bridge program answers: its egress forwards by the sender's MAC.
    forged_source("rjforgb", "[attach]\nendpoints = false\n", false);
}

#[test]
fn smtp_over_the_limit_can_be_refused() {
    require_privileges!();
    let topo = topology("rjsmtp");
    let bpffs = BpffsMount::new();
    let smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let (l, _dir) = loader_with(
        &topo,
        &bpffs,
        "[smtp]\nrate = \"1/hour\"\nburst = 2\nover_limit = \"reject\"\n",
    );
    let c0 = topo.container(0).ns();
    for i in 0..2 {
        tcp_connect(c0, sock(addrs::SMTP_V4, 25), REACHABLE)
            .unwrap_or_else(|e| panic!("attempt {i} within the burst: {e}"));
    }
    let t = Instant::now();
    let e = tcp_connect(c0, sock(addrs::SMTP_V4, 25), REACHABLE).expect_err("over the rate");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(t.elapsed() < FIRST_RETRANSMISSION);
    assert!(smtp.wait_accepted(2, REACHABLE));
    assert_eq!(smtp.accepted(), 2);
    let x = l
        .cli_json("explain", &["--to", "198.51.100.25:25/tcp"])
        .unwrap();
    assert_eq!(
        x["verdict"], "smtp_limited",
        "explain sees the spent bucket: {x}"
    );
    assert_eq!(x["action"], "reject", "{x}");
    assert_eq!(x["smtp_bucket"]["tokens"], 0, "{x}");
    let out = l.cli("explain", &["--to", "198.51.100.25:25/tcp"]).unwrap();
    eprintln!(
        "$ egress-loader explain --to 198.51.100.25:25/tcp\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let c = counters(&l);
    assert_eq!(packets(&c, "smtp_limited"), 1, "{c}");
    assert_eq!(replies(&c, "sent"), 1, "{c}");
}

/// The python of the test tools' virtual environment (where `cargo xtask
/// setup --test-deps` installs botocore), found beside kubernetes-validate.
fn test_python() -> Option<std::path::PathBuf> {
    std::env::var_os("EGRESS_KUBERNETES_VALIDATE")
        .map(std::path::PathBuf::from)
        .map(|p| p.with_file_name("python"))
        .filter(|p| p.is_file())
}

/// botocore's instance-metadata credential fetcher, as the AWS SDKs use it
/// (a token PUT, then the role GET, each with a 1 s timeout), from the
/// container: returns (seconds it took, what it printed).
fn botocore_fetch(ns: &egress_tests::NetNs, python: &std::path::Path) -> (f64, String) {
    const SCRIPT: &str = "import time\n\
        from botocore.utils import InstanceMetadataFetcher\n\
        f = InstanceMetadataFetcher(timeout=1, num_attempts=1)\n\
        t = time.monotonic()\n\
        c = f.retrieve_iam_role_credentials()\n\
        print(repr(c))\n\
        print(time.monotonic() - t)\n";
    let out = ns
        .exec_unchecked(&[python.as_os_str(), "-c".as_ref(), SCRIPT.as_ref()])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "botocore: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("botocore printed {text:?}"));
    (secs, text)
}

/// A real SDK client: botocore gives up on the metadata service at once
/// when it is rejected, instead of waiting out its timeouts as it does
/// when the SYNs are dropped.
#[test]
fn botocore_gives_up_at_once() {
    require_privileges!();
    let test = test_name!();
    let Some(python) = test_python() else {
        assert!(
            !egress_devtools::machine::in_ci(),
            "{test}: the test tools' python with botocore not found (cargo xtask setup --test-deps)"
        );
        eprintln!("SKIP {test}: botocore not installed (cargo xtask setup --test-deps)");
        return;
    };
    let topo = topology("rjboto");
    let bpffs = BpffsMount::new();
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    // First the metadata rule as a silent drop (the filter before rejects).
    let (l, dir) = loader_with(
        &topo,
        &bpffs,
        "[[unblock]]\nname = \"metadata\"\n[[block]]\ncidr = \"169.254.169.254/32\"\nexcept_ports = [53]\n",
    );
    let c0 = topo.container(0).ns();
    let (dropped, out) = botocore_fetch(c0, &python);
    eprintln!("botocore against a dropping filter: gave up after {dropped:.3} s: {out}");
    assert!(out.starts_with("{}") || out.starts_with("None"), "{out}");
    // Then the built-in rule, which rejects.
    std::fs::write(dir.join("config.toml"), "").unwrap();
    let r = l.cli("reload", &[] as &[&str]).unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (rejected, out) = botocore_fetch(c0, &python);
    eprintln!("botocore against a rejecting filter: gave up after {rejected:.3} s: {out}");
    assert!(out.starts_with("{}") || out.starts_with("None"), "{out}");
    assert!(
        rejected < 1.0,
        "{rejected} s: at least one of botocore's 1 s timeouts ran out, so a SYN went unanswered"
    );
    assert_eq!(imds.accepted(), 0, "nothing reached the metadata server");
}

/// `counters --json`: the `metadata_blocked` packets counted on each
/// hook: the bridges' (`interfaces[]`) and the endpoints' veths
/// (`endpoints[]`).
fn blocked_per_interface(c: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    let count = |i: &serde_json::Value| {
        i["counters"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "metadata_blocked"))
            .and_then(|x| x["packets"].as_u64())
            .unwrap_or(0)
    };
    let bridges = c["interfaces"].as_array().into_iter().flatten().map(|i| {
        (
            i["interface"].as_str().unwrap_or_default().to_owned(),
            count(i),
        )
    });
    let veths = c["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["veth"].as_str().unwrap_or_default().to_owned(), count(e)));
    bridges.chain(veths).collect()
}

/// The interfaces whose hook counted a blocked packet between two readings.
fn judged_on(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let b = blocked_per_interface(before);
    blocked_per_interface(after)
        .into_iter()
        .filter(|(i, n)| *n > b.get(i).copied().unwrap_or(0))
        .map(|(i, _)| i)
        .collect()
}

/// A real connection from `from`'s namespace to `to`, refused, and
/// `explain --from ADDR` naming the hook that counted it, with the same
/// verdict.
fn refused_and_explained(
    l: &LoaderProcess,
    ns: &egress_tests::NetNs,
    from: IpAddr,
    to: SocketAddr,
) -> serde_json::Value {
    let before = counters(l);
    let r = tcp_connect(ns, to, REACHABLE);
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "{to} from {from}: {r:?}"
    );
    let judged = judged_on(&before, &counters(l));
    let x = l
        .cli_json(
            "explain",
            &["--from", &from.to_string(), "--to", &format!("{to}/tcp")],
        )
        .unwrap_or_else(|e| panic!("explain --from {from}: {e:#}"));
    let out = l
        .cli(
            "explain",
            &["--from", &from.to_string(), "--to", &format!("{to}/tcp")],
        )
        .unwrap();
    eprintln!(
        "$ egress-loader explain --from {from} --to {to}/tcp\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        (x["verdict"].as_str(), x["action"].as_str()),
        (Some("metadata_blocked"), Some("reject")),
        "{x}"
    );
    // The hook explain names is the one whose counter the packet went to.
    assert_eq!(judged.len(), 1, "judged once, on one hook: {judged:?}");
    assert_eq!(x["via"].as_str(), Some(judged[0].as_str()), "{x}");
    x
}

/// `explain --from ADDRESS` names the hook real traffic meets: the
/// container's veth with its program; the host's own address, and one in
/// no subnet of the host, judged by none (and the host's traffic passes).
#[test]
fn explain_names_the_hook_real_traffic_meets() {
    require_privileges!();
    let topo = topology("rjhook");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let _imds6 = tcp_server(topo.cloud(), addrs::IMDS_V6, 80).unwrap();
    let mut l = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut l, "docker0", READY_TIMEOUT);
    wait_attached(&mut l, c0.host_veth(), READY_TIMEOUT);

    for (from, to) in [
        (IpAddr::from(c0.ipv4()), sock(addrs::IMDS_V4, 80)),
        (c0.ipv6().into(), sock(addrs::IMDS_V6, 80)),
    ] {
        let x = refused_and_explained(&l, c0.ns(), from, to);
        assert_eq!(x["hook_kind"], "veth", "{x}");
        assert_eq!(x["via"], c0.host_veth(), "{x}");
        assert_eq!(x["endpoint"]["veth"], c0.host_veth(), "{x}");
    }

    // The host's own traffic: no hook judges it, and it connects.
    let route = topo
        .host()
        .exec_stdout(&["ip", "-4", "route", "get", &addrs::IMDS_V4.to_string()])
        .unwrap();
    let src = route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .unwrap_or_else(|| panic!("no src in {route:?}"))
        .to_owned();
    assert_http_ok(topo.host(), addrs::IMDS_V4, 80);
    let x = l
        .cli_json(
            "explain",
            &["--from", &src, "--to", "169.254.169.254:80/tcp"],
        )
        .unwrap();
    assert_eq!(
        (
            x["hook_kind"].as_str(),
            x["verdict"].as_str(),
            x["action"].as_str()
        ),
        (Some("unfiltered"), Some("not_judged"), Some("pass")),
        "{x}"
    );
    assert_eq!(x["would"], "reject", "what the policy says: {x}");
    let out = l
        .cli(
            "explain",
            &["--from", &src, "--to", "169.254.169.254:80/tcp"],
        )
        .unwrap();
    eprintln!(
        "$ egress-loader explain --from {src} --to 169.254.169.254:80/tcp\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An address in no subnet of the host: no container sends from it.
    let x = l
        .cli_json(
            "explain",
            &["--from", "10.250.0.1", "--to", "169.254.169.254:80/tcp"],
        )
        .unwrap();
    assert_eq!(x["hook_kind"], "unfiltered", "{x}");
    assert!(
        x["hook_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no interface of this host")),
        "{x}"
    );
}

/// Before a container's veth has the endpoint program (here: never,
/// `--no-endpoints`), the bridge judges it by source address, and
/// `explain` says so.
#[test]
fn explain_names_the_bridge_before_the_veth_is_attached() {
    require_privileges!();
    let topo = topology("rjhookbr");
    let bpffs = BpffsMount::new();
    let c0 = topo.container(0);
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let mut l = start_loader(&topo, &bpffs, &["--no-endpoints"]);
    wait_attached(&mut l, "docker0", READY_TIMEOUT);
    let x = refused_and_explained(&l, c0.ns(), c0.ipv4().into(), sock(addrs::IMDS_V4, 80));
    assert_eq!(
        (x["hook_kind"].as_str(), x["via"].as_str()),
        (Some("bridge"), Some("docker0")),
        "{x}"
    );
    assert!(x.get("endpoint").is_none(), "{x}");
}
