//! Endpoints on a real Docker engine (in its own namespaces), with real TCP
//! clients in the containers: an exception's own SMTP budget is its
//! containers' alone (nobody else charges it, it charges nobody else, a
//! forger of its address is charged to the forger), `smtp = "unlimited"` is
//! never limited; and a container that is gone leaves the per-container
//! metrics while the host's totals keep its counts.

use std::{net::Ipv4Addr, time::Duration};

use crate::common::*;
use egress_tests::docker::start_docker;
use egress_tests::{
    BpffsMount, LoaderProcess, addrs, docker::engine::DockerHost, require_privileges,
    traffic::tcp_server, unique_suffix, wait_until,
};
use serde_json::Value;

const RELAY: &str = "role=mail-relay";
const BULK: &str = "role=bulk";

fn start_loader_on(dh: &DockerHost, bpffs: &BpffsMount, extra: &[&str]) -> LoaderProcess {
    let host = dh.docker_host();
    let mut args = vec![
        "--rescan",
        RESCAN,
        "--iface",
        "docker0",
        "--events-socket",
        "none",
        "--docker-host",
        &host,
    ];
    args.extend_from_slice(extra);
    let mut loader = LoaderProcess::run_in_ns(dh.host(), &pin_dir(bpffs), &args)
        .unwrap_or_else(|e| panic!("starting egress-loader: {e:#}"));
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    loader
}

