//! A connection as the per-packet decision sees it: the first packet a
//! client sends (a TCP SYN, a UDP datagram), built as the parser would
//! report it, and judged by the decision the kernel runs
//! (`egress_ebpf_common::decide`) against a model of the maps. For the
//! warnings of `check-config` and for `explain`; nothing is sent.

use std::net::IpAddr;

use egress_ebpf_common::{
    decide::{Decision, PolicyView, decide},
    model::PolicyModel,
    parse::{Family, Fragment, Parsed, TCP_SYN, Transport, v4_mapped},
    rules::DestPort,
};

use crate::policy::{
    apply::{policy_config, trie_entries},
    values::{Policy, Protocol},
};

/// A source port as a client's stack would pick one.
const CLIENT_PORT: u16 = 40000;

/// What the parser reports of a client's first packet from `src` to
/// `dst:port` over `protocol` (an untagged Ethernet frame). `src` and `dst`
/// must be of one family.
pub fn first_packet(src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Parsed {
    let (family, src, dst, l4) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            Family::V4,
            v4_mapped(&s.octets()),
            v4_mapped(&d.octets()),
            34,
        ),
        (s, d) => (Family::V6, mapped(s), mapped(d), 54),
    };
    let tcp = protocol == Protocol::Tcp;
    Parsed {
        family,
        src,
        dst,
        transport: Transport {
            proto: protocol.number(),
            dport: DestPort::known(port),
            sport: CLIENT_PORT,
            tcp_flags: if tcp { TCP_SYN } else { 0 },
            tcp_flags_seen: tcp,
            fragment: Fragment::Whole,
        },
        evasive: false,
        l3_offset: 14,
        l4_offset: l4,
    }
}

fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The maps `apply` would write for `policy`, as a model with full buckets.
pub fn model(policy: &Policy) -> PolicyModel {
    let (v4, v6) = trie_entries(policy).expect("a built policy has valid trie entries");
    PolicyModel::new(v4, v6, policy_config(policy))
}

/// The decision for `parsed` under `view` (a model of the maps, or a
/// hook's view over one: its buckets are charged, never the kernel's).
pub fn judge<'m, V: PolicyView>(view: &'m V, parsed: &Parsed) -> Decision<'m> {
    decide(parsed, view)
}
