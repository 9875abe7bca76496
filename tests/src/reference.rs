//! etherparse as an independent reference for the classifier's parser
//! (`egress_ebpf_common::parse`, the code the kernel runs): [`check`] parses
//! a frame with both and compares every field a verdict depends on: the
//! family, the destination (and source, which keys the per-source bucket),
//! the upper-layer protocol, the ports, the TCP flags, the fragment state
//! and the evasive flag.
//!
//! Where our parser differs on purpose, the comparison is restricted and
//! [`Compared`] says which restriction applied and why; nothing is skipped
//! silently. The deliberate differences:
//!
//! 1. Length fields. Ours never reads the IPv4 total length or the IPv6
//!    payload length: it judges what the frame holds (a SYN behind a lying
//!    total length is still counted). [`check`] asserts that ours gives the
//!    same answer with the length fields rewritten to match the frame, and
//!    gives etherparse that rewritten frame.
//! 2. Link layer. Ours walks at most two tags of 802.1Q (0x8100) or 802.1ad
//!    (0x88a8), the two the kernel's `eth_type_vlan()` knows; etherparse
//!    also takes 0x9100 tags, MACsec and a third tag. Beyond that, ours must
//!    say "not IP".
//! 3. EtherType and version disagreeing: etherparse goes by the version
//!    nibble, ours by the EtherType (as `ip_rcv()`/`ipv6_rcv()`, which drop
//!    such packets): ours must say "not IP".
//! 4. An IPv4 IHL pointing past the frame: etherparse refuses the header;
//!    ours reads the destination from the fixed 20 bytes (so a metadata
//!    destination is still blocked). The reference decodes those 20 bytes
//!    with etherparse (IHL set to 5) and expects no ports.
//! 5. IPv4 AH: etherparse walks it as an extension; to ours (and to the
//!    IPv4 rules) protocol 51 is the upper layer. Compared against the IPv4
//!    header's protocol field.
//! 6. IPv6 extension headers: ours walks at most
//!    8 (a longer chain is evasive), etherparse any
//!    number; ours also walks Mobility, HIP, Shim6 and the two experimental
//!    numbers (RFC 6564's uniform format), where etherparse stops (only the
//!    addresses are compared then); ours walks a hop-by-hop header wherever
//!    it is and steps over an AH of payload length 0, where etherparse
//!    stops with an error (addresses only).
//! 7. Non-first IPv6 fragments: ours stops at the fragment header (what
//!    follows is the middle of the datagram), etherparse keeps reading it
//!    as headers. Compared against the fragment header's next-header field.
//! 8. Fragments and short transport headers: etherparse parses no
//!    transport header in a fragment, nor a TCP header shorter than 20
//!    bytes or with a data offset below 5; ours reads the ports (4 bytes)
//!    and the flags (byte 13) of whatever is there. The reference decodes
//!    the header with etherparse where it can, and takes those bytes at
//!    the offset etherparse found otherwise.
//! 9. A chain cut inside an extension header: etherparse refuses the
//!    header, ours reads the fields it can reach. Compared: the addresses,
//!    no port, and a first fragment marked evasive (RFC 7112).
//!
//! Used by tests/tests/integration/host_parser.rs and by the fuzz target
//! (fuzz/), which compiles this file as a module of its own: keep its
//! dependencies to etherparse, egress-ebpf-common and std.

use egress_ebpf_common::{
    parse::{self, Family, Fragment, PROTO_UNKNOWN, Parsed, Transport, v4_mapped},
    rules::DestPort,
};
use etherparse::{
    EtherType, IpNumber, Ipv4HeaderSlice, Ipv6ExtensionSlice, LaxIpv6Slice, LaxLinkExtSlice,
    LaxNetSlice, LaxSlicedPacket, LinkSlice, TcpHeaderSlice, UdpHeaderSlice, err::ipv6_exts,
};

