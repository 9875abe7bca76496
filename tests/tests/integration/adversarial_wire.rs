//! The adversarial classes, sent for real: hand-built frames written by an
//! AF_PACKET socket in a container namespace onto the bridge, routed by the
//! host namespace, captured on the cloud namespace's uplink. What must be
//! stopped never arrives; the controls beside them do (so a broken capture
//! cannot pass the test).

use std::{net::Ipv4Addr, time::Duration};

use crate::common::*;
use egress_tests::{
    BpffsMount, addrs,
    frames::*,
    require_privileges,
    topology::Topology,
    wire::{Capture, Layout, mac, send_frames},
};

fn with_macs(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

struct WireCase {
    what: &'static str,
    frame: Vec<u8>,
    layout: Layout,
    arrives: bool,
    /// IPv4 ID or IPv6 flow label that marks this case's packets.
    mark: u32,
    v6: bool,
}

fn v4_marked(dst: Ipv4Addr, proto: u8, mark: u16, f: impl FnOnce(&mut V4)) -> V4 {
    let mut ip = V4::new(dst, proto);
    ip.src = addrs::container_v4(0);
    ip.id = mark;
    f(&mut ip);
    ip
}

#[test]
fn hostile_frames_on_the_wire() {
    require_privileges!();
    let topo = Topology::docker_like("wire").unwrap_or_else(|e| panic!("{e:#}"));
    // Room for frames larger than a page, so the kernel builds paged skbs.
    let c0 = topo.container(0);
    c0.ns().ip(&["link", "set", "eth0", "mtu", "9000"]).unwrap();
    topo.host()
        .ip(&["link", "set", c0.host_veth(), "mtu", "9000"])
        .unwrap();
    topo.host()
        .ip(&["link", "set", "docker0", "mtu", "9000"])
        .unwrap();
    let bridge_mac = mac(topo.host(), "docker0").unwrap();
    let own_mac = mac(c0.ns(), "eth0").unwrap();

    let bpffs = BpffsMount::new();
    let mut loader = start_loader(
        &topo,
        &bpffs,
        &["--smtp-burst", "1000", "--smtp-rate", "1/hour"],
    );
    wait_attached(&mut loader, "docker0", READY_TIMEOUT);
    // The uplink's peer in the cloud namespace is eth0.
    let capture = Capture::start(topo.cloud(), "eth0").unwrap();
    let smtp = addrs::SMTP_V4;
    let imds = addrs::IMDS_V4;
    let big = vec![0x5a; 4960];

    let mut cases = Vec::new();
    let mut add4 = |what, ip: V4, l4: Vec<u8>, layout, arrives| {
        let mark = ip.id as u32;
        cases.push(WireCase {
            what,
            frame: v4_frame(&ip, &l4),
            layout,
            arrives,
            mark,
            v6: false,
        });
    };
    add4(
        "metadata SYN",
        v4_marked(imds, IPPROTO_TCP, 101, |_| {}),
        tcp(40001, 80, SYN),
        Layout::Linear,
        false,
    );
    add4(
        "metadata first fragment",
        v4_marked(imds, IPPROTO_TCP, 102, |i| i.more_fragments = true),
        tcp(40002, 80, SYN),
        Layout::Linear,
        false,
    );
    add4(
        "metadata middle fragment",
        v4_marked(imds, IPPROTO_TCP, 103, |i| {
            i.frag_offset = 10;
            i.more_fragments = true
        }),
        vec![0; 64],
        Layout::Linear,
        false,
    );
    add4(
        "metadata last fragment",
        v4_marked(imds, IPPROTO_TCP, 104, |i| i.frag_offset = 20),
        vec![0; 64],
        Layout::Linear,
        false,
    );
    add4(
        "tiny first fragment hiding the ports",
        v4_marked(smtp, IPPROTO_TCP, 105, |i| i.more_fragments = true),
        tcp(40005, 25, SYN)[..2].to_vec(),
        Layout::Linear,
        false,
    );
    add4(
        "RFC 1858 offset-1 TCP fragment",
        v4_marked(smtp, IPPROTO_TCP, 106, |i| {
            i.frag_offset = 1;
            i.more_fragments = true
        }),
        vec![SYN; 24],
        Layout::Linear,
        false,
    );
    add4(
        "metadata SYN, headers outside the linear area",
        v4_marked(imds, IPPROTO_TCP, 107, |_| {}),
        [tcp(40007, 80, SYN), big.clone()].concat(),
        Layout::Paged,
        false,
    );
    // Controls: these must arrive.
    add4(
        "control: ACK to 198.51.100.25:80",
        v4_marked(smtp, IPPROTO_TCP, 201, |_| {}),
        tcp(40101, 80, ACK),
        Layout::Linear,
        true,
    );
    add4(
        "control: middle fragment to 198.51.100.25",
        v4_marked(smtp, IPPROTO_TCP, 202, |i| {
            i.frag_offset = 10;
            i.more_fragments = true
        }),
        vec![0; 64],
        Layout::Linear,
        true,
    );
    add4(
        "control: UDP, headers outside the linear area",
        v4_marked(smtp, IPPROTO_UDP, 203, |_| {}),
        udp(40103, 9, &big),
        Layout::Paged,
        true,
    );
    add4(
        "SYN to 25 within the burst, headers outside the linear area",
        v4_marked(smtp, IPPROTO_TCP, 204, |_| {}),
        [tcp(40104, 25, SYN), big.clone()].concat(),
        Layout::Paged,
        true,
    );

    let eight = vec![
        Ext::HopByHop,
        Ext::DestOpts,
        Ext::Routing,
        Ext::Auth,
        Ext::DestOpts,
        Ext::Auth,
        Ext::DestOpts,
        Ext::DestOpts,
    ];
    let mut nine = eight.clone();
    nine.push(Ext::DestOpts);
    let mut add6 =
        |what, dst: std::net::Ipv6Addr, exts: Vec<Ext>, l4: Vec<u8>, arrives, mark: u32| {
            let mut ip = V6::new(dst, IPPROTO_TCP);
            ip.src = addrs::container_v6(0);
            ip.exts = exts;
            ip.flow = mark;
            cases.push(WireCase {
                what,
                frame: v6_frame(&ip, &l4),
                layout: Layout::Linear,
                arrives,
                mark,
                v6: true,
            });
        };
    add6(
        "IPv6 metadata SYN",
        addrs::IMDS_V6,
        vec![],
        tcp(40201, 80, SYN),
        false,
        301,
    );
    add6(
        "9 extension headers, SYN to 25",
        addrs::SMTP_V6,
        nine,
        tcp(40202, 25, SYN),
        false,
        302,
    );
    add6(
        "control: 8 extension headers, ACK to 443",
        addrs::SMTP_V6,
        eight,
        tcp(40203, 443, ACK),
        true,
        303,
    );
    add6(
        "control: IPv6 ACK to 80",
        addrs::SMTP_V6,
        vec![],
        tcp(40204, 80, ACK),
        true,
        304,
    );

    for case in &cases {
        let frame = with_macs(case.frame.clone(), bridge_mac, own_mac);
        send_frames(c0.ns(), "eth0", &[frame], case.layout)
            .unwrap_or_else(|e| panic!("{}: {e:#}", case.what));
    }
    std::thread::sleep(Duration::from_millis(700));
    let mut report = String::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let seen = if case.v6 {
            capture.v6_with_flow(case.mark)
        } else {
            capture.v4_with_id(case.mark as u16)
        };
        let ok = (seen > 0) == case.arrives;
        report.push_str(&format!(
            "{:<60} {:<8} expected {:<9} {}\n",
            case.what,
            if seen > 0 { "ARRIVED" } else { "stopped" },
            if case.arrives { "arrival" } else { "stop" },
            if ok { "ok" } else { "WRONG" }
        ));
        if !ok {
            wrong.push(case.what);
        }
    }
    println!("{report}");
    assert!(
        wrong.is_empty(),
        "wrong outcome for {wrong:?}:\n{report}\ncounters: {}",
        counters(&loader)
    );
    let c = counters(&loader);
    assert!(packets(&c, "evasive_dropped") >= 3, "{c}");
    assert!(
        packets(&c, "smtp_allowed") >= 1,
        "the paged SYN to 25 was seen as an attempt: {c}"
    );
}
