//! Source routes: the addresses an IPv4 LSRR/SSRR option or an IPv6
//! routing header names besides the destination in the IP header. A host
//! that honours the route (`accept_source_route`, `seg6_enabled`; this one
//! included, when it is the header's destination) sends the packet on to
//! each, so each is judged like the destination (issue 25).
//!
//! Not on the classifiers' main path: walking options and routing headers
//! there took the parser past the verifier's 1M-instruction budget. The main
//! path only asks [`may_carry`] (a comparison of offsets the parser found
//! anyway) and hands such a rare packet, when it would pass, to a program of
//! its own (`egress_route`, a tail call) that runs [`judge`].

use crate::{
    counters::CounterId,
    decide::PolicyView,
    packet::Packet,
    parse::{
        Family, IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_ROUTING, MAX_IPV6_EXT_HEADERS, Parsed,
    },
    rules::{NO_RULE, RuleHit},
};

/// Most addresses of a source route that are judged (IPv4 LSRR/SSRR,
/// IPv6 routing header types 0, 2 and 4); a route naming more is evasive.
/// Linux sends one hop this way from a socket (`IP_OPTIONS`,
/// `IPV6_RTHDR`), and source routing is otherwise dead on the Internet
/// (RFC 5095 deprecated type 0). The bound is the verifier's: each address
/// is a trie lookup and a rule match on every path through the program.
pub const MAX_ROUTE_ADDRS: usize = 4;

/// Most steps of the IPv4 options walk: an option, or a run of up to 8
/// no-ops (padding), is one step, so the longest header of padding (40
/// no-ops) is read whole and passes. A header with more options than the
/// walk reads, where a route could still follow, is evasive (no stack sends
/// one: a router alert, a route, a timestamp and padding are the lot). The
/// bound is the verifier's: each step is a packet read whose offset depends
/// on the last; 40 single-byte steps took the route program past 1M
/// instructions.
pub const MAX_IPV4_OPTIONS: usize = 8;

/// IPv4 options: loose and strict source route (RFC 791), end of list, no-op.
pub const IPOPT_END: u8 = 0;
pub const IPOPT_NOOP: u8 = 1;
pub const IPOPT_LSRR: u8 = 131;
pub const IPOPT_SSRR: u8 = 137;
/// IPv6 routing header types that name addresses the packet goes to:
/// 0 (RFC 2460, deprecated by RFC 5095), 2 (Mobile IPv6's home address,
/// RFC 6275), 4 (segment routing, RFC 8754).
pub const RTHDR_TYPE_0: u8 = 0;
pub const RTHDR_TYPE_2: u8 = 2;
pub const RTHDR_SRH: u8 = 4;

const IPV4_HLEN: u16 = 20;
const IPV6_HLEN: u16 = 40;

/// Whether the packet may carry a source route, from what the parser found
/// anyway: IPv4 options (any: IHL > 5), or IPv6 extension headers (the
/// upper-layer header after the fixed header, or not reached). Cheap enough
/// for the main path; coarse (an IGMP report's router alert is an option),
/// so [`judge`] looks closer.
#[inline(always)]
pub fn may_carry(parsed: &Parsed) -> bool {
    match parsed.family {
        Family::NotIp => false,
        Family::V4 => parsed.l4_offset > parsed.l3_offset + IPV4_HLEN,
        Family::V6 => parsed.l4_offset == 0 || parsed.l4_offset > parsed.l3_offset + IPV6_HLEN,
    }
}

/// Where the addresses of a source route are: `len` addresses back to back
/// from `offset`, 4 bytes each for IPv4, 16 for IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRoute {
    pub offset: u16,
    pub len: u8,
    /// The packet carries a source route, even one naming no address.
    pub present: bool,
}

impl SourceRoute {
    pub const NONE: Self = Self {
        offset: 0,
        len: 0,
        present: false,
    };
}

/// The source route of the packet `parse` saw as `parsed`, and whether it
/// hides addresses (more than [`MAX_ROUTE_ADDRS`], a second route, a route
/// past the walk's bounds).
#[inline(always)]
pub fn find<P: Packet + ?Sized>(pkt: &P, parsed: &Parsed) -> (SourceRoute, bool) {
    let l3 = parsed.l3_offset as usize;
    let mut route = SourceRoute::NONE;
    let hidden = match parsed.family {
        Family::NotIp => false,
        Family::V4 => ipv4_route(pkt, l3 + 20, parsed.l4_offset as usize, &mut route),
        Family::V6 => ipv6_routes(pkt, l3, &mut route),
    };
    (route, hidden)
}

