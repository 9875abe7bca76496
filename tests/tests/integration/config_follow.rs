//! `run --config FILE` follows its file: an edit, a file renamed over it
//! and a Kubernetes ConfigMap's symlink swap are each applied within a
//! second, the way SIGHUP applies them; a bad version is refused, logged
//! and counted, and the policy in force stays. `status` names the file and
//! the version in force, `/metrics` counts the reloads.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::common::*;
use egress_tests::{LoaderProcess, addrs, topology::Topology, traffic};
use egress_tests::{report, require_privileges};
use serde_json::Value;

/// The bound: a change on disk is in the maps within this.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(1);
const METRICS_PORT: u16 = 19184;

// `defaults = false`: the maps hold exactly the rules the tests name.
const BASE: &str =
    "defaults = false\n[[block]]\ncidr = \"169.254.169.254/32\"\naction = \"reject\"\n";
const WITH_WEB: &str = "defaults = false\n[[block]]\ncidr = \"169.254.169.254/32\"\naction = \"reject\"\n\
                        [[block]]\ncidr = \"198.51.100.25/32\"\n";

fn sha256_of(path: &Path) -> String {
    egress_loader::policy::build::sha256_hex(&std::fs::read(path).unwrap())
}

fn blocked(st: &Value) -> Vec<String> {
    st["policy"]["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["destination"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `status --json` until the blocked set is `want`; returns how long
/// that took, or panics after `limit` (with the log). Then waits for the
/// loader's record to name the file's version too (it is written just
/// after the maps).
fn wait_blocked(loader: &LoaderProcess, state: &Path, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let st = status_with(loader, state);
        if blocked(&st) == want {
            let took = start.elapsed();
            let config = st["config"]["path"].as_str().unwrap().to_owned();
            let recorded = egress_tests::wait_until(Duration::from_secs(2), || {
                status_with(loader, state)["config"]["sha256"] == sha256_of(Path::new(&config))
            });
            assert!(recorded, "the record does not name the file in force");
            return took;
        }
        assert!(
            start.elapsed() < limit,
            "the maps did not show {want:?} within {limit:?}: {}\nlog:\n{}",
            st["policy"]["blocked"],
            loader.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_with(loader: &LoaderProcess, state: &Path) -> Value {
    loader
        .cli_json("status", &["--state-file", state.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn metrics(topo: &Topology) -> String {
    traffic::http_get(
        topo.host(),
        std::net::Ipv4Addr::LOCALHOST,
        METRICS_PORT,
        "/metrics",
        Duration::from_secs(3),
    )
    .unwrap_or_else(|e| panic!("GET /metrics: {e:#}"))
}

fn start(
    topo: &Topology,
    bpffs: &egress_tests::BpffsMount,
    config: &Path,
    state: &Path,
) -> LoaderProcess {
    let metrics = format!("127.0.0.1:{METRICS_PORT}");
    let mut loader = start_loader(
        topo,
        bpffs,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
            "--events-socket",
            "none",
            "--metrics-addr",
            &metrics,
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    loader
}

#[test]
fn an_edit_is_applied_within_a_second_and_a_bad_one_refused() {
    require_privileges!();
    let topo = topology("cfgedit");
    let _web = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let bpffs = egress_tests::BpffsMount::new();
    let dir = TempDir::new("cfgedit");
    let (config, state) = (dir.join("config.toml"), dir.join("state.json"));
    std::fs::write(&config, BASE).unwrap();
    let loader = start(&topo, &bpffs, &config, &state);
    let c0 = topo.container(0).ns();
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    let st = status_with(&loader, &state);
    assert_eq!(st["config"]["generation"], 1, "{st}");
    assert_eq!(st["config"]["sha256"], sha256_of(&config), "{st}");

    // An edit in place (truncate and write, as `echo >` does).
    std::fs::write(&config, WITH_WEB).unwrap();
    let took = wait_blocked(
        &loader,
        &state,
        &["169.254.169.254/32", "198.51.100.25/32"],
        FOLLOW_DEADLINE,
    );
    report!(
        "an edit in place reached the maps in {} ms",
        took.as_millis()
    );
    assert_http_dropped(c0, addrs::SMTP_V4, 8080);
    let st = status_with(&loader, &state);
    assert_eq!(st["config"]["generation"], 2, "{st}");
    assert_eq!(st["config"]["sha256"], sha256_of(&config), "{st}");
    assert_eq!(st["config"]["applied_by"], "file-changed", "{st}");

    // A new file renamed over it (what editors do).
    let tmp = dir.join(".config.toml.swp");
    std::fs::write(&tmp, BASE).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    let took = wait_blocked(&loader, &state, &["169.254.169.254/32"], FOLLOW_DEADLINE);
    report!(
        "a file renamed over it reached the maps in {} ms",
        took.as_millis()
    );
    assert_http_ok(c0, addrs::SMTP_V4, 8080);

    // A bad version: refused, logged, counted; the policy in force stays.
    let before = status_with(&loader, &state);
    std::fs::write(&config, format!("{WITH_WEB}[smtp]\nrate = \"0/minute\"\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let st = loop {
        let st = status_with(&loader, &state);
        if !st["config"]["last_refused"].is_null() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the bad file was not refused: {st}\n{}",
            loader.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let refusal = &st["config"]["last_refused"];
    assert!(
        refusal["error"].as_str().unwrap().contains("smtp.rate"),
        "the refusal names the field: {refusal}"
    );
    assert_eq!(refusal["sha256"], sha256_of(&config), "{refusal}");
    assert_eq!(
        st["policy"], before["policy"],
        "the policy in force changed"
    );
    assert_eq!(st["config"]["generation"], before["config"]["generation"]);
    assert_eq!(st["config"]["sha256"], before["config"]["sha256"]);
    assert!(
        loader
            .log()
            .contains("refused, keeping the policy in force"),
        "{}",
        loader.log()
    );
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    assert_http_refused(c0, addrs::IMDS_V4, 80);
    let text = loader
        .cli("status", &["--state-file", state.to_str().unwrap()])
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    report!("status after the bad edit:\n{text}");
    assert!(
        text.contains("REFUSED") && text.contains("smtp.rate"),
        "{text}"
    );

    let m = metrics(&topo);
    for line in [
        "egress_config_reloads_total{result=\"ok\"} 2",
        "egress_config_reloads_total{result=\"refused\"} 1",
        "egress_config_generation 3",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    let info = format!(
        "egress_config_info{{path=\"{}\",sha256=\"{}\"}} 1",
        config.display(),
        st["config"]["sha256"].as_str().unwrap()
    );
    assert!(m.lines().any(|l| l == info), "no {info:?} in\n{m}");

    // Emptied (what an edit in place looks like between its truncate and
    // its write): not applied, the policy in force stays.
    std::fs::write(&config, "").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let st = status_with(&loader, &state);
    assert_eq!(st["policy"], before["policy"], "an empty file was applied");
    assert_eq!(st["config"]["generation"], before["config"]["generation"]);
    assert!(
        loader.log().contains("the file is empty"),
        "{}",
        loader.log()
    );
    assert_http_refused(c0, addrs::IMDS_V4, 80);

    // Fixed again: applied.
    std::fs::write(&config, WITH_WEB).unwrap();
    wait_blocked(
        &loader,
        &state,
        &["169.254.169.254/32", "198.51.100.25/32"],
        FOLLOW_DEADLINE,
    );
}

/// What kubelet's AtomicWriter does to a ConfigMap volume: the data lives
/// in a timestamped directory, `..data` points at it, and each key is a
/// symlink through `..data`; an update writes a new directory, points
/// `..data_tmp` at it, renames that over `..data` and removes the old one.
fn configmap_update(dir: &Path, generation: u32, text: &str) {
    let data = format!("..2026_12_01_00_00_0{generation}.{generation}");
    std::fs::create_dir(dir.join(&data)).unwrap();
    std::fs::write(dir.join(&data).join("config.toml"), text).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("config.toml").exists() {
        std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[test]
fn a_configmap_symlink_swap_is_followed() {
    require_privileges!();
    let topo = topology("cfgmap");
    let _web = traffic::tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let bpffs = egress_tests::BpffsMount::new();
    let dir = TempDir::new("cfgmap");
    let volume = dir.join("volume");
    std::fs::create_dir(&volume).unwrap();
    configmap_update(&volume, 1, BASE);
    let config = volume.join("config.toml");
    let state = dir.join("state.json");
    let loader = start(&topo, &bpffs, &config, &state);
    let c0 = topo.container(0).ns();
    assert_http_ok(c0, addrs::SMTP_V4, 8080);

    configmap_update(&volume, 2, WITH_WEB);
    let took = wait_blocked(
        &loader,
        &state,
        &["169.254.169.254/32", "198.51.100.25/32"],
        FOLLOW_DEADLINE,
    );
    report!(
        "a ConfigMap update (..data swapped) reached the maps in {} ms",
        took.as_millis()
    );
    assert_http_dropped(c0, addrs::SMTP_V4, 8080);
    // Again: the file now resolves through another directory.
    configmap_update(&volume, 3, BASE);
    let took = wait_blocked(&loader, &state, &["169.254.169.254/32"], FOLLOW_DEADLINE);
    report!(
        "a second ConfigMap update reached the maps in {} ms",
        took.as_millis()
    );
    assert_http_ok(c0, addrs::SMTP_V4, 8080);
    let st = status_with(&loader, &state);
    assert_eq!(st["config"]["generation"], 3, "{st}");
    assert_eq!(st["config"]["path"], config.to_str().unwrap(), "{st}");
    assert_eq!(st["config"]["sha256"], sha256_of(&config), "{st}");
}

#[test]
fn without_following_only_sighup_applies() {
    require_privileges!();
    let topo = topology("cfgnow");
    let bpffs = egress_tests::BpffsMount::new();
    let dir = TempDir::new("cfgnow");
    let (config, state) = (dir.join("config.toml"), dir.join("state.json"));
    std::fs::write(&config, BASE).unwrap();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &[
            "--config",
            config.to_str().unwrap(),
            "--no-watch-config",
            "--state-file",
            state.to_str().unwrap(),
            "--events-socket",
            "none",
        ],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    std::fs::write(&config, WITH_WEB).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let st = status_with(&loader, &state);
    assert_eq!(
        blocked(&st),
        ["169.254.169.254/32"],
        "followed although told not to"
    );
    assert_eq!(st["config"]["follows_file"], false, "{st}");
    let text = loader
        .cli("status", &["--state-file", state.to_str().unwrap()])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("not applied yet"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let out = loader.cli("reload", &[] as &[&str]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = egress_tests::wait_until(Duration::from_secs(2), || {
        status_with(&loader, &state)["config"]["applied_by"] == "sighup"
    });
    let st = status_with(&loader, &state);
    assert!(applied, "{st}");
    assert_eq!(blocked(&st), ["169.254.169.254/32", "198.51.100.25/32"]);
}
