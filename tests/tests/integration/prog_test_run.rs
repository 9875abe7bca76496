//! BPF_PROG_TEST_RUN on hand-built frames: every parser path, verdict and
//! counters. Each test loads its own classifier on its own bpffs.

use egress_ebpf_common::counters::CounterId::{self, *};
use egress_tests::{
    frames::*,
    require_privileges,
    test_run::{Classifier, DROP, PASS, REDIRECT},
};
use std::net::Ipv4Addr;

const IMDS: [u8; 4] = [169, 254, 169, 254];
const ALLOWED: [u8; 4] = [198, 51, 100, 80];
const WIRESERVER: [u8; 4] = [168, 63, 129, 16];
const SMTP_HOST: [u8; 4] = [198, 51, 100, 25];

#[test]
fn ipv4_destinations() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.expect(
        "TCP to an allowed address",
        &v4_tcp(ALLOWED, 80, SYN),
        PASS,
        Passed,
    );
    c.expect(
        "TCP SYN to the metadata service",
        &v4_tcp(IMDS, 80, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "TCP ACK to the metadata service",
        &v4_tcp(IMDS, 80, ACK),
        DROP,
        MetadataBlocked,
    );
    let icmp = v4_frame(&V4::new(Ipv4Addr::from(IMDS), IPPROTO_ICMP), &icmp_echo());
    c.expect("ICMP to the metadata service", &icmp, DROP, MetadataBlocked);
    let udp_md = v4_frame(
        &V4::new(Ipv4Addr::from(IMDS), IPPROTO_UDP),
        &udp(5000, 80, b"x"),
    );
    c.expect(
        "UDP to the metadata service",
        &udp_md,
        DROP,
        MetadataBlocked,
    );
    // The default rule's exception: DNS to the metadata address (GCP's
    // resolver), UDP and TCP.
    let dns = v4_frame(
        &V4::new(Ipv4Addr::from(IMDS), IPPROTO_UDP),
        &udp(5000, 53, b"x"),
    );
    c.expect("DNS over UDP to the metadata address", &dns, PASS, Passed);
    c.expect(
        "DNS over TCP to the metadata address",
        &v4_tcp(IMDS, 53, SYN),
        PASS,
        Passed,
    );
    for (dst, what) in [
        ([169, 254, 170, 2], "ECS task metadata"),
        ([100, 100, 100, 200], "Alibaba metadata"),
        ([192, 0, 0, 192], "OCI metadata"),
    ] {
        c.expect(what, &v4_tcp(dst, 80, SYN), DROP, MetadataBlocked);
    }
    c.expect(
        "neighbour of the metadata address",
        &v4_tcp([169, 254, 169, 253], 80, SYN),
        PASS,
        Passed,
    );
}

#[test]
fn azure_wireserver_is_blocked_on_its_ports_only() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.expect(
        "WireServer TCP 80",
        &v4_tcp(WIRESERVER, 80, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "WireServer TCP 32526",
        &v4_tcp(WIRESERVER, 32526, ACK),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "WireServer TCP 53 (DNS over TCP)",
        &v4_tcp(WIRESERVER, 53, SYN),
        PASS,
        Passed,
    );
    let dns = v4_frame(
        &V4::new(Ipv4Addr::from(WIRESERVER), IPPROTO_UDP),
        &udp(5353, 53, b"q"),
    );
    c.expect("WireServer UDP 53 (DNS)", &dns, PASS, Passed);
    let udp80 = v4_frame(
        &V4::new(Ipv4Addr::from(WIRESERVER), IPPROTO_UDP),
        &udp(5353, 80, b"q"),
    );
    c.expect("WireServer UDP 80", &udp80, PASS, Passed);
    // A later fragment has no ports: the TCP rule must assume it matches.
    let mut frag = V4::new(Ipv4Addr::from(WIRESERVER), IPPROTO_TCP);
    frag.frag_offset = 100;
    c.expect(
        "WireServer TCP later fragment",
        &v4_frame(&frag, &[0u8; 64]),
        DROP,
        MetadataBlocked,
    );
    frag.proto = IPPROTO_UDP;
    c.expect(
        "WireServer UDP later fragment",
        &v4_frame(&frag, &[0u8; 64]),
        PASS,
        Passed,
    );
}

