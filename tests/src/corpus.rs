//! The adversarial corpus: what an attacker in a container can put on the
//! bridge, as tables of frames with the verdict and counter the policy
//! requires and why. Run through the kernel by
//! tests/tests/integration/adversarial_frames.rs (BPF_PROG_TEST_RUN), through
//! the host's copy of the same code by tests/tests/integration/host_parser.rs,
//! and through both at once by tests/tests/integration/kernel_vs_host.rs.

use std::net::Ipv4Addr;

use egress_ebpf_common::counters::CounterId::{self, *};

use crate::{
    frames::*,
    test_run::{DROP, PASS},
};

const IMDS: [u8; 4] = [169, 254, 169, 254];
const SMTP_HOST: [u8; 4] = [198, 51, 100, 25];
/// A burst no test reaches: every connection attempt is admitted and counted
/// as smtp_allowed, so the counter shows what the classifier took for one.
pub const GENEROUS: &str = "[smtp]\nburst = 100000\nrate = \"1/hour\"\n";

pub struct Case {
    pub what: String,
    pub why: &'static str,
    pub frame: Vec<u8>,
    /// `test_run::PASS` or `test_run::DROP`.
    pub verdict: u32,
    pub counter: CounterId,
}

impl Case {
    /// "what (expected because why)", for assertion messages.
    pub fn label(&self) -> String {
        format!("{} (expected because {})", self.what, self.why)
    }
}

/// Cases judged under one policy (TOML, as `run --config` takes it).
pub struct Table {
    pub name: &'static str,
    pub policy: &'static str,
    pub cases: Vec<Case>,
}

fn case(
    what: impl Into<String>,
    why: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    counter: CounterId,
) -> Case {
    Case {
        what: what.into(),
        why,
        frame,
        verdict,
        counter,
    }
}

fn v4(dst: [u8; 4], proto: u8) -> V4 {
    V4::new(Ipv4Addr::from(dst), proto)
}

fn v6_with(exts: Vec<Ext>, dst: &str, l4: Vec<u8>) -> Vec<u8> {
    let mut ip = V6::new(dst.parse().unwrap(), IPPROTO_TCP);
    ip.exts = exts;
    v6_frame(&ip, &l4)
}

/// Every table.
pub fn all() -> Vec<Table> {
    vec![
        truncated_at_every_header_boundary(),
        ipv4_header_lies(),
        vlan_stacks(),
        ipv6_extension_header_chains(),
        ipv4_fragments(),
        ipv6_fragments(),
        every_tcp_flag_combination_with_syn(),
        tcp_data_offset_below_five(),
        azure_port_rule_and_fragments(),
    ]
}

pub fn truncated_at_every_header_boundary() -> Table {
    let mut cases = Vec::new();
    let md = v4_tcp(IMDS, 80, SYN);
    let smtp = v4_tcp(SMTP_HOST, 25, SYN);
    // BPF_PROG_TEST_RUN refuses frames shorter than Ethernet + IPv4 headers,
    // so cuts start at 34 bytes (the real-traffic suite covers shorter ones).
    for len in 34..=md.len() {
        cases.push(case(
            format!("metadata SYN cut to {len} bytes"),
            "the destination is in every cut",
            md[..len].to_vec(),
            DROP,
            MetadataBlocked,
        ));
    }
    for len in 34..smtp.len() {
        let expected = if len >= 14 + 20 + 14 {
            SmtpAllowed
        } else {
            Passed
        };
        cases.push(case(
            format!("SMTP SYN cut to {len} bytes"),
            "a whole datagram without its flags byte is no connection attempt (the receiver drops it)",
            smtp[..len].to_vec(),
            PASS,
            expected,
        ));
    }
    let v6 = v6_tcp("fd00:ec2::254", 80, SYN);
    // test_run needs the whole IPv6 header too.
    for len in 54..=v6.len() {
        cases.push(case(
            format!("IPv6 metadata SYN cut to {len} bytes"),
            "the destination is in every cut",
            v6[..len].to_vec(),
            DROP,
            MetadataBlocked,
        ));
    }
    Table {
        name: "truncated",
        policy: GENEROUS,
        cases,
    }
}