/// `n` SMTP connection attempts in a row from inside container `name`
/// (busybox nc, 2 s to connect): which of them connected, in order.
fn smtp_attempts(dh: &DockerHost, name: &str, n: usize) -> Vec<bool> {
    let script = format!(
        "for i in $(seq 1 {n}); do if nc -w 2 {} 25 </dev/null; then echo OK$i; else echo NO$i; fi; done",
        addrs::SMTP_V4
    );
    let out = dh
        .docker_output(
            &["exec", name, "sh", "-c", &script],
            Duration::from_secs(10 + 3 * n as u64),
        )
        .unwrap_or_else(|e| panic!("docker exec {name}: {e:#}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (1..=n)
        .map(|i| {
            let ok = text.lines().any(|l| l.trim() == format!("OK{i}"));
            let no = text.lines().any(|l| l.trim() == format!("NO{i}"));
            assert!(
                ok != no,
                "{name}, attempt {i}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ok
        })
        .collect()
}

/// Global SMTP budget 2/hour; two mail relays (an exception: 3/hour each,
/// their own), a bulk sender (`smtp = "unlimited"`), two ordinary
/// containers. Real `nc` clients connect to a real SMTP sink.
#[test]
fn an_exceptions_own_smtp_budget_is_charged_by_nobody_else() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let dh = start_docker("epsmtp");
    let smtp = tcp_server(dh.cloud(), addrs::SMTP_V4, 25).unwrap();
    let dir = TempDir::new("epsmtp");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[smtp]\nrate = \"1/hour\"\nburst = 2\n\n\
             [[exception]]\nlabel = \"{RELAY}\"\nsmtp_rate = \"1/hour\"\nsmtp_burst = 3\n\n\
             [[exception]]\nlabel = \"{BULK}\"\nsmtp = \"unlimited\"\n"
        ),
    )
    .unwrap();
    let s = unique_suffix();
    let (relay1, relay2, bulk, a, b) = (
        format!("epr1-{s}"),
        format!("epr2-{s}"),
        format!("epbk-{s}"),
        format!("epa-{s}"),
        format!("epb-{s}"),
    );
    let loader = start_loader_on(
        &dh,
        &bpffs,
        &["--config", config.to_str().unwrap(), "--no-watch-config"],
    );
    let relay1_ip = run(&dh, &relay1, &[RELAY]);
    run(&dh, &relay2, &[RELAY]);
    run(&dh, &bulk, &[BULK]);
    run(&dh, &a, &[]);
    run(&dh, &b, &[]);
    let budgets = [
        (&relay1, "own"),
        (&relay2, "own"),
        (&bulk, "unlimited"),
        (&a, "shared"),
        (&b, "shared"),
    ];
    let ok = wait_until(Duration::from_secs(15), || {
        let c = counters(&loader);
        budgets
            .iter()
            .all(|(n, smtp)| endpoint_of(&c, n).is_some_and(|e| e["smtp"] == *smtp))
    });
    assert!(ok, "endpoints: {}\n{}", counters(&loader), loader.log());

    // relay2 spends its own burst (3): the shared bucket stays full...
    assert_eq!(
        smtp_attempts(&dh, &relay2, 4),
        [true, true, true, false],
        "relay2: its own burst of 3, then over its own rate"
    );
    // ... so an ordinary container still gets the shared burst (2), and
    // empties it.
    assert_eq!(
        smtp_attempts(&dh, &a, 3),
        [true, true, false],
        "a: the shared burst, untouched by relay2"
    );
    // b forges relay1's address: charged to b's (the shared, empty) bucket,
    // judged and counted as b's.
    let b_limited = endpoint_count(&counters(&loader), &b, "smtp_limited");
    dh.forge_syns(&b, relay1_ip, addrs::SMTP_V4, 25, 43000, 5)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = counters(&loader);
    assert_eq!(
        endpoint_count(&c, &b, "smtp_limited") - b_limited,
        5,
        "the forged SYNs are b's, over the shared rate: {c}"
    );
    assert_eq!(endpoint_count(&c, &relay1, "smtp_allowed"), 0, "{c}");
    assert_eq!(endpoint_count(&c, &relay1, "smtp_limited"), 0, "{c}");
    // relay1 gets its whole own burst with the shared bucket empty and its
    // address forged five times.
    assert_eq!(
        smtp_attempts(&dh, &relay1, 4),
        [true, true, true, false],
        "relay1: its own burst, whatever the shared bucket and the forger did"
    );
    // The shared bucket is still empty for everyone else.
    assert_eq!(smtp_attempts(&dh, &b, 1), [false], "b: the shared bucket");
    // unlimited: never limited, with the shared bucket empty.
    assert_eq!(
        smtp_attempts(&dh, &bulk, 8),
        [true; 8],
        "bulk: smtp = \"unlimited\""
    );
    let c = counters(&loader);
    assert_eq!(endpoint_count(&c, &bulk, "smtp_limited"), 0, "{c}");
    assert_eq!(endpoint_count(&c, &relay1, "smtp_allowed"), 3, "{c}");
    assert_eq!(endpoint_count(&c, &relay2, "smtp_allowed"), 3, "{c}");
    assert_eq!(endpoint_count(&c, &a, "smtp_allowed"), 2, "{c}");
    // 3 + 3 + 2 real connections, and the bulk sender's 8; no forged SYN
    // got a connection anywhere.
    assert_eq!(smtp.accepted(), 16, "the SMTP sink's connections");
    for n in [&relay1, &relay2, &bulk, &a, &b] {
        let _ = dh.docker(&["rm", "-f", n]);
    }
}

const METRICS_PORT: u16 = 9185;