#[test]
fn ipv4_header_variants() {
    require_privileges!();
    let mut c = Classifier::defaults();
    let mut opt = V4::new(Ipv4Addr::from(IMDS), IPPROTO_TCP);
    opt.options = vec![1, 1, 1, 0, 0x94, 4, 0, 0, 1, 1, 1, 0]; // NOPs, router alert, EOL: IHL 8
    c.expect(
        "IPv4 with options to the metadata service",
        &v4_frame(&opt, &tcp(1, 80, SYN)),
        DROP,
        MetadataBlocked,
    );
    let mut opt25 = V4::new(Ipv4Addr::from(SMTP_HOST), IPPROTO_TCP);
    opt25.options = vec![1; 40]; // the longest header: IHL 15
    c.expect(
        "IPv4 with 40 option bytes, SYN to 25",
        &v4_frame(&opt25, &tcp(1, 25, SYN)),
        PASS,
        SmtpAllowed,
    );
    let mut bad = V4::new(Ipv4Addr::from(IMDS), IPPROTO_TCP);
    bad.ihl_override = Some(4);
    // ip_rcv() discards IHL < 5 before routing: nothing to filter.
    c.expect(
        "IHL 4 (discarded by the stack)",
        &v4_frame(&bad, &tcp(1, 80, SYN)),
        PASS,
        Passed,
    );
    let mut lying = V4::new(Ipv4Addr::from(IMDS), IPPROTO_TCP);
    lying.tot_len_override = Some(9000);
    c.expect(
        "total length larger than the frame",
        &v4_frame(&lying, &tcp(1, 80, SYN)),
        DROP,
        MetadataBlocked,
    );
}

#[test]
fn vlan_tags() {
    require_privileges!();
    let mut c = Classifier::defaults();
    let ip = V4::new(Ipv4Addr::from(IMDS), IPPROTO_TCP);
    let seg = tcp(1, 80, SYN);
    c.expect(
        "802.1Q",
        &v4_frame_vlan(&ip, &seg, &[(0x8100, 100)]),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "802.1ad + 802.1Q",
        &v4_frame_vlan(&ip, &seg, &[(0x88a8, 10), (0x8100, 100)]),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "802.1Q + 802.1Q",
        &v4_frame_vlan(&ip, &seg, &[(0x8100, 10), (0x8100, 100)]),
        DROP,
        MetadataBlocked,
    );
    let ok = V4::new(Ipv4Addr::from(ALLOWED), IPPROTO_TCP);
    c.expect(
        "802.1Q to an allowed address",
        &v4_frame_vlan(&ok, &seg, &[(0x8100, 100)]),
        PASS,
        Passed,
    );
}

#[test]
fn ipv6_destinations_and_extension_headers() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.expect(
        "IPv6 TCP to AWS IMDS",
        &v6_tcp("fd00:ec2::254", 80, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "IPv6 TCP to an allowed address",
        &v6_tcp("2001:db8::80", 80, SYN),
        PASS,
        Passed,
    );
    let mut icmp = V6::new("fd00:ec2::254".parse().unwrap(), IPPROTO_ICMPV6);
    c.expect(
        "ICMPv6 to AWS IMDS",
        &v6_frame(&icmp, &[128, 0, 0, 0, 0, 1, 0, 1]),
        DROP,
        MetadataBlocked,
    );
    icmp.exts = vec![Ext::HopByHop, Ext::DestOpts, Ext::Routing, Ext::Auth];
    c.expect(
        "IPv6 with 4 extension headers to IMDS",
        &v6_frame(&icmp, &[128, 0, 0, 0]),
        DROP,
        MetadataBlocked,
    );
    let mut smtp = V6::new("2001:db8:25::25".parse().unwrap(), IPPROTO_TCP);
    smtp.exts = vec![
        Ext::HopByHop,
        Ext::DestOpts,
        Ext::Routing,
        Ext::Auth,
        Ext::DestOpts,
    ];
    c.expect(
        "SYN to 25 behind 5 extension headers",
        &v6_frame(&smtp, &tcp(1, 25, SYN)),
        PASS,
        SmtpAllowed,
    );
    smtp.exts = vec![Ext::Fragment {
        offset: 0,
        more: false,
    }];
    c.expect(
        "atomic fragment, SYN to 25",
        &v6_frame(&smtp, &tcp(1, 25, SYN)),
        PASS,
        SmtpAllowed,
    );
}

