//! The classifier's own log lines (aya-log) in `egress-loader run`'s output:
//! a rare condition made to happen with real traffic, shown once, at its
//! level, however long the condition lasts within the log budget.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use egress_tests::topology::Topology;
use egress_tests::traffic::{tcp_connect, udp_send};
use egress_tests::{BpffsMount, addrs, require_privileges, unique_suffix, wait_until};

const BUDGET_LINE: &str = "drop-event budget exhausted";

/// A config file under the temp dir, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("egress-klog-{}.toml", unique_suffix()));
        std::fs::write(&path, text).expect("writing the config file");
        Self(path)
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_exhausted_event_budget_is_logged_once_as_a_warning() {
    require_privileges!();
    let topo = Topology::docker_like_with("klog", 1)
        .unwrap_or_else(|e| panic!("building the topology: {e:#}"));
    let bpffs = BpffsMount::new();
    // One drop event a minute: the first drop spends the budget, every
    // other drop in this test is suppressed.
    let config = ConfigFile::new("[events]\nrate = \"1/minute\"\nburst = 1\n");
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--config", config.arg(), "--events-socket", "none"],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    // The container's packets are judged on its veth (the endpoint
    // program): the line names that hook.
    let veth = topo.container(0).host_veth();
    let status = wait_attached(&mut loader, veth, READY_TIMEOUT);
    let ifindex = interface(&status, veth).expect("the veth in status")["ifindex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ifindex for {veth} in {status}"));
    let c = topo.container(0).ns();
    // The one event the budget allows (the SYN also resolves the gateway's
    // address, so the datagrams below leave at once).
    let _ = tcp_connect(c, SocketAddr::from((addrs::IMDS_V4, 80)), DROPPED);
    // 20 metadata datagrams within a few milliseconds: 20 suppressed events,
    // one log line (the log budget is one line a second).
    let sent = udp_send(c, SocketAddr::from((addrs::IMDS_V4, 5353)), b"q", 20)
        .unwrap_or_else(|e| panic!("sending UDP to the metadata address: {e}"));
    assert_eq!(sent, 20);

    let counters_seen = wait_until(Duration::from_secs(10), || {
        counters(&loader)["events"]["suppressed"].as_u64() >= Some(20)
    });
    let c = counters(&loader);
    assert!(counters_seen, "20 drops should be suppressed events: {c}");
    let logged = wait_until(Duration::from_secs(10), || {
        loader.log().contains(BUDGET_LINE)
    });
    let log = loader.log();
    assert!(
        logged,
        "no {BUDGET_LINE:?} line from the classifier in the loader's output:\n{log}"
    );
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(BUDGET_LINE)).collect();
    assert_eq!(
        lines.len(),
        1,
        "the log budget allows one line a second, the drops took milliseconds:\n{log}"
    );
    println!("the classifier's line: {}", lines[0]);
    // env_logger's format: `[<time> <LEVEL> ...] message`.
    assert!(
        lines[0].contains(" WARN"),
        "the line must be a warning: {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("(ifindex {ifindex})")),
        "the line names the veth's ifindex {ifindex}: {:?}",
        lines[0]
    );
}
