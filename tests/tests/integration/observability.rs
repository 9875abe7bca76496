//! Observability with real traffic: `/metrics` checked against `counters
//! --json`, `verify` on a filtered and an unfiltered bridge, drop events
//! followed with `egress-loader events`, `counters --watch`, and (with a real
//! Docker engine in its own namespace) events that name the container.
//!
//! Every loader gets its own events socket and, where it serves metrics, a
//! port on the loopback of the topology's own host namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use egress_tests::docker::{DockerHost, images};
use egress_tests::traffic::{http_get, tcp_connect, tcp_server, udp_send};
use egress_tests::{
    BpffsMount, EventsSocket, LoaderProcess, NetNs, addrs, loader_bin, require_privileges,
    unique_suffix, wait_until,
};
use serde_json::Value;

/// Where each test's loader serves metrics, inside its own host namespace.
const METRICS_PORT: u16 = 9184;

fn sock(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// One sample of the OpenMetrics text.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `name{k="v",...} value` lines; comments and `# EOF` skipped.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels include every pair of `with`.
fn metric(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn fetch_metrics(host: &NetNs) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match http_get(
            host,
            Ipv4Addr::LOCALHOST,
            METRICS_PORT,
            "/metrics",
            Duration::from_secs(3),
        ) {
            Ok(body) => return body,
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET /metrics in netns {}: {last}", host.name());
}

/// `egress-loader ARGS...` in `ns`, killed after `timeout`.
fn loader_cli_timeout(ns: &NetNs, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = ns.command(loader_bin().unwrap());
    cmd.args(args);
    egress_tests::docker::engine::output_with_timeout(&mut cmd, timeout)
        .unwrap_or_else(|e| panic!("egress-loader {}: {e:#}", args.join(" ")))
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn metrics_match_counters_after_traffic() {
    require_privileges!();
    let topo = topology_with("omet", 1);
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("events");
    let c0 = topo.container(0).ns();
    let veth = topo.container(0).host_veth();
    let _imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let smtp = tcp_server(topo.cloud(), addrs::SMTP_V4, 25).unwrap();
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--events-socket",
            events.arg(),
            "--metrics-addr",
            &metrics_addr,
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);

    // Real traffic: 2 metadata attempts (dropped), 7 SMTP SYNs against the
    // default burst of 5 (5 allowed, 2 dropped), ordinary HTTP (passed).
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    assert_http_refused(c0, addrs::ECS_V4, 80);
    for i in 0..7 {
        let r = tcp_connect(c0, sock(addrs::SMTP_V4, 25), DROPPED);
        assert_eq!(r.is_ok(), i < 5, "SMTP attempt {}: {r:?}", i + 1);
    }
    assert!(smtp.wait_accepted(5, REACHABLE));
    for _ in 0..3 {
        assert_http_ok(c0, addrs::SMTP_V4, 8080);
    }

    let before = counters(&loader);
    let body = fetch_metrics(topo.host());
    let after = counters(&loader);
    let m = parse_metrics(&body);
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text:\n{body}");

    // Host totals are `counters --json`: exact for the verdicts only this
    // test produced, between two readings for `passed` (IPv6 neighbour
    // discovery on the bridge can add a packet at any time).
    for name in [
        "metadata_blocked",
        "smtp_allowed",
        "smtp_limited",
        "passed",
        "evasive_dropped",
        "excepted",
    ] {
        let got = metric(&m, "egress_host_packets_total", &[("verdict", name)])
            .unwrap_or_else(|| panic!("no egress_host_packets_total{{verdict={name}}}:\n{body}"))
            as u64;
        let (lo, hi) = (packets(&before, name), packets(&after, name));
        assert!(
            lo <= got && got <= hi,
            "{name}: /metrics says {got}, counters --json {lo}..{hi}\n{body}"
        );
        // docker0 is the only filtered bridge and c0 its only container:
        // what the bridge judged (before c0's veth was attached) and what
        // c0's veth judged carry all of it.
        // (docker0's series exists once it judged a packet.)
        let iface = metric(
            &m,
            "egress_packets_total",
            &[("verdict", name), ("interface", "docker0")],
        )
        .unwrap_or(0.0) as u64;
        let endpoint = metric(
            &m,
            "egress_endpoint_packets_total",
            &[("verdict", name), ("veth", veth), ("container", "")],
        )
        .unwrap_or_else(|| panic!("no egress_endpoint_packets_total for {name} on {veth}:\n{body}"))
            as u64;
        assert!(
            lo <= iface + endpoint && iface + endpoint <= hi,
            "{name} on docker0 {iface} + on {veth} {endpoint}, counters {lo}..{hi}\n{body}"
        );
    }
    assert_eq!(packets(&after, "metadata_blocked"), 2, "{after}");
    assert_eq!(packets(&after, "smtp_allowed"), 5, "{after}");
    assert_eq!(packets(&after, "smtp_limited"), 2, "{after}");
    let bytes = |c: &Value, name: &str| {
        c["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        metric(
            &m,
            "egress_host_bytes_total",
            &[("verdict", "metadata_blocked")]
        ),
        Some(bytes(&after, "metadata_blocked") as f64),
        "{body}"
    );
    // The same per-interface and per-endpoint numbers in `counters --json`
    // (docker0 is listed once it judged a packet).
    let d0_blocked = after["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["interface"] == "docker0"))
        .map(|d0| d0["counters"][0]["packets"].as_u64().unwrap())
        .unwrap_or(0);
    let e0 = after["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["veth"] == veth))
        .unwrap_or_else(|| panic!("no {veth} in counters --json endpoints: {after}"));
    assert_eq!(
        d0_blocked + e0["counters"][0]["packets"].as_u64().unwrap(),
        2,
        "metadata_blocked on docker0 and on {veth}: {after}"
    );
    // Per rule, events, health.
    assert_eq!(
        metric(
            &m,
            "egress_rule_packets_total",
            &[("rule", "169.254.169.254/32")]
        ),
        Some(rule_packets(&after, "169.254.169.254/32") as f64),
        "{body}"
    );
    assert_eq!(
        metric(
            &m,
            "egress_rule_packets_total",
            &[("rule", "169.254.170.2/32")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&m, "egress_events_lost_total", &[]),
        Some(after["events"]["lost"].as_u64().unwrap() as f64),
        "{body}"
    );
    assert_eq!(
        metric(&m, "egress_events_suppressed_total", &[]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        metric(&m, "egress_attached_interfaces", &[]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&m, "egress_interface_attached", &[("interface", "docker0")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&m, "egress_loader_healthy", &[]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(metric(&m, "egress_dry_run", &[]), Some(0.0), "{body}");
    let started = metric(&m, "egress_loader_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now && now - started < 600.0, "{body}");
    // --no-docker: no engine gauge at all.
    assert!(metric(&m, "egress_docker_engine_connected", &[]).is_none());
    // Health endpoint agrees.
    let health = http_get(
        topo.host(),
        Ipv4Addr::LOCALHOST,
        METRICS_PORT,
        "/healthz",
        REACHABLE,
    )
    .unwrap();
    assert_eq!(health, "ok\n");
    println!(
        "---- /metrics excerpt ----\n{}",
        body.lines()
            .filter(|l| l.contains("metadata_blocked")
                || l.starts_with("egress_events")
                || l.starts_with("egress_attached")
                || l.starts_with("egress_loader_healthy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn verify_passes_on_filtered_bridge_fails_on_unfiltered() {
    require_privileges!();
    let mut topo = topology_with("overif", 1);
    topo.add_bridge("br-unf", "172.18.0.0/16")
        .unwrap_or_else(|e| panic!("second bridge: {e:#}"));
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("events");
    // The probes carry TTL 1: even through the unfiltered bridge nothing
    // reaches the cloud namespace.
    let imds = tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--no-docker",
            "--events-socket",
            events.arg(),
            "--iface",
            "docker0",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let links_before = topo.host().links().unwrap();

    // Every attached bridge: docker0 only.
    let out = loader.cli("verify", &[] as &[&str]).unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("---- verify (attached bridges) ----\n{report}");
    assert!(
        out.status.success(),
        "verify failed on docker0: {}",
        text(&out)
    );
    assert!(report.contains("PASS  docker0"), "{}", text(&out));
    assert!(
        report.contains("refused (rejected by the filter); metadata_blocked +1"),
        "{report}"
    );
    assert!(report.contains("all 1 bridge(s) filter"), "{report}");

    // Both bridges, one unfiltered: exit status 1, naming it.
    let out = loader
        .cli(
            "verify",
            &["--iface", "docker0", "--iface", "br-*", "--smtp-syns", "7"],
        )
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("---- verify (docker0 and br-unf) ----\n{report}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(report.contains("PASS  docker0"), "{report}");
    assert!(report.contains("FAIL  br-unf"), "{report}");
    assert!(
        report.contains("the filter is not attached to br-unf"),
        "{report}"
    );
    assert!(report.contains("GOT THROUGH"), "{report}");
    assert!(report.contains("FAILED: br-unf"), "{report}");

    // The same as JSON, with the counts.
    let out = loader
        .cli(
            "verify",
            &["--iface", "docker0", "--iface", "br-unf", "--json"],
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let bridge = |name: &str| {
        v["bridges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["interface"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .clone()
    };
    let d0 = bridge("docker0");
    assert_eq!(d0["problems"], serde_json::json!([]), "{v}");
    // The default metadata rule rejects: the probe's reset can only come
    // from the filter (a TTL-1 SYN never reaches a server).
    assert_eq!(d0["metadata"]["answer"]["outcome"], "rejected", "{v}");
    assert_eq!(d0["metadata"]["metadata_blocked"], 1, "{v}");
    assert_eq!(d0["smtp"]["sent"], 1, "{v}");
    // The per-endpoint path: the running loader attached its probe port.
    assert_eq!(d0["endpoint"]["attached"], true, "{v}");
    assert_eq!(d0["endpoint"]["expected"], true, "{v}");
    assert_eq!(d0["endpoint"]["answer"]["outcome"], "rejected", "{v}");
    assert_eq!(d0["endpoint"]["metadata_blocked"], 1, "{v}");
    let unf = bridge("br-unf");
    assert_eq!(unf["attached"], false, "{v}");
    assert_eq!(unf["metadata"]["answer"]["outcome"], "answered", "{v}");
    assert_eq!(unf["metadata"]["metadata_blocked"], 0, "{v}");

    // The SMTP burst of the second run: 7 SYNs on docker0 all counted, and
    // the bucket (5, one spent by the first run) refused at least 2.
    let c = counters(&loader);
    let smtp = packets(&c, "smtp_allowed") + packets(&c, "smtp_limited");
    assert_eq!(
        smtp,
        1 + 7 + 1,
        "three verify runs sent 9 SMTP SYNs on docker0: {c}"
    );
    assert!(packets(&c, "smtp_limited") >= 2, "{c}");
    // One metadata SYN per run through the bridge's backstop probe port,
    // and one through its endpoint probe port.
    assert_eq!(packets(&c, "metadata_blocked"), 3 + 3, "{c}");

    // Nothing left behind, nothing reached the cloud.
    assert_eq!(imds.accepted(), 0, "a probe reached the metadata server");
    let links_after = topo.host().links().unwrap();
    assert_eq!(links_before, links_after, "verify left interfaces behind");
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}

#[test]
fn verify_fails_without_a_filter() {
    require_privileges!();
    let topo = topology_with("ovnone", 0);
    let bpffs = BpffsMount::new();
    let pins = pin_dir(&bpffs);
    let pins = pins.to_str().unwrap();
    // No loader ever ran here: nothing to verify is an error, not a pass.
    let out = loader_cli_timeout(
        topo.host(),
        &["verify", "--pin-dir", pins],
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no filter is loaded"),
        "{}",
        text(&out)
    );
}

/// Repeats `attempt` until an event that satisfies `want` arrives.
fn wait_event(
    rx: &mpsc::Receiver<Value>,
    timeout: Duration,
    mut attempt: impl FnMut(),
    want: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        attempt();
        while let Ok(v) = rx.recv_timeout(Duration::from_millis(300)) {
            if want(&v) {
                return Some(v);
            }
        }
    }
    None
}

#[test]
fn events_follow_drops_with_source_address() {
    require_privileges!();
    let topo = topology_with("oevt", 2);
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("events");
    // An engine that is not there: events degrade to addresses, said once.
    let missing = format!("unix:///nonexistent-{}/docker.sock", unique_suffix());
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--events-socket", events.arg(), "--docker-host", &missing],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let (_client, rx) = follow_events(topo.host(), &events);

    let c1 = topo.container(1);
    let event = wait_event(
        &rx,
        Duration::from_secs(20),
        || {
            let _ = tcp_connect(c1.ns(), sock(addrs::IMDS_V4, 80), DROPPED);
        },
        |v| v["verdict"] == "metadata_blocked",
    )
    .unwrap_or_else(|| panic!("no metadata_blocked event; loader log:\n{}", loader.log()));
    println!("---- event ----\n{event}");
    assert_eq!(event["src"], c1.ipv4().to_string(), "{event}");
    assert_eq!(event["dst"], "169.254.169.254", "{event}");
    assert_eq!(event["dport"], 80, "{event}");
    assert_eq!(event["protocol"], "tcp", "{event}");
    // Judged by c1's veth program, or by the bridge if that was not
    // attached yet: the event names the hook, and the endpoint with it.
    if event["interface"] == c1.host_veth() {
        assert_eq!(event["endpoint"]["veth"], c1.host_veth(), "{event}");
    } else {
        assert_eq!(event["interface"], "docker0", "{event}");
        assert!(event.get("endpoint").is_none(), "{event}");
    }
    assert_eq!(event["rule"], "169.254.169.254/32", "{event}");
    // The built-in rule rejects: the container got a reset.
    assert_eq!(event["action"], "reject", "{event}");
    assert_eq!(event["reply"], "sent", "{event}");
    assert!(event.get("container").is_none(), "no engine, yet: {event}");

    // An SMTP SYN over the rate from the other container, over IPv6.
    let c0 = topo.container(0);
    let smtp_event = wait_event(
        &rx,
        Duration::from_secs(20),
        || {
            let _ = tcp_connect(c0.ns(), sock(addrs::SMTP_V6, 25), DROPPED);
        },
        |v| v["verdict"] == "smtp_limited",
    )
    .unwrap_or_else(|| panic!("no smtp_limited event; loader log:\n{}", loader.log()));
    assert_eq!(smtp_event["src"], c0.ipv6().to_string(), "{smtp_event}");
    assert_eq!(smtp_event["dport"], 25, "{smtp_event}");

    // The loader writes the same lines to stdout, and said once that no
    // engine answered.
    let log = loader.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"verdict\":\"metadata_blocked\"")
                && l.contains(&c1.ipv4().to_string())),
        "{log}"
    );
    assert_eq!(
        log.matches("no Docker engine at").count(),
        1,
        "the missing engine must be reported exactly once:\n{log}"
    );
}

#[test]
fn counters_watch_prints_rates() {
    require_privileges!();
    let topo = topology_with("owatch", 1);
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("events");
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--no-docker", "--events-socket", events.arg()],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let pins = pin_dir(&bpffs);
    let pins = pins.to_str().unwrap().to_owned();

    // Traffic while it watches: UDP datagrams (passed) for ~2 s.
    let c0 = topo.container(0).ns();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = udp_send(c0, sock(addrs::SMTP_V4, 9999), b"tick", 20);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let out = loader_cli_timeout(
            topo.host(),
            &[
                "counters",
                "--pin-dir",
                &pins,
                "--watch",
                "--interval",
                "0.5",
                "--count",
                "4",
            ],
            Duration::from_secs(20),
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    });
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("---- counters --watch ----\n{stdout}");
    // Four frames, no terminal escape codes into a pipe, rates after the first.
    assert_eq!(stdout.matches("pkts/s").count(), 4, "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout}");
    let passed_rates: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" passed ") && l.contains("PASS"))
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(passed_rates.len(), 4, "{stdout}");
    assert_eq!(
        passed_rates[0], "-",
        "no rate before two readings: {stdout}"
    );
    assert!(
        passed_rates[1..].iter().any(|r| *r != "0" && *r != "-"),
        "no packets/s shown for passed traffic: {stdout}"
    );
}

#[test]
fn events_name_real_containers() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let events = EventsSocket::new("events");
    let dh = DockerHost::start("oedk").unwrap_or_else(|e| panic!("starting Docker: {e:#}"));
    images::build_busybox_image(&dh).unwrap_or_else(|e| panic!("busybox image: {e:#}"));
    let mut loader = LoaderProcess::run_in_ns(
        dh.host(),
        &pin_dir(&bpffs),
        &[
            "--rescan",
            RESCAN,
            "--iface",
            "docker0",
            "--events-socket",
            events.arg(),
            "--docker-host",
            &dh.docker_host(),
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS_PORT}"),
        ],
    )
    .unwrap_or_else(|e| panic!("starting egress-loader: {e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    assert!(
        wait_until(Duration::from_secs(20), || loader
            .log()
            .contains("drop events name the container")),
        "the loader did not reach the engine:\n{}",
        loader.log()
    );
    let (_client, rx) = follow_events(dh.host(), &events);

    // A container that keeps asking the metadata service.
    let name = format!("obs-{}", unique_suffix());
    dh.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        images::BUSYBOX_IMAGE,
        "sh",
        "-c",
        "while true; do nc -w 1 169.254.169.254 80 </dev/null >/dev/null 2>&1; sleep 0.5; done",
    ])
    .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
    let ip = dh
        .docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &name,
        ])
        .unwrap();
    let event = wait_event(
        &rx,
        Duration::from_secs(30),
        || {},
        |v| {
            eprintln!("event: {v}");
            v["verdict"] == "metadata_blocked" && v["container"]["name"] == name.as_str()
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "no event naming {name} ({ip}); counters: {}\nloader log:\n{}",
            counters(&loader),
            loader.log()
        )
    });
    println!("---- event from a real container ----\n{event}");
    assert_eq!(event["src"], ip.as_str(), "{event}");
    // Judged on the container's own veth: the kernel's word for the sender.
    let veth = event["endpoint"]["veth"].as_str().unwrap_or_default();
    assert!(veth.starts_with("veth"), "{event}");
    assert_eq!(event["interface"], veth, "{event}");
    assert_eq!(event["identified_by"], "veth", "{event}");
    assert_eq!(
        event["endpoint"]["container"]["name"],
        name.as_str(),
        "{event}"
    );
    assert_eq!(event["container"]["network"], "bridge", "{event}");
    assert_eq!(
        event["container"]["image"],
        images::BUSYBOX_IMAGE,
        "{event}"
    );
    let id = dh
        .docker(&["inspect", "--format", "{{.Id}}", &name])
        .unwrap();
    assert_eq!(event["container"]["id"], &id[..12], "{event}");

    // `explain --from CONTAINER`: the engine gives the container's address.
    let x = loader
        .cli_json(
            "explain",
            &[
                "--from",
                &name,
                "--docker-host",
                &dh.docker_host(),
                "--to",
                "169.254.169.254:80/tcp",
            ],
        )
        .unwrap_or_else(|e| panic!("explain --from {name}: {e:#}"));
    assert_eq!(x["from"], ip.as_str(), "{x}");
    assert_eq!(x["verdict"], "metadata_blocked", "{x}");
    assert_eq!(x["action"], "reject", "{x}");
    // The hook it names is the one that judged the container's packets.
    assert_eq!(x["hook_kind"], "veth", "{x}");
    assert_eq!(x["via"], event["interface"], "{x}");
    assert_eq!(x["container"], name.as_str(), "{x}");
    assert_eq!(x["endpoint"]["veth"], event["interface"], "{x}");

    // `verify` on a bridge Docker made, next to Docker's iptables rules.
    let out = loader.cli("verify", &[] as &[&str]).unwrap();
    assert!(
        out.status.success(),
        "verify on Docker's docker0: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PASS  docker0"),
        "{}",
        text(&out)
    );

    // The engine's event stream keeps the map current: the container's
    // address is known while it runs and forgotten once it is removed.
    let known = || {
        let m = parse_metrics(&fetch_metrics(dh.host()));
        assert_eq!(metric(&m, "egress_docker_engine_connected", &[]), Some(1.0));
        metric(&m, "egress_docker_known_addresses", &[]).unwrap_or(-1.0)
    };
    assert!(known() >= 1.0);
    dh.docker(&["rm", "-f", &name]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || known() == 0.0),
        "the removed container's address is still mapped"
    );
    assert!(loader.is_running(), "loader died:\n{}", loader.log());
}