/// The value of the series `name{labels}` whose label set contains every one
/// of `labels` (`key="value"` each).
fn series(text: &str, name: &str, labels: &[String]) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x.as_str())))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A container that is gone is dropped from `/metrics` (and from
/// `counters`); the host's totals keep what it was counted for.
#[test]
fn a_gone_containers_series_leave_the_metrics_and_the_totals_keep_its_counts() {
    require_privileges!(docker);
    let bpffs = BpffsMount::new();
    let dh = start_docker("epgone");
    let _imds = tcp_server(dh.cloud(), addrs::IMDS_V4, 80).unwrap();
    let addr = format!("127.0.0.1:{METRICS_PORT}");
    let loader = start_loader_on(&dh, &bpffs, &["--metrics-addr", &addr]);
    let s = unique_suffix();
    let (gone, stays) = (format!("epg-{s}"), format!("eps-{s}"));
    run(&dh, &gone, &[]);
    run(&dh, &stays, &[]);
    let named = |n: &str| {
        wait_until(Duration::from_secs(15), || {
            endpoint_of(&counters(&loader), n).is_some()
        })
    };
    assert!(named(&gone) && named(&stays), "{}", counters(&loader));
    // Each asks the metadata service three times: blocked at its veth.
    for n in [&gone, &stays] {
        let out = dh
            .docker_output(
                &[
                    "exec",
                    n.as_str(),
                    "sh",
                    "-c",
                    "for i in 1 2 3; do nc -w 1 169.254.169.254 80 </dev/null; done; echo done",
                ],
                Duration::from_secs(20),
            )
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    }
    let c = counters(&loader);
    let veth_of = |c: &Value, n: &str| -> String {
        endpoint_of(c, n).unwrap()["veth"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (gone_veth, stays_veth) = (veth_of(&c, &gone), veth_of(&c, &stays));
    let gone_blocked = endpoint_count(&c, &gone, "metadata_blocked");
    assert!(gone_blocked >= 3, "{c}");
    let text = metrics_text(dh.host(), METRICS_PORT);
    let of_gone = [format!("container=\"{gone}\"")];
    let blocked = [
        format!("container=\"{gone}\""),
        "verdict=\"metadata_blocked\"".to_owned(),
    ];
    let g = series(&text, "egress_endpoint_packets_total", &blocked);
    assert_eq!(g.len(), 1, "{g:?}\n{text}");
    assert_eq!(g[0].1 as u64, gone_blocked, "{text}");
    assert!(g[0].0.contains(&format!("veth=\"{gone_veth}\"")), "{g:?}");
    let total = |text: &str| {
        series(
            text,
            "egress_host_packets_total",
            &["verdict=\"metadata_blocked\"".to_owned()],
        )
        .first()
        .map(|s| s.1 as u64)
        .unwrap_or_else(|| panic!("no egress_host_packets_total: {text}"))
    };
    let total_before = total(&text);
    assert!(total_before >= gone_blocked, "{text}");
    let counters_total = packets(&c, "metadata_blocked");

    dh.docker(&["rm", "-f", &gone]).unwrap();
    let dropped = wait_until(Duration::from_secs(10), || {
        let t = metrics_text(dh.host(), METRICS_PORT);
        series(&t, "egress_endpoint_packets_total", &of_gone).is_empty()
            && series(&t, "egress_endpoint_bytes_total", &of_gone).is_empty()
    });
    let text = metrics_text(dh.host(), METRICS_PORT);
    assert!(dropped, "the gone container's series stay:\n{text}");
    assert!(
        !text.contains(&format!("veth=\"{gone_veth}\"")),
        "its veth's series stay:\n{text}"
    );
    // The other container's series stay, and the totals lose nothing.
    assert!(
        !series(
            &text,
            "egress_endpoint_packets_total",
            &[format!("container=\"{stays}\"")]
        )
        .is_empty(),
        "{text}"
    );
    assert_eq!(total(&text), total_before, "{text}");
    // Bounded: the endpoint series are the live container's alone (a
    // stopped container's entry that lost its name, or its veth, would
    // still be a series of its own).
    let veths: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("egress_endpoint_packets_total{"))
        .filter_map(|l| {
            let rest = l.split("veth=\"").nth(1)?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect();
    assert_eq!(
        veths,
        std::collections::BTreeSet::from([stays_veth.clone()]),
        "{text}"
    );
    let c = counters(&loader);
    assert!(endpoint_of(&c, &gone).is_none(), "{c}");
    let endpoints = c["endpoints"].as_array().map(Vec::len);
    assert_eq!(endpoints, Some(1), "only the running container's: {c}");
    assert_eq!(packets(&c, "metadata_blocked"), counters_total, "{c}");
    let _ = dh.docker(&["rm", "-f", &stays]);
}

fn run(dh: &DockerHost, name: &str, labels: &[&str]) -> Ipv4Addr {
    dh.run_sleeper(name, labels)
        .unwrap_or_else(|e| panic!("{e:#}"))
}