/// Walks the IPv4 options in `start..end` and records a loose or strict
/// source route in `route`. True when a second route follows the first
/// (which one a host honours is its own choice), when the route names more
/// than [`MAX_ROUTE_ADDRS`], or when a route may hide past
/// [`MAX_IPV4_OPTIONS`].
/// Malformed options (a length below 2 or past the header) end the walk:
/// the receiving host's `ip_options_compile()` discards such a packet.
#[inline(always)]
fn ipv4_route<P: Packet + ?Sized>(
    pkt: &P,
    start: usize,
    end: usize,
    route: &mut SourceRoute,
) -> bool {
    let mut off = start;
    // One step past the bound, to look at what the walk leaves unread. A
    // constant trip count: the shape the verifier bounds.
    for step in 0..=MAX_IPV4_OPTIONS {
        if off >= end {
            break;
        }
        // Two bytes (type and length). A one-byte option in the header's
        // last byte, with nothing after the header, reads nothing here and
        // ends the walk: it names no route.
        let Some(o) = pkt.load::<2>(off) else {
            break;
        };
        if step == MAX_IPV4_OPTIONS {
            // More options, with room for a route's type, length and
            // pointer, that the walk does not read: evasive, unless the
            // list ends here.
            return o[0] != IPOPT_END && off + 3 <= end;
        }
        if o[0] == IPOPT_END {
            break;
        }
        if o[0] == IPOPT_NOOP {
            // A run of no-ops (padding) is one step: up to 8 at once, so
            // the bound covers the longest header of them.
            let n = match pkt.load::<8>(off) {
                Some(w) => u64::from_be_bytes(w),
                None => 0,
            };
            let mut run = 1;
            while run < 8 && (n >> (56 - 8 * run)) as u8 == IPOPT_NOOP {
                run += 1;
            }
            off += run;
            continue;
        }
        let len = o[1] as usize;
        if len < 2 || off + len > end {
            break;
        }
        if o[0] == IPOPT_LSRR || o[0] == IPOPT_SSRR {
            if route.present {
                // ip_options_compile() refuses a second one; a host that
                // does not run it (a router) might honour either.
                return true;
            }
            // Type, length, pointer, then 4 bytes per hop (at most 9).
            let hops = len.saturating_sub(3) / 4;
            *route = SourceRoute {
                offset: (off + 3) as u16,
                len: hops as u8,
                present: true,
            };
            if hops > MAX_ROUTE_ADDRS {
                return true;
            }
        }
        off += len;
    }
    false
}

/// Walks the IPv6 extension headers after the fixed header at `l3` as far
/// as they may hold a routing header (hop-by-hop and destination options
/// before it, RFC 8200 4.1) and records the route. A chain the walk does not
/// finish within [`MAX_IPV6_EXT_HEADERS`] was evasive to the main parser
/// already (dropped there).
#[inline(always)]
fn ipv6_routes<P: Packet + ?Sized>(pkt: &P, l3: usize, route: &mut SourceRoute) -> bool {
    // Two bytes (next header, hop limit), not one: a one-byte packet read
    // compiles to a bounds check the verifier does not follow (see the
    // parser's TCP flags read).
    let Some(h) = pkt.load::<2>(l3 + 6) else {
        return false;
    };
    let mut next = h[0];
    let mut off = l3 + 40;
    let mut hidden = false;
    // A constant trip count: the shape the verifier bounds.
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_ROUTING => {
                // Next header, length (8-byte units past the first 8), type,
                // segments left, and type 4's last entry (byte 4).
                let Some(r) = pkt.load::<8>(off) else {
                    break;
                };
                next = r[0];
                hidden |= ipv6_route(off, r, route);
                off += (r[1] as usize + 1) * 8;
            }
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => {
                let Some(e) = pkt.load::<2>(off) else {
                    break;
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            // The fragment header (a route after it is only honoured after
            // reassembly, and a later fragment has no header to judge), and
            // the upper-layer header.
            _ => break,
        }
    }
    hidden
}

/// Records where the addresses of the routing header at `off` (its first 8
/// bytes in `r`) are. True when the route hides addresses: more than
/// [`MAX_ROUTE_ADDRS`], or a second routing header naming addresses
/// (RFC 8200 allows one).
/// Other types (3, RPL's compressed addresses) name nothing here.
#[inline(always)]
fn ipv6_route(off: usize, r: [u8; 8], route: &mut SourceRoute) -> bool {
    // 16-byte slots after the first 8 bytes.
    let slots = r[1] as usize / 2;
    let count = match r[2] {
        RTHDR_TYPE_0 | RTHDR_TYPE_2 => slots,
        // Segments 0..=last entry; TLVs may follow them.
        RTHDR_SRH => {
            let segments = r[4] as usize + 1;
            if segments < slots { segments } else { slots }
        }
        _ => return false,
    };
    // One naming no address (segments left 0, the corpus's padding) sends
    // the packet nowhere else.
    if count == 0 {
        route.present = true;
        return false;
    }
    if route.len != 0 {
        return true;
    }
    *route = SourceRoute {
        offset: (off + 8) as u16,
        len: count as u8,
        present: true,
    };
    count > MAX_ROUTE_ADDRS
}