#[test]
fn smtp_burst_then_limit() {
    require_privileges!();
    let mut c = Classifier::defaults();
    // Default: 5/minute, burst 5, global.
    for i in 0..5 {
        c.expect(
            &format!("SYN {i} to 25 within the burst"),
            &v4_tcp(SMTP_HOST, 25, SYN),
            PASS,
            SmtpAllowed,
        );
    }
    c.expect(
        "SYN over the burst",
        &v4_tcp(SMTP_HOST, 587, SYN),
        DROP,
        SmtpLimited,
    );
    c.expect(
        "SYN over the burst, IPv6",
        &v6_tcp("2001:db8:25::25", 465, SYN),
        DROP,
        SmtpLimited,
    );
    // Established traffic and other ports are not connection attempts.
    c.expect("ACK to 25", &v4_tcp(SMTP_HOST, 25, ACK), PASS, Passed);
    c.expect(
        "SYN-ACK to 25",
        &v4_tcp(SMTP_HOST, 25, SYN | ACK),
        PASS,
        Passed,
    );
    c.expect(
        "SYN+RST to 25",
        &v4_tcp(SMTP_HOST, 25, SYN | RST),
        PASS,
        Passed,
    );
    c.expect(
        "SYN+FIN to 25",
        &v4_tcp(SMTP_HOST, 25, SYN | FIN),
        PASS,
        Passed,
    );
    c.expect("SYN to 80", &v4_tcp(SMTP_HOST, 80, SYN), PASS, Passed);
    c.expect("SYN to 2526", &v4_tcp(SMTP_HOST, 2526, SYN), PASS, Passed);
    // Flags iptables --syn ignores still make it a connection attempt.
    c.expect(
        "SYN+ECE+CWR+PSH+URG to 2525",
        &v4_tcp(SMTP_HOST, 2525, SYN | ECE | CWR | PSH | URG),
        DROP,
        SmtpLimited,
    );
    let udp25 = v4_frame(
        &V4::new(Ipv4Addr::from(SMTP_HOST), IPPROTO_UDP),
        &udp(1, 25, b"x"),
    );
    c.expect("UDP to 25", &udp25, PASS, Passed);
}

#[test]
fn dry_run_counts_and_drops_nothing() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.apply("dry_run = true\n[smtp]\nburst = 1\n");
    c.expect(
        "metadata in dry-run",
        &v4_tcp(IMDS, 80, SYN),
        PASS,
        MetadataBlocked,
    );
    c.expect(
        "first SYN in dry-run",
        &v4_tcp(SMTP_HOST, 25, SYN),
        PASS,
        SmtpAllowed,
    );
    c.expect(
        "second SYN in dry-run",
        &v4_tcp(SMTP_HOST, 25, SYN),
        PASS,
        SmtpLimited,
    );
    c.apply("[smtp]\nburst = 1\n");
    c.expect(
        "metadata enforcing again",
        &v4_tcp(IMDS, 80, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "SYN enforcing again (bucket carried over)",
        &v4_tcp(SMTP_HOST, 25, SYN),
        DROP,
        SmtpLimited,
    );
}

#[test]
fn not_ip_and_truncated_frames_pass() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.expect("ARP", &arp(), PASS, Passed);
    let full = v4_tcp(IMDS, 80, SYN);
    // A frame cut inside the IPv4 header cannot be fed this way: the kernel's
    // BPF_PROG_TEST_RUN refuses it (EINVAL) before the program runs.
    // Cut right after the IP header: destination known, so still blocked.
    c.expect(
        "no TCP header at all",
        &full[..14 + 20],
        DROP,
        MetadataBlocked,
    );
    let smtp = v4_tcp(SMTP_HOST, 25, SYN);
    c.expect(
        "SYN cut before the flags",
        &smtp[..14 + 20 + 8],
        PASS,
        Passed,
    );
}

