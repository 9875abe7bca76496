//! Source routes (issue 25, item 4): a packet whose IPv4 LSRR/SSRR option
//! or IPv6 routing header names a blocked address goes there, whatever its
//! IP destination says.
//!
//! - At the bridge: a container sends, to the host's own bridge address, a
//!   packet whose source route names the metadata address. The host's
//!   namespace honours source routes here (`accept_source_route`,
//!   `seg6_enabled`: the test's own namespace), so without the filter it
//!   forwards the packet to the metadata stand-in; the capture on the cloud
//!   side shows whether it got there. A route naming only open addresses
//!   arrives (so a broken capture cannot pass the test).
//! - At the cgroup hooks: a host-network process sets `IP_OPTIONS` (LSRR)
//!   or `IPV6_RTHDR` (type 4) with the metadata address as first hop and
//!   `connect()`s to an open address: the connect hook judges the open
//!   address, the kernel sends the SYN to the hop, and `cgroup_skb/egress`
//!   must judge it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::common::*;
use crate::coverage::{cgroup, cgroup_attached, hook_packets};
use egress_tests::{
    BpffsMount, addrs,
    frames::*,
    require_privileges,
    traffic::tcp_server,
    wait_until,
    wire::{Capture, Layout, mac, send_frames},
};
use serde_json::Value;

/// An LSRR option through `hops`, padded with a no-op to 4 bytes.
fn lsrr(hops: &[Ipv4Addr]) -> Vec<u8> {
    let mut o = vec![131, (3 + 4 * hops.len()) as u8, 4];
    for h in hops {
        o.extend_from_slice(&h.octets());
    }
    while o.len() % 4 != 0 {
        o.push(1);
    }
    o
}

/// An SRH as its first segment, the host, sends it (RFC 8754: the segment
/// list is in reverse, `[0]` the last segment; the IP destination is the
/// active one): with one segment left, the host forwards it to `to`
/// (seg6_input: `segments[--segments_left]`).
fn srh(to: Ipv6Addr) -> Ext {
    Ext::Route {
        kind: 4,
        segments_left: 1,
        addrs: vec![to, addrs::DOCKER0_V6],
    }
}

/// Captured IPv4 packets of IP ID `id` whose destination is `dst`.
fn v4_arrived(cap: &Capture, id: u16, dst: Ipv4Addr) -> usize {
    cap.frames()
        .iter()
        .filter(|f| {
            f.len() >= 34
                && f[12..14] == [0x08, 0x00]
                && f[18..20] == id.to_be_bytes()
                && f[30..34] == dst.octets()
        })
        .count()
}

fn v6_arrived(cap: &Capture, flow: u32, dst: Ipv6Addr) -> usize {
    cap.frames()
        .iter()
        .filter(|f| {
            f.len() >= 54
                && f[12..14] == [0x86, 0xdd]
                && u32::from_be_bytes([f[14], f[15], f[16], f[17]]) & 0xf_ffff == flow
                && f[38..54] == dst.octets()
        })
        .count()
}

#[test]
fn source_routes_through_a_blocked_address_stop_at_the_bridge() {
    require_privileges!();
    let topo = topology("srbr");
    let h = topo.host();
    // The host honours source routes (both the `all` and the device's
    // switch must be on), as a misconfigured node would.
    for key in [
        "net.ipv4.conf.all.accept_source_route",
        "net.ipv4.conf.docker0.accept_source_route",
        "net.ipv6.conf.all.seg6_enabled",
        "net.ipv6.conf.docker0.seg6_enabled",
    ] {
        h.sysctl(key, "1").unwrap();
    }
    let c0 = topo.container(0);
    let bridge_mac = mac(h, "docker0").unwrap();
    let own_mac = mac(c0.ns(), "eth0").unwrap();
    let framed = |mut f: Vec<u8>| {
        f[0..6].copy_from_slice(&bridge_mac);
        f[6..12].copy_from_slice(&own_mac);
        f
    };
    let v4 = |id: u16, dst: Ipv4Addr, hops: &[Ipv4Addr]| {
        let mut ip = V4::new(dst, IPPROTO_TCP);
        ip.src = c0.ipv4();
        ip.id = id;
        ip.options = lsrr(hops);
        framed(v4_frame(&ip, &tcp(40000 + id, 80, SYN)))
    };
    let v6 = |flow: u32, ext: Ext| {
        let mut ip = V6::new(addrs::DOCKER0_V6, IPPROTO_TCP);
        ip.src = c0.ipv6();
        ip.flow = flow;
        ip.exts = vec![ext];
        framed(v6_frame(&ip, &tcp(41000, 80, SYN)))
    };
    let (imds, open) = (addrs::IMDS_V4, addrs::SMTP_V4);
    let (imds6, open6) = (addrs::IMDS_V6, addrs::SMTP_V6);
    let frames = [
        // To the host, then through the metadata address (LSRR and SSRR).
        v4(501, addrs::DOCKER0_V4, &[imds]),
        v4(502, addrs::DOCKER0_V4, &[open, imds]),
        // Controls: through an open address only.
        v4(511, addrs::DOCKER0_V4, &[open]),
        v6(0x501, srh(imds6)),
        v6(0x511, srh(open6)),
    ];
    let send_all = || {
        send_frames(c0.ns(), "eth0", &frames, Layout::Linear).unwrap();
    };

    let bpffs = BpffsMount::new();
    let mut loader = start_loader(&topo, &bpffs, &[]);
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    let cap = Capture::start(topo.cloud(), "eth0").unwrap();
    send_all();
    // The controls prove the host forwards source routes: they arrive.
    assert!(
        wait_until(REACHABLE, || v4_arrived(&cap, 511, open) == 1
            && v6_arrived(&cap, 0x511, open6) == 1),
        "the controls (routes through open addresses) did not arrive: {} frames captured",
        cap.frames().len()
    );
    std::thread::sleep(DROPPED);
    assert_eq!(
        v4_arrived(&cap, 501, imds),
        0,
        "LSRR through the metadata address arrived"
    );
    assert_eq!(
        v4_arrived(&cap, 502, imds) + v4_arrived(&cap, 502, open),
        0,
        "a route whose second hop is the metadata address arrived"
    );
    assert_eq!(
        v6_arrived(&cap, 0x501, imds6),
        0,
        "an SRH through the metadata address arrived"
    );
    let c = counters(&loader);
    assert_eq!(packets(&c, "metadata_blocked"), 3, "{c}");
}

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
