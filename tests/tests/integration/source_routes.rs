//! Source routes (issue 25, item 4): a host-network process sets
//! `IP_OPTIONS` (LSRR) or `IPV6_RTHDR` (type 4, segment routing) with the
//! metadata address as first hop and `connect()`s to an open address. The
//! connect hook judges the open address; the kernel sends the SYN to the
//! hop; `cgroup_skb/egress` must judge it by its real destination. The
//! capture on the cloud's uplink shows whether the SYN left the host; a
//! route through an open address is captured (so a broken capture cannot
//! pass the test).

use std::net::IpAddr;

use crate::common::*;
use crate::coverage::{cgroup, cgroup_attached, hook_packets};
use egress_tests::{
    BpffsMount, addrs, frames::IPPROTO_TCP, require_privileges, traffic::tcp_server, wait_until,
    wire::Capture,
};
use serde_json::Value;

/// A host-network process's source-routed `connect()`: IPv4 and IPv6.
#[test]
fn a_host_network_connect_through_a_source_route_is_judged() {
    require_privileges!();
    let topo = topology_with("srcg", 1);
    let _web = tcp_server(topo.cloud(), addrs::SMTP_V4, 8080).unwrap();
    let _web6 = tcp_server(topo.cloud(), addrs::SMTP_V6, 8080).unwrap();
    let cg = cgroup("srcroute");
    cg.mkdir("app").unwrap();
    let bpffs = BpffsMount::new();
    let target = cg.arg("app");
    let mut loader = start_loader(&topo, &bpffs, &["--no-docker", "--cgroup", &target]);
    wait_attached(&mut loader, "docker0", 4 * READY_TIMEOUT);
    assert!(
        wait_until(READY_TIMEOUT, || cgroup_attached(&status(&loader), &target)),
        "the cgroup hooks are not attached to {target}: {}",
        status(&loader)
    );
    cg.mkdir("app/c1").unwrap();
    let cap = Capture::start(topo.cloud(), "eth0").unwrap();
    let probe = |args: &[&str]| -> Value {
        let v = cg
            .probe(topo.host(), "app/c1", args)
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{args:?} -> {v}");
        v
    };
    // SYNs to `dst` (IPv4 or IPv6) captured on the cloud's uplink.
    let syns_to = |dst: IpAddr| -> usize {
        cap.frames()
            .iter()
            .filter(|f| match dst {
                IpAddr::V4(d) => {
                    f.len() >= 34
                        && f[12..14] == [0x08, 0x00]
                        && f[23] == IPPROTO_TCP
                        && f[30..34] == d.octets()
                }
                IpAddr::V6(d) => {
                    f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[38..54] == d.octets()
                }
            })
            .count()
    };
    let (open, open6) = (addrs::SMTP_V4.to_string(), addrs::SMTP_V6.to_string());
    let (imds, imds6) = (addrs::IMDS_V4.to_string(), addrs::IMDS_V6.to_string());

    // Control: a route through an open address reaches it (the capture
    // sees the kernel's source-routed SYN).
    probe(&[
        "tcp-routed",
        &open,
        "8080",
        &addrs::UPLINK_CLOUD_V4.to_string(),
    ]);
    assert!(
        wait_until(REACHABLE, || syns_to(IpAddr::V4(addrs::UPLINK_CLOUD_V4))
            > 0),
        "the control's SYN (first hop {}) was not captured",
        addrs::UPLINK_CLOUD_V4
    );
    probe(&[
        "tcp-routed",
        &open6,
        "8080",
        &addrs::UPLINK_CLOUD_V6.to_string(),
    ]);
    assert!(
        wait_until(REACHABLE, || syns_to(IpAddr::V6(addrs::UPLINK_CLOUD_V6))
            > 0),
        "the control's SYN (first segment {}) was not captured",
        addrs::UPLINK_CLOUD_V6
    );
    probe(&["tcp-routed", &open, "8080", &imds]);
    probe(&["tcp-routed", &open6, "8080", &imds6]);
    std::thread::sleep(DROPPED);
    let leaked = (
        syns_to(IpAddr::V4(addrs::IMDS_V4)),
        syns_to(IpAddr::V6(addrs::IMDS_V6)),
    );
    assert_eq!(
        leaked,
        (0, 0),
        "SYNs source-routed through {imds} and {imds6} reached them (IPv4, IPv6)"
    );
    let c = counters(&loader);
    assert!(
        hook_packets(&c, "cgroup_skb/egress", "metadata_blocked") >= 2,
        "{c}"
    );
    // The connect hook judged (and passed) the open addresses.
    assert_eq!(hook_packets(&c, "cgroup/connect4", "metadata_blocked"), 0);
}
