//! Header parsing: Ethernet (up to two VLAN tags), IPv4 (with options),
//! IPv6 (a bounded walk of the extension-header chain), and the first bytes of
//! TCP/UDP. Written once against [`Packet`]: the classifier runs it on the
//! socket buffer, the host's tests and fuzzer on byte slices.
//!
//! Every function is `#[inline(always)]`: the classifier is one BPF function,
//! and the verifier tracks each read's bounds through the inlined code.

use crate::{
    packet::Packet,
    rules::{DestPort, PROTO_TCP, PROTO_UDP},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Most VLAN tags walked; a frame with more is not IP to this parser.
pub const MAX_VLAN_TAGS: usize = 2;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// Most IPv6 extension headers walked before the upper-layer header. A
/// conforming stack sends a handful at most (RFC 8200 section 4.1 orders at
/// most 6 kinds); a longer chain is treated as evasive.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Protocol value used when the parser never reached the upper-layer header.
pub const PROTO_UNKNOWN: u8 = 255;

/// TCP flag bits in header byte 13.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// iptables `--syn`, i.e. `--tcp-flags SYN,RST,ACK,FIN SYN`: SYN set, RST, ACK
/// and FIN clear; every other bit (PSH, URG, ECE, CWR, reserved) ignored.
#[inline(always)]
pub const fn is_syn(flags: u8) -> bool {
    flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK) == TCP_SYN
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// Offset 0, more fragments follow: holds the start of the transport header.
    First,
    /// Offset > 0: no transport header of its own.
    Later,
}

/// The transport-layer view the rules need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    pub proto: u8,
    pub dport: DestPort,
    /// Source port (host order), 0 when not visible; for reports only.
    pub sport: u16,
    /// TCP flags byte, valid when `tcp_flags_seen` (not an `Option`: see
    /// [`DestPort`]).
    pub tcp_flags: u8,
    pub tcp_flags_seen: bool,
    pub fragment: Fragment,
}

impl Transport {
    /// Whether this packet must go through the SMTP bucket, given that its
    /// destination port is rate-limited. A fragmented TCP datagram's flags
    /// cannot be trusted (a later overlapping fragment may rewrite them,
    /// RFC 1858), so any first fragment to a limited port counts as an attempt.
    #[inline(always)]
    pub fn is_connection_attempt(&self) -> bool {
        if self.proto != PROTO_TCP {
            return false;
        }
        match self.fragment {
            Fragment::First => true,
            Fragment::Later => false,
            Fragment::Whole => self.tcp_flags_seen && is_syn(self.tcp_flags),
        }
    }
}

/// Which network layer the parser found.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Not IP, or malformed so that the host's IP layer discards it anyway.
    NotIp = 0,
    /// The values are the wire format of `DropEvent::family`
    /// (`events::FAMILY_V4`, `FAMILY_V6`).
    V4 = 4,
    V6 = 6,
}

/// What the parser learned about a frame.
///
/// A plain struct, not an enum with a payload per family: LLVM copies an
/// enum's undefined payload bytes along with it, and the verifier refuses to
/// read an uninitialized register (`R5 !read_ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub family: Family,
    /// Addresses, IPv4 ones v4-mapped (see [`v4_mapped`]); zero when not IP.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub transport: Transport,
    /// A shape that hides the transport header from inspection (see
    /// `CounterId::Evasive`).
    pub evasive: bool,
    /// Where the IP header starts (after the VLAN tags), and where the
    /// upper-layer header starts (after IPv4 options or the IPv6 extension
    /// headers); 0 when not known. For the reply a reject sends (`reply`).
    pub l3_offset: u16,
    pub l4_offset: u16,
}

impl Parsed {
    pub const NOT_IP: Self = Self {
        family: Family::NotIp,
        src: [0; 16],
        dst: [0; 16],
        transport: Transport {
            proto: 0,
            dport: DestPort::NONE,
            sport: 0,
            tcp_flags: 0,
            tcp_flags_seen: false,
            fragment: Fragment::Whole,
        },
        evasive: false,
        l3_offset: 0,
        l4_offset: 0,
    };

    /// The IPv4 destination (the last 4 bytes of the mapped form).
    #[inline(always)]
    pub fn dst_v4(&self) -> [u8; 4] {
        [self.dst[12], self.dst[13], self.dst[14], self.dst[15]]
    }

    #[inline(always)]
    pub fn src_v4(&self) -> [u8; 4] {
        [self.src[12], self.src[13], self.src[14], self.src[15]]
    }
}