// The reference's own statement of the parser's documented limits
// (docs/threat-model.md), not the parser's constants: a change of the parser's
// bounds has to show up here as a disagreement.
/// VLAN tags walked: 802.1Q and 802.1ad, two at most.
const VLAN_TAGS: usize = 2;
const VLAN_TPIDS: [EtherType; 2] = [EtherType::VLAN_TAGGED_FRAME, EtherType::PROVIDER_BRIDGING];
/// IPv6 extension headers walked before a chain is evasive.
const EXT_HEADER_BOUND: usize = 8;
/// Extension headers ours walks and etherparse does not (difference 6).
const NOT_WALKED_BY_ETHERPARSE: [IpNumber; 5] = [
    IpNumber::MOBILITY_HEADER,
    IpNumber::HIP,
    IpNumber::SHIM6,
    IpNumber::EXPERIMENTAL_AND_TESTING_0,
    IpNumber::EXPERIMENTAL_AND_TESTING_1,
];
const TCP: u8 = IpNumber::TCP.0;
const AH_OF_LENGTH_0: &str = "an AH of payload length 0 (difference 6)";
const UDP: u8 = IpNumber::UDP.0;

/// An extension header to ours: etherparse's list, less ESP, which ends
/// the chain for both (what follows it is encrypted).
fn is_extension_header(n: u8) -> bool {
    n != IpNumber::ENCAPSULATING_SECURITY_PAYLOAD.0 && IpNumber(n).is_ipv6_ext_header_value()
}

const ETH_HLEN: usize = 14;