/// `find`'s answer in one word, for a helper to copy ([`unpack`]).
#[inline(always)]
pub fn pack(route: SourceRoute, hidden: bool) -> u64 {
    route.offset as u64
        | (route.len as u64) << 16
        | (route.present as u64) << 24
        | (hidden as u64) << 25
}

/// The route and `hidden` of [`pack`]'s word. All ones (a failed copy)
/// reads as a route that hides addresses: evasive.
#[inline(always)]
pub fn unpack(v: u64) -> (SourceRoute, bool) {
    (
        SourceRoute {
            offset: v as u16,
            len: (v >> 16) as u8,
            present: (v >> 24) & 1 != 0,
        },
        (v >> 25) & 1 != 0,
    )
}

/// What the route check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteVerdict {
    /// `MetadataBlocked` (an address a block rule stops, `rule`),
    /// `Evasive` (the route hides addresses), or `Passed` (nothing found:
    /// the main decision stands).
    pub verdict: CounterId,
    pub rule: u16,
    /// The rule's action is reject.
    pub reject: bool,
}

impl RouteVerdict {
    pub const CLEAN: Self = Self {
        verdict: CounterId::Passed,
        rule: NO_RULE,
        reject: false,
    };
}

/// Judges the addresses of the packet's source route (read from `pkt`)
/// with the block rules, the packet's protocol and port (the route's hops
/// forward the packet itself) and the sender's exceptions, as `decide`
/// judges the destination. An address cut off by the frame's end names
/// nothing: the receiver discards the packet.
#[inline(always)]
pub fn judge<P: Packet + ?Sized, V: PolicyView + ?Sized>(
    pkt: &P,
    view: &V,
    parsed: &Parsed,
) -> RouteVerdict {
    let (route, hidden) = find(pkt, parsed);
    judge_route(pkt, view, parsed, route, hidden)
}