/// An IPv4 address as the v4-mapped IPv6 address `::ffff:a.b.c.d`, the form
/// the parser, the per-source buckets and drop events use for both families.
#[inline(always)]
pub fn v4_mapped(a: &[u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12] = a[0];
    m[13] = a[1];
    m[14] = a[2];
    m[15] = a[3];
    m
}

#[inline(always)]
pub fn parse<P: Packet + ?Sized>(pkt: &P) -> Parsed {
    match try_parse(pkt) {
        Some(p) => p,
        // A frame too short for its own L2/L3 headers carries nothing a rule
        // can match, and the stack drops it.
        None => Parsed::NOT_IP,
    }
}

/// The IP-level entry: `pkt` starts at the IPv4 or IPv6 header (no
/// Ethernet header), as a `cgroup_skb` program sees a packet. The version
/// nibble says which; anything else is not IP.
#[inline(always)]
pub fn parse_ip<P: Packet + ?Sized>(pkt: &P) -> Parsed {
    // Two bytes, not one: see the TCP flags read below (docs/design.md,
    // Verifier notes). No IP header is shorter.
    let first = match pkt.load::<2>(0) {
        Some(b) => b[0],
        None => return Parsed::NOT_IP,
    };
    let parsed = match first >> 4 {
        4 => ipv4(pkt, 0),
        6 => ipv6(pkt, 0),
        _ => Some(Parsed::NOT_IP),
    };
    match parsed {
        Some(p) => p,
        None => Parsed::NOT_IP,
    }
}

#[inline(always)]
fn try_parse<P: Packet + ?Sized>(pkt: &P) -> Option<Parsed> {
    // The whole Ethernet header, as the kernel's eth_type_trans() needs it.
    let eth: [u8; ETH_HLEN] = pkt.load(0)?;
    let mut ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // 802.1Q tag: TCI (2 bytes), then the encapsulated EtherType.
        let inner: [u8; 2] = pkt.load(off + 2)?;
        ether_type = u16::from_be_bytes(inner);
        off += 4;
    }
    match ether_type {
        ETH_P_IP => ipv4(pkt, off),
        ETH_P_IPV6 => ipv6(pkt, off),
        _ => Some(Parsed::NOT_IP),
    }
}

#[inline(always)]
fn ipv4<P: Packet + ?Sized>(pkt: &P, off: usize) -> Option<Parsed> {
    let h: [u8; IPV4_HLEN] = pkt.load(off)?;
    let version = h[0] >> 4;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if version != 4 || ihl < IPV4_HLEN {
        // ip_rcv() discards these before routing.
        return Some(Parsed::NOT_IP);
    }
    let proto = h[9];
    let frags = u16::from_be_bytes([h[6], h[7]]);
    let frag_offset = frags & 0x1fff;
    let more_fragments = frags & 0x2000 != 0;
    let fragment = if frag_offset != 0 {
        Fragment::Later
    } else if more_fragments {
        Fragment::First
    } else {
        Fragment::Whole
    };
    let (transport, mut evasive) = transport(pkt, off + ihl, proto, fragment);
    // RFC 1858: a TCP fragment at offset 8 bytes can only serve to overwrite
    // the flags of the first fragment.
    if proto == PROTO_TCP && frag_offset == 1 {
        evasive = true;
    }
    Some(Parsed {
        family: Family::V4,
        src: v4_mapped(&[h[12], h[13], h[14], h[15]]),
        dst: v4_mapped(&[h[16], h[17], h[18], h[19]]),
        transport,
        evasive,
        l3_offset: off as u16,
        l4_offset: (off + ihl) as u16,
    })
}

/// Reads the ports and TCP flags at `off`, as far as the fragment holds
/// them. The second value is true when a first fragment hides the ports.
#[inline(always)]
fn transport<P: Packet + ?Sized>(
    pkt: &P,
    off: usize,
    proto: u8,
    fragment: Fragment,
) -> (Transport, bool) {
    let mut t = Transport {
        proto,
        dport: DestPort::NONE,
        sport: 0,
        tcp_flags: 0,
        tcp_flags_seen: false,
        fragment,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return (t, false);
    }
    if fragment == Fragment::Later {
        t.dport = DestPort::UNKNOWN;
        return (t, false);
    }
    match pkt.load::<4>(off) {
        Some(ports) => {
            t.sport = u16::from_be_bytes([ports[0], ports[1]]);
            t.dport = DestPort::known(u16::from_be_bytes([ports[2], ports[3]]));
        }
        None => {
            t.dport = DestPort::UNKNOWN;
            // A whole datagram this short is truncated and discarded by the
            // receiver; a first fragment this short is an evasion attempt.
            return (t, fragment == Fragment::First);
        }
    }
    if proto == PROTO_TCP {
        // Data offset and flags (bytes 12-13) in one read: for a 1-byte read
        // LLVM turns `p + 1 <= end` into `p < end`, which the verifier does
        // not credit with any readable bytes.
        if let Some(b) = pkt.load::<2>(off + 12) {
            t.tcp_flags = b[1];
            t.tcp_flags_seen = true;
        }
    }
    (t, false)
}

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_MH: u8 = 135;
pub const IPPROTO_HIP: u8 = 139;
pub const IPPROTO_SHIM6: u8 = 140;
pub const IPPROTO_EXPERIMENT1: u8 = 253;
pub const IPPROTO_EXPERIMENT2: u8 = 254;