/// What [`check`] compared for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compared {
    /// Every field.
    Full,
    /// Both agree the frame is not IP (the reason says why, and whether
    /// it is a deliberate difference).
    NotIp(&'static str),
    /// Family and addresses only, for the reason given (a deliberate
    /// difference in the transport view).
    Addresses(&'static str),
    /// A chain cut inside an extension header (difference 9).
    TruncatedChain,
}

enum Expected {
    Parsed(Parsed),
    NotIp(&'static str),
    Addresses(Family, [u8; 16], [u8; 16], &'static str),
    Truncated(Family, [u8; 16], [u8; 16]),
}

/// Parses `frame` with ours and with etherparse; `Err` describes the first
/// disagreement. Never panics on any input.
pub fn check(frame: &[u8]) -> Result<Compared, String> {
    let ours = parse::parse(frame);
    let fixed = with_matching_lengths(frame);
    let ours_fixed = parse::parse(&fixed[..]);
    if ours_fixed != ours {
        return Err(report(
            frame,
            "ours changed its answer when only the IP length fields changed",
            &ours,
            &format!("{ours_fixed:?}"),
        ));
    }
    let expected = expect(&fixed);
    let fail = |what: &str, want: String| Err(report(frame, what, &ours, &want));
    match expected {
        Expected::Parsed(want) => {
            if ours == want {
                Ok(Compared::Full)
            } else {
                fail("disagreement", format!("{want:?}"))
            }
        }
        Expected::NotIp(why) => {
            if ours.family == Family::NotIp {
                Ok(Compared::NotIp(why))
            } else {
                fail("ours took it for IP", format!("not IP: {why}"))
            }
        }
        Expected::Addresses(family, src, dst, why) => {
            if (ours.family, ours.src, ours.dst) == (family, src, dst) {
                Ok(Compared::Addresses(why))
            } else {
                fail(
                    "addresses",
                    format!("{family:?} {src:?} -> {dst:?} ({why})"),
                )
            }
        }
        Expected::Truncated(family, src, dst) => {
            if (ours.family, ours.src, ours.dst) != (family, src, dst) {
                return fail("addresses", format!("{family:?} {src:?} -> {dst:?}"));
            }
            if ours.transport.dport.is_known() {
                return fail("a port behind a truncated chain", "no port".into());
            }
            if ours.transport.fragment == Fragment::First && !ours.evasive {
                return fail(
                    "a first fragment without its whole chain is evasive (RFC 7112)",
                    "evasive".into(),
                );
            }
            Ok(Compared::TruncatedChain)
        }
    }
}

fn report(frame: &[u8], what: &str, ours: &Parsed, want: &str) -> String {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    format!("{what}\n  frame: {hex}\n  ours:      {ours:?}\n  reference: {want}")
}

/// Where the IP header starts by our link-layer rules, if the frame gets
/// that far.
fn ip_offset(frame: &[u8]) -> Option<usize> {
    let mut ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut off = ETH_HLEN;
    for _ in 0..VLAN_TAGS {
        if !VLAN_TPIDS.contains(&EtherType(ether_type)) {
            break;
        }
        ether_type = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    Some(off)
}

/// `frame` with the IPv4 total length or IPv6 payload length saying what
/// the frame holds (difference 1).
fn with_matching_lengths(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let Some(off) = ip_offset(frame) else {
        return f;
    };
    let Some(&first) = f.get(off) else {
        return f;
    };
    let ip_len = f.len() - off;
    match first >> 4 {
        4 if ip_len >= 4 => {
            let n = ip_len.min(u16::MAX as usize) as u16;
            f[off + 2..off + 4].copy_from_slice(&n.to_be_bytes());
        }
        6 if ip_len >= 40 => {
            let n = (ip_len - 40).min(u16::MAX as usize) as u16;
            f[off + 4..off + 6].copy_from_slice(&n.to_be_bytes());
        }
        _ => {}
    }
    f
}

/// What our parser must say about `frame`, by etherparse.
fn expect(frame: &[u8]) -> Expected {
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        return Expected::NotIp("shorter than an Ethernet header");
    };
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return Expected::NotIp("no Ethernet header");
    };
    let mut ether_type = eth.ether_type();
    let mut tags = 0;
    while VLAN_TPIDS.contains(&ether_type) {
        if tags == VLAN_TAGS {
            return Expected::NotIp("more than two VLAN tags (deliberate: difference 2)");
        }
        match p.link_exts.get(tags) {
            Some(LaxLinkExtSlice::Vlan(v)) => ether_type = v.ether_type(),
            _ => return Expected::NotIp("a VLAN tag cut short"),
        }
        tags += 1;
    }
    let ip_off = ETH_HLEN + 4 * tags;
    match (ether_type, &p.net) {
        (EtherType::IPV4, Some(LaxNetSlice::Ipv4(_))) | (EtherType::IPV4, None) => {
            ipv4(frame, ip_off)
        }
        (EtherType::IPV6, Some(LaxNetSlice::Ipv6(_))) => ipv6(frame, ip_off),
        (EtherType::IPV4, Some(_)) | (EtherType::IPV6, Some(_)) => {
            Expected::NotIp("EtherType and IP version disagree (deliberate: difference 3)")
        }
        (EtherType::IPV6, None) => Expected::NotIp("no valid IPv6 header"),
        _ => Expected::NotIp(
            "not IPv4 or IPv6 after at most two 802.1Q/802.1ad tags (other TPIDs and MACsec: difference 2)",
        ),
    }
}

fn ipv4(frame: &[u8], ip_off: usize) -> Expected {
    let ip = &frame[ip_off.min(frame.len())..];
    let (header, header_len) = match Ipv4HeaderSlice::from_slice(ip) {
        Ok(h) => (h.to_header(), h.slice().len()),
        Err(_) => {
            // Difference 4: a header whose IHL points past the frame, decoded
            // from its fixed 20 bytes.
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
                return Expected::NotIp("no valid IPv4 header");
            }
            let mut fixed = ip[..20].to_vec();
            let ihl = (ip[0] & 0x0f) as usize * 4;
            fixed[0] = 0x45;
            match Ipv4HeaderSlice::from_slice(&fixed) {
                Ok(h) => (h.to_header(), ihl),
                Err(e) => unreachable!("a 20-byte version-4 header with IHL 5: {e}"),
            }
        }
    };
    let frag_offset = header.fragment_offset.value();
    let fragment = if frag_offset != 0 {
        Fragment::Later
    } else if header.more_fragments {
        Fragment::First
    } else {
        Fragment::Whole
    };
    // Difference 5: the header's protocol, whatever it is.
    let proto = header.protocol.0;
    let (transport, short_first) = transport_at(frame, ip_off + header_len, proto, fragment);
    Expected::Parsed(Parsed {
        family: Family::V4,
        src: v4_mapped(&header.source),
        dst: v4_mapped(&header.destination),
        transport,
        evasive: short_first || (proto == TCP && frag_offset == 1),
        l3_offset: ip_off as u16,
        l4_offset: (ip_off + header_len) as u16,
    })
}

fn ipv6(frame: &[u8], ip_off: usize) -> Expected {
    let Ok((ip, stop)) = LaxIpv6Slice::from_slice(&frame[ip_off..]) else {
        return Expected::NotIp("no valid IPv6 header");
    };
    let h = ip.header();
    let (src, dst) = (h.source(), h.destination());
    // The upper layer's offset; 0 when the walk never reached it.
    let parsed = |transport: Transport, evasive: bool, l4: usize| {
        Expected::Parsed(Parsed {
            family: Family::V6,
            src,
            dst,
            transport,
            evasive,
            l3_offset: ip_off as u16,
            l4_offset: l4 as u16,
        })
    };
    let over_the_bound = |fragment: Fragment| {
        parsed(
            Transport {
                proto: PROTO_UNKNOWN,
                dport: DestPort::UNKNOWN,
                sport: 0,
                tcp_flags: 0,
                tcp_flags_seen: false,
                fragment,
            },
            true,
            0,
        )
    };
    let mut fragment = Fragment::Whole;
    let mut walked = 0;
    for ext in extension_headers(h.next_header().0, ip.extensions().slice()) {
        if walked == EXT_HEADER_BOUND {
            return over_the_bound(fragment);
        }
        walked += 1;
        if let Ipv6ExtensionSlice::Fragment(f) = ext {
            if f.fragment_offset().value() != 0 {
                // Difference 7.
                let (t, _) = transport_at(frame, 0, f.next_header().0, Fragment::Later);
                let after = f.slice().as_ptr() as usize - frame.as_ptr() as usize + 8;
                return parsed(t, false, after);
            }
            if f.more_fragments() {
                fragment = Fragment::First;
            }
        }
    }
    let next = ip.payload().ip_number.0;
    match stop {
        // The header that stopped etherparse is the ninth: ours never reads it.
        Some(_) if walked == EXT_HEADER_BOUND => over_the_bound(fragment),
        // etherparse checks an AH's minimum size (12 bytes) before its
        // length field, so an AH of payload length 0 near the end of the
        // frame is "cut short" to it; ours steps over its 8 bytes
        // (difference 6). The failing header starts the payload slice.
        Some((ipv6_exts::HeaderSliceError::Len(_), _))
            if next == IpNumber::AUTHENTICATION_HEADER.0
                && ip.payload().payload.get(1) == Some(&0) =>
        {
            Expected::Addresses(Family::V6, src, dst, AH_OF_LENGTH_0)
        }
        Some((ipv6_exts::HeaderSliceError::Len(_), _)) => Expected::Truncated(Family::V6, src, dst),
        Some((ipv6_exts::HeaderSliceError::Content(ipv6_exts::HeaderError::IpAuth(_)), _)) => {
            Expected::Addresses(Family::V6, src, dst, AH_OF_LENGTH_0)
        }
        Some((ipv6_exts::HeaderSliceError::Content(_), _)) => Expected::Addresses(
            Family::V6,
            src,
            dst,
            "a hop-by-hop header after the first (difference 6)",
        ),
        None if walked == EXT_HEADER_BOUND && is_extension_header(next) => over_the_bound(fragment),
        None if NOT_WALKED_BY_ETHERPARSE.contains(&IpNumber(next)) => Expected::Addresses(
            Family::V6,
            src,
            dst,
            "an extension header etherparse does not walk (difference 6)",
        ),
        None => {
            let l4 = ip.payload().payload.as_ptr() as usize - frame.as_ptr() as usize;
            let (t, short_first) = transport_at(frame, l4, next, fragment);
            parsed(t, short_first, l4)
        }
    }
}

/// The extension headers etherparse walked (`chain`, starting with header
/// number `first`), decoded with its checked header parsers.
///
/// Not `Ipv6ExtensionsSlice`'s iterator: in etherparse 0.21.0 it reads past
/// the end of a chain that ended in an error (a header cut short), through
/// `from_slice_unchecked` on an empty slice (undefined behaviour, caught by
/// the standard library's debug precondition checks).
fn extension_headers(first: u8, mut chain: &[u8]) -> Vec<Ipv6ExtensionSlice<'_>> {
    use etherparse::{IpAuthHeaderSlice, Ipv6FragmentHeaderSlice, Ipv6RawExtHeaderSlice};
    let mut next = first;
    let mut out = Vec::new();
    while !chain.is_empty() {
        let (ext, len, following) = match next {
            // Hop-by-hop, routing, destination options: the generic format.
            0 | 43 | 60 => match Ipv6RawExtHeaderSlice::from_slice(chain) {
                Ok(e) => {
                    let len = e.slice().len();
                    let following = e.next_header().0;
                    let ext = match next {
                        0 => Ipv6ExtensionSlice::HopByHop(e),
                        43 => Ipv6ExtensionSlice::Routing(e),
                        _ => Ipv6ExtensionSlice::DestinationOptions(e),
                    };
                    (ext, len, following)
                }
                Err(_) => break,
            },
            44 => match Ipv6FragmentHeaderSlice::from_slice(chain) {
                Ok(f) => (
                    Ipv6ExtensionSlice::Fragment(f.clone()),
                    f.slice().len(),
                    f.next_header().0,
                ),
                Err(_) => break,
            },
            51 => match IpAuthHeaderSlice::from_slice(chain) {
                Ok(a) => (
                    Ipv6ExtensionSlice::Authentication(a),
                    a.slice().len(),
                    a.next_header().0,
                ),
                Err(_) => break,
            },
            _ => break,
        };
        out.push(ext);
        chain = &chain[len..];
        next = following;
    }
    out
}