#[test]
fn per_rule_counters_and_custom_rules() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.apply(
        r#"
        defaults = false
        [[block]]
        cidr = "10.0.0.0/8"
        [[block]]
        cidr = "10.1.2.3/32"
        protocol = "udp"
        ports = [53]
        [[block]]
        cidr = "2001:db8:bad::/48"
        "#,
    );
    c.expect(
        "inside 10/8",
        &v4_tcp([10, 9, 9, 9], 443, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "the /32 inside 10/8, TCP (wider rule applies)",
        &v4_tcp([10, 1, 2, 3], 443, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "IPv6 /48",
        &v6_tcp("2001:db8:bad:1::1", 443, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "the default metadata rule is gone",
        &v4_tcp(IMDS, 80, SYN),
        PASS,
        Passed,
    );
    let rules = c.counters().rules;
    let count = |d: &str| rules.iter().find(|r| r.destination == d).map(|r| r.packets);
    assert_eq!(count("10.0.0.0/8"), Some(2), "{rules:?}");
    assert_eq!(count("2001:db8:bad::/48"), Some(1), "{rules:?}");
    // Without `defaults = false` the built-in rules stay beside them.
    c.apply("[[block]]\ncidr = \"10.0.0.0/8\"\n");
    c.expect(
        "the default metadata rule beside an added one",
        &v4_tcp(IMDS, 80, SYN),
        DROP,
        MetadataBlocked,
    );
}

#[test]
fn counters_sum_every_verdict() {
    require_privileges!();
    let mut c = Classifier::defaults();
    let frames = [
        v4_tcp(IMDS, 80, SYN),
        v4_tcp(ALLOWED, 443, SYN),
        arp(),
        v6_tcp("fd00:ec2::254", 80, SYN),
    ];
    for f in &frames {
        c.run(f);
    }
    let s = c.counters();
    let total: u64 = CounterId::ALL.iter().map(|&id| s.get(id).packets).sum();
    let bytes: u64 = CounterId::ALL.iter().map(|&id| s.get(id).bytes).sum();
    assert_eq!(total, frames.len() as u64);
    assert_eq!(bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(s.get(MetadataBlocked).packets, 2);
}

#[test]
fn drop_events_are_reported_within_their_budget() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.apply("[events]\nrate = \"1/minute\"\nburst = 10\n");
    let frame = v4_tcp(IMDS, 80, SYN);
    let (verdict, _) = c.run_repeat(&frame, 100);
    assert_eq!(verdict, DROP);
    let events = c.drain_events();
    // A burst of 10, then nothing for a minute: exactly 10 reported, 90 counted as suppressed.
    assert_eq!(events.len(), 10);
    let s = c.counters();
    assert_eq!((s.events.suppressed, s.events.lost), (90, 0));
    assert_eq!(s.get(MetadataBlocked).packets, 100);
    let e = events[0];
    assert_eq!(e.verdict, MetadataBlocked as u8);
    assert_eq!(e.rule_id, 0);
    assert_eq!((e.sport, e.dport, e.proto), (40000, 80, IPPROTO_TCP));
    assert_eq!(&e.dst[12..], &IMDS);
    assert_eq!(&e.src[12..], &[172, 17, 0, 2]);
    assert_eq!(e.family, egress_ebpf_common::events::FAMILY_V4);
    // Passing traffic is never reported.
    c.run(&v4_tcp(ALLOWED, 80, SYN));
    assert!(c.drain_events().is_empty());
}

#[test]
fn disabled_events_report_nothing() {
    require_privileges!();
    let mut c = Classifier::defaults();
    c.apply("[events]\nenabled = false\n");
    c.run_repeat(&v4_tcp(IMDS, 80, SYN), 5);
    assert!(c.drain_events().is_empty());
    assert_eq!(c.counters().events.suppressed, 0);
}

/// The bridge program and the hand-off mark: a packet the endpoint program
/// judged already is handed on at once, uncounted, with the bit cleared and
/// every other mark bit kept; an unmarked one is judged as always.
#[test]
fn the_bridge_hands_on_a_marked_packet() {
    use egress_ebpf_common::{endpoint::HANDOFF_MARK, maps::PROGRAM};
    require_privileges!();
    let mut c = Classifier::defaults();
    let frame = v4_tcp(IMDS, 80, SYN);
    let before = c.counters();
    let (verdict, mark) = c.run_marked(PROGRAM, &frame, HANDOFF_MARK | 0x5);
    assert_eq!((verdict, mark), (PASS, 0x5), "hand-off: pass, bit cleared");
    let after = c.counters();
    for id in CounterId::ALL {
        assert_eq!(
            before.get(id),
            after.get(id),
            "{}: a handed-off packet is not counted",
            id.name()
        );
    }
    // Without the bit (any other mark) the bridge judges.
    let (verdict, mark) = c.run_marked(PROGRAM, &frame, !HANDOFF_MARK);
    assert_eq!((verdict, mark), (DROP, !HANDOFF_MARK));
    assert_eq!(
        c.packets(MetadataBlocked),
        before.get(MetadataBlocked).packets + 1
    );
}

/// An endpoint entry for the test skb's device (loopback, ifindex 1).
fn endpoint_entry(flags: u32) -> egress_ebpf_common::endpoint::Endpoint {
    let mut e = egress_ebpf_common::endpoint::Endpoint::empty();
    e.id = 1;
    e.slot = egress_ebpf_common::endpoint::endpoint_slot(1);
    e.flags = flags;
    e.bridge_mac = egress_tests::frames::DST_MAC;
    e
}

fn endpoint_counter(c: &Classifier, veth_id: u32, verdict: CounterId) -> u64 {
    egress_loader::observe::endpoints::read(&c.pins)
        .unwrap()
        .iter()
        .find(|(e, _)| e.ifindex == veth_id)
        .map(|(_, n)| n.by_verdict[verdict as usize].packets)
        .unwrap_or(0)
}

/// The endpoint program judges with the shared decision, counts per
/// endpoint (and globally), and marks what it passes for the bridge.
#[test]
fn the_endpoint_program_judges_counts_and_hands_off() {
    use egress_ebpf_common::{
        endpoint::{ENDPOINT_EXCEPTED, ExceptionKey, HANDOFF_MARK},
        maps::{ENDPOINT_PROGRAM, PROGRAM},
    };
    require_privileges!();
    let mut c = Classifier::defaults();
    let mut maps = c.endpoint_maps();
    maps.endpoints.set(1, endpoint_entry(0), 0).unwrap();

    let (v, mark) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp(ALLOWED, 80, SYN), 0);
    assert_eq!((v, mark), (PASS, HANDOFF_MARK), "passed and handed off");
    // The built-in rule rejects: the reset goes out of the veth itself (the
    // frame is to the bridge's MAC, for the host), and carries no mark.
    let (v, mark) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp(IMDS, 80, SYN), 0);
    assert_eq!((v, mark), (REDIRECT, 0), "a reject is answered, unmarked");
    assert_eq!(c.replies().sent, 1, "the reply program answered it");
    assert_eq!(endpoint_counter(&c, 1, Passed), 1);
    assert_eq!(endpoint_counter(&c, 1, MetadataBlocked), 1);
    assert_eq!(c.packets(MetadataBlocked), 1, "counted globally too");
    // Its drop event names the endpoint.
    let events = c.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].endpoint, events[0].ifindex), (1, 1));

    // An exception for rule 0 (169.254.169.254/32): the metadata SYN passes
    // as `excepted`; another blocked prefix (rule 1) stays blocked.
    maps.endpoints
        .set(1, endpoint_entry(ENDPOINT_EXCEPTED), 0)
        .unwrap();
    let key = ExceptionKey {
        endpoint: 1,
        rule: 0,
        _pad: 0,
    };
    maps.exceptions.insert(key, 1, 0).unwrap();
    let (v, mark) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp(IMDS, 80, SYN), 0);
    assert_eq!((v, mark), (PASS, HANDOFF_MARK));
    assert_eq!(endpoint_counter(&c, 1, Excepted), 1);
    let (v, _) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp([169, 254, 170, 2], 80, SYN), 0);
    assert_eq!(v, REDIRECT, "the exception opens its own rules only");
    // The flag is what sends the program to the exception table.
    maps.endpoints.set(1, endpoint_entry(0), 0).unwrap();
    let (v, _) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp(IMDS, 80, SYN), 0);
    assert_eq!(v, REDIRECT, "rejected again");
    // Container to container (a frame to another MAC than the bridge's):
    // the bridge forwards it to another port; not judged, not marked, not
    // counted, as before endpoints.
    let mut to_peer = v4_tcp(IMDS, 80, SYN);
    to_peer[..6].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);
    let blocked = endpoint_counter(&c, 1, MetadataBlocked);
    let (v, mark) = c.run_marked(ENDPOINT_PROGRAM, &to_peer, 0);
    assert_eq!((v, mark), (PASS, 0), "container to container is not judged");
    assert_eq!(endpoint_counter(&c, 1, MetadataBlocked), blocked);
    // No entry at all: the bridge's MAC unknown, left to the bridge
    // program (unmarked), which judges it as the backstop.
    maps.endpoints
        .set(1, egress_ebpf_common::endpoint::Endpoint::empty(), 0)
        .unwrap();
    let (v, mark) = c.run_marked(ENDPOINT_PROGRAM, &v4_tcp(IMDS, 80, SYN), 0);
    assert_eq!((v, mark), (PASS, 0));
    let (v, _) = c.run_marked(PROGRAM, &v4_tcp(IMDS, 80, SYN), 0);
    // (A drop here: under test_run the frame is not to the test device's
    // MAC, so the bridge program does not answer it.)
    assert_eq!(v, DROP, "the bridge judges what the veth left to it");
}