/// The IPv6 extension headers the parser walks (RFC 8200 and the IANA
/// "IPv6 Extension Header Types" registry; ESP ends the chain: what follows
/// it is encrypted).
#[inline(always)]
pub fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
            | IPPROTO_EXPERIMENT1
            | IPPROTO_EXPERIMENT2
    )
}

#[inline(always)]
fn ipv6<P: Packet + ?Sized>(pkt: &P, off: usize) -> Option<Parsed> {
    let l3_offset = off as u16;
    let h: [u8; IPV6_HLEN] = pkt.load(off)?;
    if h[0] >> 4 != 6 {
        return Some(Parsed::NOT_IP);
    }
    let mut next = h[6];
    let mut off = off + IPV6_HLEN;
    let mut fragment = Fragment::Whole;
    let mut reached_upper_layer = false;
    let mut truncated = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        // The previous header ends past the frame: the chain is cut short,
        // whatever its next-header byte says.
        if off > pkt.len() {
            truncated = true;
            break;
        }
        match next {
            IPPROTO_FRAGMENT => {
                // next header, reserved, offset (13 bits) | res (2) | M (1), id.
                let Some(f) = pkt.load::<4>(off) else {
                    truncated = true;
                    break;
                };
                next = f[0];
                let offset_flags = u16::from_be_bytes([f[2], f[3]]);
                if offset_flags >> 3 != 0 {
                    fragment = Fragment::Later;
                    // The rest of the chain lives in the first fragment;
                    // this one's data starts after the fragment header.
                    reached_upper_layer = true;
                    off += 8;
                    break;
                }
                if offset_flags & 1 != 0 {
                    fragment = Fragment::First;
                }
                off += 8;
            }
            IPPROTO_AH => {
                let Some(a) = pkt.load::<2>(off) else {
                    truncated = true;
                    break;
                };
                next = a[0];
                off += (a[1] as usize + 2) * 4;
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH | IPPROTO_HIP
            | IPPROTO_SHIM6 | IPPROTO_EXPERIMENT1 | IPPROTO_EXPERIMENT2 => {
                let Some(e) = pkt.load::<2>(off) else {
                    truncated = true;
                    break;
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            _ => {
                reached_upper_layer = true;
                break;
            }
        }
    }
    // After MAX_IPV6_EXT_HEADERS headers, `next` may already name the upper
    // layer: a chain exactly at the bound is complete (unless its last
    // header ends past the frame).
    if !reached_upper_layer && !truncated && !is_extension_header(next) {
        if off > pkt.len() {
            truncated = true;
        } else {
            reached_upper_layer = true;
        }
    }
    let (transport, evasive) = if reached_upper_layer {
        transport(pkt, off, next, fragment)
    } else {
        let t = Transport {
            proto: PROTO_UNKNOWN,
            dport: DestPort::UNKNOWN,
            sport: 0,
            tcp_flags: 0,
            tcp_flags_seen: false,
            fragment,
        };
        // A chain longer than the bound hides the upper layer on purpose; a
        // chain cut short is harmless in a whole packet (the receiver drops
        // it) but not in a first fragment (RFC 7112: the first fragment must
        // hold the whole header chain).
        (t, !truncated || fragment == Fragment::First)
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Some(Parsed {
        family: Family::V6,
        src,
        dst,
        transport,
        evasive,
        l3_offset,
        l4_offset: if reached_upper_layer { off as u16 } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_definition_matches_iptables() {
        // All 256 flag bytes: exactly those with SYN set and FIN/RST/ACK clear.
        for f in 0u16..=255 {
            let f = f as u8;
            let expected = f & 0x02 != 0 && f & 0x01 == 0 && f & 0x04 == 0 && f & 0x10 == 0;
            assert_eq!(is_syn(f), expected, "flags {f:#04x}");
        }
        assert!(is_syn(0x02 | 0x40 | 0x80 | 0x08 | 0x20)); // SYN+ECE+CWR+PSH+URG
    }

    #[test]
    fn first_fragments_count_as_attempts_later_ones_do_not() {
        let mut t = Transport {
            proto: PROTO_TCP,
            dport: DestPort::known(25),
            sport: 0,
            tcp_flags: TCP_ACK,
            tcp_flags_seen: true,
            fragment: Fragment::First,
        };
        assert!(t.is_connection_attempt());
        t.fragment = Fragment::Whole;
        assert!(!t.is_connection_attempt());
        t.tcp_flags = TCP_SYN;
        assert!(t.is_connection_attempt());
        t.tcp_flags_seen = false;
        assert!(!t.is_connection_attempt());
        t.tcp_flags_seen = true;
        t.fragment = Fragment::Later;
        assert!(!t.is_connection_attempt());
        t.proto = 17;
        t.fragment = Fragment::Whole;
        assert!(!t.is_connection_attempt());
    }

    /// Found by the differential test against etherparse: a first fragment
    /// whose authentication header (12 bytes by its length field) is cut
    /// after 5 bytes. Its next-header byte (7, no ports) was taken for the
    /// upper layer, so the chain looked complete; RFC 7112 requires the
    /// whole chain in a first fragment, so it is evasive.
    #[test]
    fn a_first_fragment_whose_last_extension_header_is_cut_is_evasive() {
        let hex = "02425e0000010242ac11000286dd60000000003c2c40fd00dead000000000000000000000002\
                   fd000ec200000000000000000000025433000001deadbeef0701000000";
        let frame: alloc::vec::Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let p = parse(&frame[..]);
        assert_eq!(p.family, Family::V6);
        assert_eq!(p.transport.fragment, Fragment::First);
        assert_eq!(p.transport.proto, PROTO_UNKNOWN);
        assert!(p.evasive, "{p:?}");
        // The same cut in a whole packet (fragment offset 0, M clear): the
        // receiver discards it; not evasive, nothing to match.
        let mut whole = frame.clone();
        whole[14 + 40 + 3] = 0;
        let p = parse(&whole[..]);
        assert_eq!(
            (p.transport.fragment, p.transport.proto),
            (Fragment::Whole, PROTO_UNKNOWN)
        );
        assert!(!p.evasive);
        // A header that ends exactly at the frame's end is complete.
        let mut exact = frame[..14 + 40 + 8].to_vec();
        exact[14 + 40] = 58; // the fragment header's next: ICMPv6, no payload
        let p = parse(&exact[..]);
        assert_eq!((p.transport.proto, p.evasive), (58, false));
    }

    #[test]
    fn v4_mapped_is_the_ipv6_form() {
        assert_eq!(
            v4_mapped(&[169, 254, 169, 254]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 169, 254, 169, 254]
        );
    }

    #[test]
    fn the_ip_entry_reads_from_the_ip_header() {
        let mut f = [0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = PROTO_TCP;
        f[14 + 16..14 + 20].copy_from_slice(&[169, 254, 169, 254]);
        f[34 + 2..34 + 4].copy_from_slice(&25u16.to_be_bytes());
        f[34 + 13] = TCP_SYN;
        // The same packet without its Ethernet header: the same view, its
        // offsets 14 bytes earlier.
        let mut framed = parse(&f[..]);
        framed.l3_offset -= 14;
        framed.l4_offset -= 14;
        assert_eq!(parse_ip(&f[14..]), framed);
        assert_eq!(parse_ip(&f[14..]).transport.dport, DestPort::known(25));
        // Version 5, empty, cut inside the header: nothing to match.
        let mut v5 = f[14..].to_vec();
        v5[0] = 0x55;
        assert_eq!(parse_ip(&v5[..]), Parsed::NOT_IP);
        assert_eq!(parse_ip(&[][..]), Parsed::NOT_IP);
        assert_eq!(parse_ip(&f[14..14 + 19]), Parsed::NOT_IP);
    }

    /// The smallest frames by hand; the full parser suite (every path, with
    /// the test harness's frame builders, and against etherparse) is in
    /// tests/tests/integration/host_parser.rs.
    #[test]
    fn minimal_frames() {
        let mut f = [0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = PROTO_TCP;
        f[14 + 16..14 + 20].copy_from_slice(&[169, 254, 169, 254]);
        f[34 + 2..34 + 4].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 13] = TCP_SYN;
        let p = parse(&f[..]);
        assert_eq!(p.family, Family::V4);
        assert_eq!(p.dst_v4(), [169, 254, 169, 254]);
        assert_eq!(p.dst, v4_mapped(&[169, 254, 169, 254]));
        assert_eq!(p.transport.dport, DestPort::known(80));
        assert!(p.transport.is_connection_attempt());
        assert_eq!(parse(&f[..33]), Parsed::NOT_IP);
        assert_eq!(parse(&[][..]), Parsed::NOT_IP);
    }
}
