//! Upgrades without a gap, and downgrades refused (egress-loader's
//! `kernel::layout`): a loader that finds the pins of an older map layout
//! migrates them in place while a probe retries the metadata address every
//! 50 ms; one that finds a newer layout changes nothing.
//!
//! The older layout is the one every loader before numbered layouts made:
//! maps under `<pin dir>/maps/`, links under `<pin dir>/links/`. The test
//! makes it from a real run (its maps directory renamed to `maps`, the
//! program in the links still using them) and pins, under one of the
//! current names, a map of another size, as a release that changed that map
//! would have.

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::common::*;
use aya::maps::MapInfo;
use egress_ebpf_common::maps::{COUNTERS, IFACE_CAPACITY, IFACE_COUNTERS};
use egress_loader::kernel::pins::{LAYOUT_VERSION, PinDir};
use egress_tests::{
    BpffsMount, NetNs, addrs, loader_bin, require_privileges, topology::Topology, traffic,
};

/// Every path below the pin dir (relative, sorted).
fn listing(bpffs: &BpffsMount) -> Vec<String> {
    bpffs
        .list()
        .unwrap()
        .into_iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("egress"))
        .collect()
}

/// A map pinned at `path` with `bpftool map create`.
fn pin_map(path: &Path, kind: &str, key: u32, value: u32, entries: u32, name: &str) {
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args([
            "type",
            kind,
            "key",
            &key.to_string(),
            "value",
            &value.to_string(),
        ])
        .args(["entries", &entries.to_string(), "name", name])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map create: {}", stderr(&out));
}

fn loader_once(ns: &NetNs, args: &[&str]) -> Output {
    let mut cmd = ns.command("timeout");
    cmd.arg("20").arg(loader_bin().unwrap()).args(args);
    cmd.output().expect("run egress-loader")
}