/// The transport view at `l4`, as the rules need it; the second value is
/// true for a first fragment too short to hold the ports.
fn transport_at(frame: &[u8], l4: usize, proto: u8, fragment: Fragment) -> (Transport, bool) {
    let mut t = Transport {
        proto,
        dport: DestPort::NONE,
        sport: 0,
        tcp_flags: 0,
        tcp_flags_seen: false,
        fragment,
    };
    if proto != TCP && proto != UDP {
        return (t, false);
    }
    // A non-first fragment carries no transport header.
    if fragment == Fragment::Later {
        t.dport = DestPort::UNKNOWN;
        return (t, false);
    }
    let rest = frame.get(l4..).unwrap_or(&[]);
    let Some((sport, dport)) = ports(rest, proto) else {
        t.dport = DestPort::UNKNOWN;
        return (t, fragment == Fragment::First);
    };
    t.sport = sport;
    t.dport = DestPort::known(dport);
    if proto == TCP
        && let Some(flags) = tcp_flags(rest)
    {
        t.tcp_flags = flags;
        t.tcp_flags_seen = true;
    }
    (t, false)
}

/// Source and destination port: decoded by etherparse when it accepts the
/// header; otherwise (difference 8) the first four bytes, which are the
/// ports in TCP and UDP alike.
fn ports(rest: &[u8], proto: u8) -> Option<(u16, u16)> {
    let decoded = if proto == TCP {
        TcpHeaderSlice::from_slice(rest)
            .ok()
            .map(|h| (h.source_port(), h.destination_port()))
    } else {
        UdpHeaderSlice::from_slice(rest)
            .ok()
            .map(|h| (h.source_port(), h.destination_port()))
    };
    decoded.or_else(|| {
        let p = rest.get(..4)?;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    })
}

/// The flags byte: from etherparse's flag accessors when it accepts the
/// header; otherwise (difference 8) byte 13.
fn tcp_flags(rest: &[u8]) -> Option<u8> {
    match TcpHeaderSlice::from_slice(rest) {
        Ok(h) => Some(
            [
                h.fin(),
                h.syn(),
                h.rst(),
                h.psh(),
                h.ack(),
                h.urg(),
                h.ece(),
                h.cwr(),
            ]
            .iter()
            .enumerate()
            .fold(0u8, |b, (i, &set)| b | ((set as u8) << i)),
        ),
        Err(_) => rest.get(13).copied(),
    }
}