pub fn ipv4_header_lies() -> Table {
    let seg = tcp(1, 25, SYN);
    let mut ihl4 = v4(IMDS, IPPROTO_TCP);
    ihl4.ihl_override = Some(4);
    let mut ihl15 = v4(SMTP_HOST, IPPROTO_TCP);
    ihl15.ihl_override = Some(15); // claims 40 option bytes that are the TCP header
    let mut ihl15_md = v4(IMDS, IPPROTO_TCP);
    ihl15_md.ihl_override = Some(15);
    let mut long = v4(IMDS, IPPROTO_TCP);
    long.tot_len_override = Some(65535);
    let mut short = v4(SMTP_HOST, IPPROTO_TCP);
    short.tot_len_override = Some(24);
    let mut v5 = v4(IMDS, IPPROTO_TCP);
    v5.options = vec![];
    let mut version5 = v4_frame(&v5, &seg);
    version5[14] = 0x55; // version 5
    Table {
        name: "ipv4_lies",
        policy: GENEROUS,
        cases: vec![
            case(
                "IHL 4 to metadata",
                "ip_rcv() discards IHL < 5 before routing",
                v4_frame(&ihl4, &seg),
                PASS,
                Passed,
            ),
            case(
                "IHL 15 over a 20-byte TCP header to 25",
                "the 'options' hide the ports: the TCP header the receiver sees is past the frame",
                v4_frame(&ihl15, &seg),
                PASS,
                Passed,
            ),
            case(
                "IHL 15 to metadata",
                "the destination does not depend on the header length",
                v4_frame(&ihl15_md, &seg),
                DROP,
                MetadataBlocked,
            ),
            case(
                "total length 65535 to metadata",
                "the destination is still there",
                v4_frame(&long, &seg),
                DROP,
                MetadataBlocked,
            ),
            case(
                "total length 24 with a SYN to 25 after it",
                "the stack trims to 24 bytes: what remains is no TCP segment, but we count the attempt anyway (stricter)",
                v4_frame(&short, &seg),
                PASS,
                SmtpAllowed,
            ),
            case(
                "IP version 5",
                "ip_rcv() discards it",
                version5,
                PASS,
                Passed,
            ),
        ],
    }
}