/// SMTP budgets at the endpoint: per-container buckets by endpoint id, an
/// exception's own budget, unlimited.
#[test]
fn endpoint_smtp_budgets() {
    use egress_ebpf_common::{
        bucket::Gcra,
        endpoint::{ENDPOINT_OWN_SMTP, ENDPOINT_SMTP_UNLIMITED},
        maps::ENDPOINT_PROGRAM,
    };
    require_privileges!();
    let mut c = Classifier::with_policy(
        "[smtp]\nrate = \"1/hour\"\nburst = 2\nscope = \"per-container\"\n",
    );
    let mut maps = c.endpoint_maps();
    maps.endpoints.set(1, endpoint_entry(0), 0).unwrap();
    let syn = v4_tcp(SMTP_HOST, 25, SYN);
    let verdicts: Vec<u32> = (0..3)
        .map(|_| c.run_marked(ENDPOINT_PROGRAM, &syn, 0).0)
        .collect();
    assert_eq!(
        verdicts,
        [PASS, PASS, DROP],
        "burst 2 in the endpoint's bucket"
    );
    assert!(
        maps.buckets.get(&1, 0).is_ok(),
        "a bucket keyed by the endpoint id"
    );
    // The bridge (the backstop) falls back to per source: a fresh bucket.
    assert_eq!(c.run(&syn), PASS);

    let mut own = endpoint_entry(ENDPOINT_OWN_SMTP);
    let g = Gcra::new(1, 3_600_000_000_000, 4).unwrap();
    own.smtp_emission_ns = g.emission_ns;
    own.smtp_burst_window_ns = g.burst_window_ns;
    maps.buckets.remove(&1).unwrap();
    maps.endpoints.set(1, own, 0).unwrap();
    let verdicts: Vec<u32> = (0..5)
        .map(|_| c.run_marked(ENDPOINT_PROGRAM, &syn, 0).0)
        .collect();
    assert_eq!(
        verdicts,
        [PASS, PASS, PASS, PASS, DROP],
        "its own burst of 4"
    );

    maps.endpoints
        .set(1, endpoint_entry(ENDPOINT_SMTP_UNLIMITED), 0)
        .unwrap();
    for _ in 0..20 {
        assert_eq!(c.run_marked(ENDPOINT_PROGRAM, &syn, 0).0, PASS, "unlimited");
    }
}