#[test]
fn an_older_layout_is_migrated_without_a_gap() {
    require_privileges!();
    let topo = Topology::docker_like("upgrad").unwrap_or_else(|e| panic!("{e:#}"));
    let _imds = traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let bpffs = BpffsMount::new();
    let pins = PinDir::new(pin_dir(&bpffs));
    let c0 = topo.container(0).ns();

    // The previous release's pins, from a real run.
    let mut old = start_loader(&topo, &bpffs, &["--events-socket", "none"]);
    let st = wait_attached(&mut old, "docker0", READY_TIMEOUT);
    let old_program = interface(&st, "docker0").unwrap()["program_id"].clone();
    for _ in 0..3 {
        assert_http_refused(c0, addrs::IMDS_V4, 80);
    }
    let blocked_before = packets(&counters(&old), "metadata_blocked");
    assert!(blocked_before >= 3);
    old.kill().unwrap();
    let legacy = pins.layout_dir(egress_loader::kernel::pins::LEGACY_LAYOUT);
    std::fs::rename(pins.maps(), &legacy).unwrap();
    // A map the "new release" changed: same name, another capacity.
    std::fs::remove_file(legacy.join(IFACE_COUNTERS)).unwrap();
    pin_map(
        &legacy.join(IFACE_COUNTERS),
        "percpu_hash",
        4,
        std::mem::size_of::<egress_ebpf_common::counters::IfaceCounters>() as u32,
        IFACE_CAPACITY / 4,
        "IFACE_COUNTERS",
    );
    // The old program still enforces, on the old layout's maps.
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    let pins_arg = pins.root().to_str().unwrap();
    let reader = loader_once(topo.host(), &["counters", "--pin-dir", pins_arg]);
    assert_eq!(reader.status.code(), Some(1), "{}", stderr(&reader));
    assert!(
        stderr(&reader).contains("has map layout 1") && stderr(&reader).contains("migrates it"),
        "{}",
        stderr(&reader)
    );

    let ((new, took), attempts, successes) = traffic::with_probe(c0, || {
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let new = start_loader(&topo, &bpffs, &["--events-socket", "none"]);
        let deadline = started + READY_TIMEOUT;
        while !new.log().contains("pin(s) of map layout(s) [1]") {
            assert!(Instant::now() < deadline, "no migration: {}", new.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        std::thread::sleep(Duration::from_millis(1000));
        (new, took)
    });
    eprintln!(
        "migrated from layout 1 to {LAYOUT_VERSION} in {} ms (start to old pins removed); \
         probe: {attempts} attempts, {successes} through",
        took.as_millis()
    );
    assert!(attempts >= 4, "the probe hardly ran: {attempts}");
    assert_eq!(
        successes, 0,
        "the metadata service was reached during the upgrade"
    );
    let log = new.log();
    assert!(log.contains("migrating in place"), "{log}");
    assert!(!legacy.exists(), "old pins left: {:?}", listing(&bpffs));
    let left: Vec<String> = listing(&bpffs)
        .into_iter()
        .filter(|p| {
            !p.starts_with(&format!("egress/layout-{LAYOUT_VERSION}"))
                && !p.starts_with("egress/links")
        })
        .filter(|p| p != "egress")
        .collect();
    assert!(left.is_empty(), "pins outside the new layout: {left:?}");
    // The counters went on; the changed map started fresh at its new size.
    let st = status(&new);
    assert_ne!(
        interface(&st, "docker0").unwrap()["program_id"],
        old_program,
        "{st}"
    );
    assert!(is_attached(&st, "docker0"), "{st}");
    let blocked_after = packets(&counters(&new), "metadata_blocked");
    assert!(
        blocked_after >= blocked_before + u64::from(attempts) - 2,
        "metadata_blocked did not go on: {blocked_before} before, {blocked_after} after {attempts} probes"
    );
    let iface = MapInfo::from_pin(pins.map(IFACE_COUNTERS)).unwrap();
    assert_eq!(iface.max_entries(), IFACE_CAPACITY);
    assert!(pins.map(COUNTERS).exists());
    let tcx = {
        let n = "docker0".to_owned();
        topo.host()
            .run_in(move || {
                aya::programs::SchedClassifier::query_tcx(&n, aya::programs::TcAttachType::Ingress)
            })
            .unwrap()
            .unwrap()
            .1
            .len()
    };
    assert_eq!(tcx, 1, "attached twice");
    assert_http_refused(c0, addrs::IMDS_V4, 80);
}

#[test]
fn a_newer_layout_is_refused_and_nothing_changes() {
    require_privileges!();
    let topo = Topology::docker_like("downgr").unwrap_or_else(|e| panic!("{e:#}"));
    let _imds = traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    let bpffs = BpffsMount::new();
    let pins = PinDir::new(pin_dir(&bpffs));
    let mut first = start_loader(&topo, &bpffs, &["--events-socket", "none"]);
    wait_attached(&mut first, "docker0", READY_TIMEOUT);
    first.kill().unwrap();
    // What a newer release would have left: its own layout directory.
    let newer = pins.layout_dir(LAYOUT_VERSION + 1);
    std::fs::rename(pins.maps(), &newer).unwrap();
    let before = listing(&bpffs);
    let pins_arg = pins.root().to_str().unwrap();
    let out = loader_once(
        topo.host(),
        &[
            "run",
            "--pin-dir",
            pins_arg,
            "--events-socket",
            "none",
            "--state-file",
            "none",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("map layout {}", LAYOUT_VERSION + 1))
            && e.contains("refusing to downgrade")
            && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(
        listing(&bpffs),
        before,
        "a refused downgrade changed the pins"
    );
    // The newer release's program still enforces.
    assert_http_refused(topo.container(0).ns(), addrs::IMDS_V4, 80);
    let status = loader_once(topo.host(), &["status", "--pin-dir", pins_arg]);
    assert_eq!(status.status.code(), Some(1), "{}", stderr(&status));
    assert!(
        stderr(&status).contains("newer egress-loader"),
        "{}",
        stderr(&status)
    );
    // Any version's detach removes it all.
    let detach = loader_once(topo.host(), &["detach", "--pin-dir", pins_arg]);
    assert!(detach.status.success(), "{}", stderr(&detach));
    assert!(!pins.root().exists(), "{:?}", listing(&bpffs));
}

/// A link pinned under an encoded name (a bridge named `dk.br0`, which
/// bpffs would refuse as it is) is adopted by the next loader, an upgrade
/// from the older layout included: its program is swapped inside the same
/// link, never released and attached again, while a probe retries the
/// metadata address behind that bridge.
#[test]
fn a_link_pinned_under_an_encoded_name_is_adopted_by_an_upgrade() {
    require_privileges!();
    const BRIDGE: &str = "dk.br0";
    let mut topo = Topology::docker_like("updot").unwrap_or_else(|e| panic!("{e:#}"));
    let _imds = traffic::tcp_server(topo.cloud(), addrs::IMDS_V4, 80).unwrap();
    // Links pinned before the encoding are read back as they are because
    // their names never hold a `.` (bpffs refused it) nor a `%`: the kernel
    // refuses one in an interface's name (a `%d` is a template, anything
    // else EINVAL).
    let refused = topo.host().ip(&["link", "add", "a%b", "type", "bridge"]);
    assert!(refused.is_err(), "the kernel took an interface named a%b");
    topo.add_bridge(BRIDGE, "172.18.0.0/16").unwrap();
    let bpffs = BpffsMount::new();
    let pins = PinDir::new(pin_dir(&bpffs));
    let c = topo.containers().last().unwrap().ns();
    // Bridges only: the probe's packets are the bridge's link's to judge.
    let args = [
        "--no-endpoints",
        "--events-socket",
        "none",
        "--iface",
        "docker0",
        "--iface",
        BRIDGE,
    ];
    let links = |bpffs: &BpffsMount| -> Vec<String> {
        listing(bpffs)
            .into_iter()
            .filter(|p| p.starts_with("egress/links/"))
            .collect()
    };

    let mut old = start_loader(&topo, &bpffs, &args);
    let st = wait_attached(&mut old, BRIDGE, READY_TIMEOUT);
    let old_program = interface(&st, BRIDGE).unwrap()["program_id"].clone();
    assert_http_refused(c, addrs::IMDS_V4, 80);
    old.kill().unwrap();
    let legacy = pins.layout_dir(egress_loader::kernel::pins::LEGACY_LAYOUT);
    std::fs::rename(pins.maps(), &legacy).unwrap();
    let links_before = links(&bpffs);
    assert!(
        links_before.iter().any(|p| p == "egress/links/dk%2Ebr0"),
        "{links_before:?}"
    );

    let (new, attempts, successes) = traffic::with_probe(c, || {
        std::thread::sleep(Duration::from_millis(300));
        let new = start_loader(&topo, &bpffs, &args);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !new.log().contains("pin(s) of map layout(s) [1]") {
            assert!(Instant::now() < deadline, "no migration: {}", new.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(600));
        new
    });
    let log = new.log();
    assert!(attempts >= 4, "the probe hardly ran: {attempts}");
    assert_eq!(
        successes, 0,
        "the metadata service was reached during the upgrade"
    );
    assert!(log.contains("migrating in place"), "{log}");
    // The bridge's one log line (drop events, JSON, aside): adopted, not
    // released as gone nor attached afresh.
    let bridge_lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with('{') && (l.contains("dk.br0") || l.contains("dk%2Ebr0")))
        .collect();
    assert!(
        bridge_lines.len() == 1 && bridge_lines[0].contains("adopted the existing attachment"),
        "{BRIDGE} not adopted once and only:\n{log}"
    );
    let st = status(&new);
    assert!(is_attached(&st, BRIDGE), "{st}");
    assert_ne!(
        interface(&st, BRIDGE).unwrap()["program_id"],
        old_program,
        "{st}"
    );
    assert_eq!(links(&bpffs), links_before);
    let tcx = {
        let n = BRIDGE.to_owned();
        topo.host()
            .run_in(move || {
                aya::programs::SchedClassifier::query_tcx(&n, aya::programs::TcAttachType::Ingress)
            })
            .unwrap()
            .unwrap()
            .1
            .len()
    };
    assert_eq!(tcx, 1, "attached twice");
    assert_http_refused(c, addrs::IMDS_V4, 80);
}