/// [`judge`] of the route [`find`] found (`hidden`: it hides addresses).
/// Apart for the classifier, which passes the route through a helper
/// between the two so that the verifier checks the lookups once, not once
/// per way out of the walk ([`pack`]).
#[inline(always)]
pub fn judge_route<P: Packet + ?Sized, V: PolicyView + ?Sized>(
    pkt: &P,
    view: &V,
    parsed: &Parsed,
    route: SourceRoute,
    hidden: bool,
) -> RouteVerdict {
    let t = &parsed.transport;
    let first = route.offset as usize;
    let mut i = 0;
    // Fixed trip count with an early exit at the length: the bound the
    // verifier sees is the constant.
    while i < MAX_ROUTE_ADDRS {
        if i >= route.len as usize {
            break;
        }
        let blocked = match parsed.family {
            Family::V4 => match pkt.load::<4>(first + 4 * i) {
                Some(a) => view.blocked_v4(&a),
                None => None,
            },
            _ => match pkt.load::<16>(first + 16 * i) {
                Some(a) => view.blocked_v6(&a),
                None => None,
            },
        };
        i += 1;
        let hit = match blocked {
            Some(rule) => rule.matching_rule(t.proto, t.dport),
            None => RuleHit::NONE,
        };
        if hit.is_hit() && !view.excepted(hit.rule) {
            return RouteVerdict {
                verdict: CounterId::MetadataBlocked,
                rule: hit.rule,
                reject: hit.rejects(),
            };
        }
    }
    if hidden {
        return RouteVerdict {
            verdict: CounterId::Evasive,
            rule: NO_RULE,
            reject: false,
        };
    }
    RouteVerdict::CLEAN
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;

    use super::*;
    use crate::{
        config::PolicyConfig, decide::decide, model::PolicyModel, parse::parse, rules::BlockRule,
    };

    const IMDS: [u8; 4] = [169, 254, 169, 254];
    const OPEN: [u8; 4] = [192, 0, 2, 10];
    const OPEN2: [u8; 4] = [198, 51, 100, 7];
    const AWS6: [u8; 16] = [
        0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54,
    ];
    const OPEN6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn model() -> PolicyModel {
        let mut all = BlockRule::empty();
        all.all_rule_id = 0;
        let mut v4 = BTreeMap::new();
        v4.insert((32, IMDS), all);
        let mut v6 = BTreeMap::new();
        v6.insert((128, AWS6), all);
        PolicyModel::new(v4, v6, PolicyConfig::empty())
    }

    /// An Ethernet + IPv4 frame to `dst` with `options` (padded to 4 bytes
    /// with no-ops), then a TCP SYN to port 80.
    fn v4_frame(dst: [u8; 4], options: &[u8]) -> alloc::vec::Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(IPOPT_NOOP);
        }
        let ihl = 20 + opts.len();
        let mut f = alloc::vec![0u8; 14 + ihl + 20];
        f[12] = 0x08;
        f[14] = 0x40 | (ihl / 4) as u8;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[172, 17, 0, 2]);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..34 + opts.len()].copy_from_slice(&opts);
        let l4 = 14 + ihl;
        f[l4 + 2..l4 + 4].copy_from_slice(&80u16.to_be_bytes());
        f[l4 + 12] = 0x50;
        f[l4 + 13] = 0x02;
        f
    }

    fn srr(kind: u8, hops: &[[u8; 4]]) -> alloc::vec::Vec<u8> {
        let mut o = alloc::vec![kind, (3 + 4 * hops.len()) as u8, 4];
        for h in hops {
            o.extend_from_slice(h);
        }
        o
    }

    /// An Ethernet + IPv6 frame to `dst` with a routing header of `kind`
    /// naming `addrs`, then a TCP SYN to port 80.
    fn v6_frame(dst: [u8; 16], kind: u8, addrs: &[[u8; 16]]) -> alloc::vec::Vec<u8> {
        let rh = 8 + 16 * addrs.len();
        let mut f = alloc::vec![0u8; 14 + 40 + rh + 20];
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14] = 0x60;
        f[14 + 6] = 43;
        f[14 + 8..14 + 24].copy_from_slice(&OPEN6);
        f[14 + 24..14 + 40].copy_from_slice(&dst);
        let r = 54;
        f[r] = 6;
        f[r + 1] = (2 * addrs.len()) as u8;
        f[r + 2] = kind;
        f[r + 3] = addrs.len() as u8;
        f[r + 4] = addrs.len().saturating_sub(1) as u8;
        for (i, a) in addrs.iter().enumerate() {
            f[r + 8 + 16 * i..r + 24 + 16 * i].copy_from_slice(a);
        }
        let l4 = r + rh;
        f[l4 + 2..l4 + 4].copy_from_slice(&80u16.to_be_bytes());
        f[l4 + 12] = 0x50;
        f[l4 + 13] = 0x02;
        f
    }

    fn route(frame: &[u8]) -> SourceRoute {
        let (r, hidden) = find(frame, &parse(frame));
        assert_eq!(unpack(pack(r, hidden)), (r, hidden));
        r
    }

    /// What the classifiers do: the main decision, then, for a packet it
    /// passes that may carry a route, the route program's verdict.
    fn verdict(frame: &[u8]) -> CounterId {
        let parsed = parse(frame);
        let m = model();
        let d = decide(&parsed, &m);
        if d.verdict.drops() || !may_carry(&parsed) {
            return d.verdict;
        }
        match judge(frame, &m, &parsed) {
            RouteVerdict::CLEAN => d.verdict,
            r => r.verdict,
        }
    }

    #[test]
    fn only_packets_with_options_or_extension_headers_may_carry_one() {
        assert!(!may_carry(&parse(&v4_frame(OPEN, &[])[..])));
        assert!(may_carry(&parse(&v4_frame(OPEN, &[IPOPT_NOOP])[..])));
        assert!(may_carry(&parse(&v6_frame(OPEN6, RTHDR_SRH, &[OPEN6])[..])));
        let mut plain = v6_frame(OPEN6, RTHDR_SRH, &[]);
        plain.drain(54..62);
        plain[14 + 6] = 6;
        assert!(!may_carry(&parse(&plain[..])));
    }

    #[test]
    fn an_ipv4_source_route_through_a_blocked_address_is_blocked() {
        for kind in [IPOPT_LSRR, IPOPT_SSRR] {
            let f = v4_frame(OPEN, &srr(kind, &[IMDS]));
            let r = route(&f);
            assert!(r.present);
            assert_eq!(r.len, 1);
            let at = r.offset as usize;
            assert_eq!(f[at..at + 4], IMDS);
            assert_eq!(verdict(&f), CounterId::MetadataBlocked, "option {kind}");
            // Anywhere in the route, behind other options.
            let mut opts = alloc::vec![IPOPT_NOOP, 7, 7, 4, 0, 0, 0, 0];
            opts.extend(srr(kind, &[OPEN2, IMDS]));
            assert_eq!(verdict(&v4_frame(OPEN, &opts)), CounterId::MetadataBlocked);
        }
    }

    #[test]
    fn a_source_route_of_open_addresses_passes() {
        let f = v4_frame(OPEN, &srr(IPOPT_LSRR, &[OPEN2, OPEN2]));
        assert_eq!(verdict(&f), CounterId::Passed);
        assert_eq!(route(&f).len, 2);
        let f = v6_frame(OPEN6, RTHDR_SRH, &[OPEN6, OPEN6]);
        assert_eq!(verdict(&f), CounterId::Passed);
        // The destination itself is still judged first.
        assert_eq!(
            verdict(&v4_frame(IMDS, &srr(IPOPT_LSRR, &[OPEN2]))),
            CounterId::MetadataBlocked
        );
    }

    #[test]
    fn an_ipv6_routing_header_through_a_blocked_address_is_blocked() {
        for kind in [RTHDR_TYPE_0, RTHDR_SRH] {
            let f = v6_frame(OPEN6, kind, &[OPEN6, AWS6]);
            assert_eq!(route(&f).len, 2, "type {kind}");
            assert_eq!(verdict(&f), CounterId::MetadataBlocked, "type {kind}");
        }
        // Type 2 names one address.
        let f = v6_frame(OPEN6, 2, &[AWS6]);
        assert_eq!(verdict(&f), CounterId::MetadataBlocked);
        // RPL (type 3) compresses its addresses: it names none here.
        let f = v6_frame(OPEN6, 3, &[AWS6]);
        assert!(!route(&f).present);
        assert_eq!(verdict(&f), CounterId::Passed);
    }

    #[test]
    fn routes_that_hide_addresses_are_evasive() {
        // At the bound: judged whole, the last hop too; one more: evasive.
        let mut hops = [OPEN2; MAX_ROUTE_ADDRS];
        let f = v4_frame(OPEN, &srr(IPOPT_LSRR, &hops));
        assert_eq!(verdict(&f), CounterId::Passed);
        hops[MAX_ROUTE_ADDRS - 1] = IMDS;
        let f = v4_frame(OPEN, &srr(IPOPT_LSRR, &hops));
        assert_eq!(verdict(&f), CounterId::MetadataBlocked);
        let f = v4_frame(OPEN, &srr(IPOPT_LSRR, &[OPEN2; MAX_ROUTE_ADDRS + 1]));
        assert_eq!(verdict(&f), CounterId::Evasive);
        // The walk reads the longest header whole: a route behind 32
        // no-ops is found, and 40 no-ops are padding, not evasion.
        let mut opts = alloc::vec![IPOPT_NOOP; 32];
        opts.extend(srr(IPOPT_LSRR, &[IMDS]));
        assert_eq!(opts.len(), 39);
        assert_eq!(verdict(&v4_frame(OPEN, &opts)), CounterId::MetadataBlocked);
        let opts = alloc::vec![IPOPT_NOOP; 40];
        assert_eq!(verdict(&v4_frame(OPEN, &opts)), CounterId::Passed);
        // Two routes in one header.
        let mut two = srr(IPOPT_LSRR, &[OPEN2]);
        two.extend(srr(IPOPT_SSRR, &[OPEN2]));
        assert_eq!(verdict(&v4_frame(OPEN, &two)), CounterId::Evasive);
        let f = v6_frame(OPEN6, RTHDR_SRH, &[OPEN6; MAX_ROUTE_ADDRS + 1]);
        assert_eq!(verdict(&f), CounterId::Evasive);
        let f = v6_frame(OPEN6, RTHDR_SRH, &[OPEN6; MAX_ROUTE_ADDRS]);
        assert_eq!(verdict(&f), CounterId::Passed);
    }

    #[test]
    fn malformed_options_name_no_route() {
        // A length of 1, and a length past the header: ip_options_compile()
        // discards these packets.
        let f = v4_frame(OPEN, &[IPOPT_LSRR, 1, 4, 0]);
        assert!(!route(&f).present);
        let f = v4_frame(OPEN, &[IPOPT_LSRR, 200, 4, 0, 169, 254, 169, 254]);
        assert!(!route(&f).present);
        assert_eq!(verdict(&f), CounterId::Passed);
        // After the end of the list: not read.
        let mut opts = alloc::vec![0u8];
        opts.extend(srr(IPOPT_LSRR, &[IMDS]));
        assert_eq!(verdict(&v4_frame(OPEN, &opts)), CounterId::Passed);
    }
}