/// The prefix pre-filter (`PREFILTER`) is read before the tries: a block
/// it marks open skips the trie even where the trie holds an entry, so the
/// loader's bitmap is what keeps the blocked set whole. Opened by hand
/// here, the metadata address passes; the loader's own bitmap (applied
/// again) blocks it, and opens the blocks no rule touches.
#[test]
fn the_prefilter_is_read_before_the_tries() {
    use egress_ebpf_common::prefilter::{PREFILTER_V4, PREFILTER_V6, Prefilter, hi16};
    require_privileges!();
    let mut c = Classifier::defaults();
    let v4 = c.maps().prefilter.get(&PREFILTER_V4, 0).unwrap();
    let v6 = c.maps().prefilter.get(&PREFILTER_V6, 0).unwrap();
    assert!(!v4.is_open(hi16(169, 254)) && v4.is_open(hi16(198, 51)));
    assert!(!v6.is_open(0xfd00) && v6.is_open(0x2001));
    for family in [PREFILTER_V4, PREFILTER_V6] {
        c.maps()
            .prefilter
            .set(family, Prefilter::open(), 0)
            .unwrap();
    }
    c.expect(
        "TCP SYN to the metadata service, its /16 opened by hand",
        &v4_tcp(IMDS, 80, SYN),
        PASS,
        Passed,
    );
    c.expect(
        "IPv6 TCP to AWS IMDS, its block opened by hand",
        &v6_tcp("fd00:ec2::254", 80, SYN),
        PASS,
        Passed,
    );
    // An apply rewrites the bitmap whenever it differs from the policy's.
    c.apply("");
    c.expect(
        "TCP SYN to the metadata service",
        &v4_tcp(IMDS, 80, SYN),
        DROP,
        MetadataBlocked,
    );
    c.expect(
        "IPv6 TCP to AWS IMDS",
        &v6_tcp("fd00:ec2::254", 80, SYN),
        DROP,
        MetadataBlocked,
    );
}