pub fn vlan_stacks() -> Table {
    let ip = v4(IMDS, IPPROTO_TCP);
    let seg = tcp(1, 80, SYN);
    let smtp = v4(SMTP_HOST, IPPROTO_TCP);
    let syn25 = tcp(1, 25, SYN);
    Table {
        name: "vlan_stacks",
        policy: GENEROUS,
        cases: vec![
            case(
                "802.1Q, metadata",
                "parsed through one tag",
                v4_frame_vlan(&ip, &seg, &[(0x8100, 5)]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "QinQ 802.1ad+802.1Q, metadata",
                "parsed through two tags",
                v4_frame_vlan(&ip, &seg, &[(0x88a8, 5), (0x8100, 6)]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "QinQ, SYN to 25",
                "parsed through two tags",
                v4_frame_vlan(&smtp, &syn25, &[(0x88a8, 5), (0x8100, 6)]),
                PASS,
                SmtpAllowed,
            ),
            case(
                "three tags, metadata",
                "beyond two tags the frame is not IP to this host: after the kernel strips one tag into skb metadata, two are left and no VLAN device of a bridge host routes that",
                v4_frame_vlan(&ip, &seg, &[(0x88a8, 5), (0x8100, 6), (0x8100, 7)]),
                PASS,
                Passed,
            ),
            case(
                "VLAN tag cut short",
                "nothing to match",
                ethernet(0x8100, &[], &[0, 5]),
                PASS,
                Passed,
            ),
        ],
    }
}

pub fn ipv6_extension_header_chains() -> Table {
    let eight = vec![
        Ext::HopByHop,
        Ext::DestOpts,
        Ext::Routing,
        Ext::Auth,
        Ext::DestOpts,
        Ext::Auth,
        Ext::DestOpts,
        Ext::Routing,
    ];
    let mut nine = eight.clone();
    nine.push(Ext::DestOpts);
    let mut truncated = v6_with(
        vec![Ext::HopByHop, Ext::DestOpts],
        "2001:db8:25::25",
        tcp(1, 25, SYN),
    );
    truncated.truncate(14 + 40 + 8 + 1); // inside the second extension header
    Table {
        name: "ipv6_chains",
        policy: GENEROUS,
        cases: vec![
            case(
                "8 extension headers, SYN to 25",
                "within the parser's bound",
                v6_with(eight.clone(), "2001:db8:25::25", tcp(1, 25, SYN)),
                PASS,
                SmtpAllowed,
            ),
            case(
                "9 extension headers, SYN to 25",
                "a chain longer than the bound hides the transport header on purpose",
                v6_with(nine.clone(), "2001:db8:25::25", tcp(1, 25, SYN)),
                DROP,
                Evasive,
            ),
            case(
                "9 extension headers, to IMDS",
                "the destination comes first",
                v6_with(nine, "fd00:ec2::254", tcp(1, 80, SYN)),
                DROP,
                MetadataBlocked,
            ),
            case(
                "chain cut inside a header (whole packet)",
                "the receiver discards a truncated packet",
                truncated,
                PASS,
                Passed,
            ),
            case(
                "8 extension headers, ACK to 443",
                "nothing to match",
                v6_with(eight, "2001:db8::443", tcp(1, 443, ACK)),
                PASS,
                Passed,
            ),
        ],
    }
}

pub fn ipv4_fragments() -> Table {
    let frag = |dst: [u8; 4], offset: u16, more: bool| {
        let mut ip = v4(dst, IPPROTO_TCP);
        ip.frag_offset = offset;
        ip.more_fragments = more;
        ip
    };
    let syn25 = tcp(1, 25, SYN);
    let ack25 = tcp(1, 25, ACK);
    Table {
        name: "ipv4_fragments",
        policy: GENEROUS,
        cases: vec![
            case(
                "first fragment, SYN to 25",
                "a fragmented SYN is still a connection attempt",
                v4_frame(&frag(SMTP_HOST, 0, true), &syn25),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment, ACK to 25",
                "RFC 1858: a later overlapping fragment can rewrite the flags, so any first fragment to 25 counts",
                v4_frame(&frag(SMTP_HOST, 0, true), &ack25),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment with the TCP header split after the ports",
                "ports visible, flags not: counted as an attempt",
                v4_frame(&frag(SMTP_HOST, 0, true), &syn25[..8]),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment with 2 bytes of TCP",
                "a first fragment too short to hold the ports exists only to hide them",
                v4_frame(&frag(SMTP_HOST, 0, true), &syn25[..2]),
                DROP,
                Evasive,
            ),
            case(
                "TCP fragment at offset 8 bytes",
                "RFC 1858: it can only serve to overwrite the first fragment's flags",
                v4_frame(&frag(SMTP_HOST, 1, true), &[SYN; 16]),
                DROP,
                Evasive,
            ),
            case(
                "middle fragment to 198.51.100.25",
                "no transport header: cannot open a connection without the first fragment",
                v4_frame(&frag(SMTP_HOST, 100, true), &[0; 64]),
                PASS,
                Passed,
            ),
            case(
                "last fragment to 198.51.100.25",
                "likewise",
                v4_frame(&frag(SMTP_HOST, 200, false), &[0; 64]),
                PASS,
                Passed,
            ),
            case(
                "overlapping second offset-0 fragment, SYN to 25",
                "every fragment that can carry the port is inspected, however many there are",
                v4_frame(&frag(SMTP_HOST, 0, true), &syn25),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment to metadata",
                "every fragment carries the destination",
                v4_frame(&frag(IMDS, 0, true), &tcp(1, 80, SYN)),
                DROP,
                MetadataBlocked,
            ),
            case(
                "middle fragment to metadata",
                "every fragment carries the destination",
                v4_frame(&frag(IMDS, 100, true), &[0; 64]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "last fragment to metadata",
                "every fragment carries the destination",
                v4_frame(&frag(IMDS, 200, false), &[0; 64]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "UDP first fragment with 2 bytes",
                "hides UDP ports from port rules",
                {
                    let mut ip = frag(SMTP_HOST, 0, true);
                    ip.proto = IPPROTO_UDP;
                    v4_frame(&ip, &[0, 53])
                },
                DROP,
                Evasive,
            ),
            case(
                "ICMP first fragment",
                "no ports to hide",
                {
                    let mut ip = frag(SMTP_HOST, 0, true);
                    ip.proto = IPPROTO_ICMP;
                    v4_frame(&ip, &[8, 0])
                },
                PASS,
                Passed,
            ),
        ],
    }
}

pub fn ipv6_fragments() -> Table {
    let f = |offset: u16, more: bool| Ext::Fragment { offset, more };
    let mut no_l4 = v6_with(
        vec![f(0, true), Ext::DestOpts],
        "2001:db8:25::25",
        tcp(1, 25, SYN),
    );
    no_l4.truncate(14 + 40 + 8 + 4); // the destination options header does not fit
    Table {
        name: "ipv6_fragments",
        policy: GENEROUS,
        cases: vec![
            case(
                "first fragment, SYN to 25",
                "counted as an attempt",
                v6_with(vec![f(0, true)], "2001:db8:25::25", tcp(1, 25, SYN)),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment, ACK to 25",
                "flags of a fragmented datagram cannot be trusted",
                v6_with(vec![f(0, true)], "2001:db8:25::25", tcp(1, 25, ACK)),
                PASS,
                SmtpAllowed,
            ),
            case(
                "first fragment without the whole header chain",
                "RFC 7112 requires the chain in the first fragment",
                no_l4,
                DROP,
                Evasive,
            ),
            case(
                "first fragment with 2 bytes of TCP",
                "hides the ports",
                v6_with(
                    vec![f(0, true)],
                    "2001:db8:25::25",
                    tcp(1, 25, SYN)[..2].to_vec(),
                ),
                DROP,
                Evasive,
            ),
            case(
                "later fragment to 25's host",
                "no transport header of its own",
                v6_with(vec![f(100, true)], "2001:db8:25::25", vec![0; 64]),
                PASS,
                Passed,
            ),
            case(
                "later fragment to IMDS",
                "every fragment carries the destination",
                v6_with(vec![f(100, false)], "fd00:ec2::254", vec![0; 64]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "fragment behind hop-by-hop and routing headers, SYN to 25",
                "walked",
                v6_with(
                    vec![Ext::HopByHop, Ext::Routing, f(0, true)],
                    "2001:db8:25::25",
                    tcp(1, 25, SYN),
                ),
                PASS,
                SmtpAllowed,
            ),
        ],
    }
}

pub fn every_tcp_flag_combination_with_syn() -> Table {
    let mut cases = Vec::new();
    for other in 0u8..=255 {
        if other & SYN != 0 {
            continue; // each combination with SYN once
        }
        let flags = other | SYN;
        let attempt = flags & (ACK | RST | FIN) == 0;
        let counter = if attempt { SmtpAllowed } else { Passed };
        cases.push(case(
            format!("flags {flags:#04x} to 25"),
            "iptables --syn is SYN without ACK, RST, FIN",
            v4_tcp(SMTP_HOST, 25, flags),
            PASS,
            counter,
        ));
    }
    Table {
        name: "tcp_flags",
        policy: GENEROUS,
        cases,
    }
}

pub fn tcp_data_offset_below_five() -> Table {
    let mut cases = Vec::new();
    for doff in 0u8..5 {
        let mut seg = tcp(1, 25, SYN);
        seg[12] = doff << 4;
        cases.push(case(
            format!("SYN to 25 with data offset {doff}"),
            "the flags byte decides; the receiver drops the segment anyway, so counting it only costs the sender",
            v4_frame(&v4(SMTP_HOST, IPPROTO_TCP), &seg),
            PASS,
            SmtpAllowed,
        ));
    }
    Table {
        name: "tcp_doff",
        policy: GENEROUS,
        cases,
    }
}

pub fn azure_port_rule_and_fragments() -> Table {
    let wire = [168, 63, 129, 16];
    let mut later = v4(wire, IPPROTO_TCP);
    later.frag_offset = 50;
    let mut first_short = v4(wire, IPPROTO_TCP);
    first_short.more_fragments = true;
    Table {
        name: "azure_fragments",
        policy: GENEROUS,
        cases: vec![
            case(
                "later TCP fragment to WireServer",
                "its port is unknown: the TCP rule fails closed",
                v4_frame(&later, &[0; 32]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "first fragment to WireServer port 80",
                "port visible",
                v4_frame(&first_short, &tcp(1, 80, ACK)[..8]),
                DROP,
                MetadataBlocked,
            ),
            case(
                "first fragment to WireServer port 53",
                "DNS stays open",
                v4_frame(&first_short, &tcp(1, 53, SYN)[..8]),
                PASS,
                Passed,
            ),
        ],
    }
}
