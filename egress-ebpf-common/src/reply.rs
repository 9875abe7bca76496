//! The answer a rejecting rule sends: a TCP reset for TCP, an ICMP (or
//! ICMPv6) port unreachable for everything else, built in place from the
//! offending frame, so the sender's `connect()` or connected UDP socket
//! fails at once with ECONNREFUSED, as with iptables' `-j REJECT`
//! (docs/design.md, Reject).
//!
//! Written once against [`PacketMut`]: the kernel implements it on the
//! socket buffer with the skb helpers (egress-ebpf's `reply` module, which
//! adds the budget and the redirect), the host on a byte vector
//! ([`VecFrame`], feature `model`), so the host's tests check every reply
//! the kernel sends, byte for byte.
//!
//! Who gets no answer (the packet is still dropped):
//! - [`ReplyOutcome::Refused`]: the reply would go to an address that is not
//!   one sender's: a group, zero or the bridge's own source MAC, a source
//!   address that is not unicast (RFC 1122 3.2.2, RFC 4443 2.4 (e)).
//! - [`ReplyOutcome::Unanswerable`]: the packet is one no reply is sent for:
//!   not addressed to this host at layer 2, a multicast or broadcast
//!   destination, a non-first fragment, a TCP reset (RFC 793), an ICMP
//!   error (RFC 1122, RFC 4443), a TCP segment behind IPv4 options or IPv6
//!   extension headers, or a frame too short for its headers.

use network_types::{
    bitfield::BitfieldU16,
    eth::EthHdr,
    icmp::{Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

use crate::{
    packet::Packet,
    parse::{Family, Fragment, Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

wire_enum! {
    /// What happened to the reply of one rejected packet; the index into the
    /// `REPLY_STATS` map.
    #[repr(u32)]
    pub enum ReplyOutcome {
        /// Built and sent back through the port the packet came from.
        Sent = 0 => "sent",
        /// Over the reply budget: dropped silently.
        Suppressed = 1 => "suppressed",
        /// The reply would not go to one sender (see the module documentation).
        Refused = 2 => "refused",
        /// The packet is one no reply is sent for, or the rewrite failed.
        Unanswerable = 3 => "unanswerable",
    }
}

/// Default reply budget: 100 per second, bursts of 1,000 (Cilium's budget
/// for its ICMPv6 replies).
pub const DEFAULT_REPLY_RATE_PER_SEC: u64 = 100;
pub const DEFAULT_REPLY_BURST: u64 = 1000;

/// The reply budget the kernel uses while no policy config is in force
/// (the defaults above as GCRA parameters).
pub const DEFAULT_BUDGET: crate::bucket::Gcra = crate::bucket::Gcra {
    emission_ns: 1_000_000_000 / DEFAULT_REPLY_RATE_PER_SEC,
    burst_window_ns: 1_000_000_000 / DEFAULT_REPLY_RATE_PER_SEC * DEFAULT_REPLY_BURST,
};

/// Most bytes of the offending packet an ICMP error quotes: its IP header
/// (IPv4 options, IPv6 extension headers included) and the first 8 bytes of
/// its payload (RFC 792; what the receiver needs to find the socket), cut
/// at this bound. A multiple of 4 (`bpf_csum_diff` sums whole words).
pub const QUOTE_MAX: usize = 128;
// A power of two: the kernel bounds lengths by masking with QUOTE_MAX - 1.
const _: () = assert!(QUOTE_MAX.is_power_of_two() && QUOTE_MAX.is_multiple_of(4));

// network-types names these types, not the codes of destination
// unreachable (RFC 792, RFC 4443 3.1).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PORT_UNREACH: u8 = 4;
const ICMPV6_REDIRECT: u8 = network_types::icmp::Icmpv6Type::RedirectMessage as u8;
const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;
/// IPv4 flags: don't fragment (a reply is an atomic datagram, RFC 6864).
const IP_DF: u8 = 0x40;
/// The highest ICMP type Linux answers with an error (NR_ICMP_TYPES).
const NR_ICMP_TYPES: u8 = 18;
const TTL: u8 = 64;
/// TOS of an ICMP error: internetwork control precedence, as Linux's icmp_send.
const ICMP_TOS: u8 = 0xc0;

/// Writing a frame the way a tc program can: the kernel implements it with
/// `bpf_skb_store_bytes`, `bpf_skb_change_tail`, `bpf_l4_csum_replace` and
/// `bpf_csum_diff`. Checksum sums are 32-bit ones' complement sums of the
/// bytes in the machine's byte order, as those helpers compute them.
pub trait PacketMut: Packet {
    /// Whether the frame is addressed to this host at layer 2 (its
    /// destination MAC is the bridge's own: the host routes it). The hook
    /// says so (`ReplyScratch::to_host`).
    fn to_this_host(&self) -> bool;
    /// The header `T` (a network-types header: bytes only) at `offset`.
    fn load_header<T: Copy>(&self, offset: usize) -> Option<T>;
    /// Copies `len` bytes (1 to [`QUOTE_MAX`]) at `offset` into the quote
    /// buffer, the rest of which is zero. The buffer is the implementor's
    /// (the kernel's is a per-CPU map value: it would not fit the stack).
    fn copy_to_quote(&mut self, offset: usize, len: usize) -> bool;
    /// The ones' complement sum of the whole quote buffer.
    fn quote_sum(&self) -> u32;
    /// Writes the first `len` bytes of the quote buffer at `offset`.
    fn store_quote(&mut self, offset: usize, len: usize) -> bool;
    /// Writes the header `v` at `offset` (an offset at or past the IP header).
    fn store<T: Copy>(&mut self, offset: usize, v: &T) -> bool;
    /// Writes the destination and source MAC addresses (bytes 0-11): no
    /// checksum covers them.
    fn store_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> bool;
    /// Makes the frame `len` bytes long (bytes added are zero).
    fn resize(&mut self, len: usize) -> bool;
    /// Adds `sum` to the transport checksum field at `offset`, as
    /// `bpf_l4_csum_replace` with a diff does: `pseudo` for the pseudo-header
    /// words. With checksum offload pending (`CHECKSUM_PARTIAL`) the field
    /// holds the pseudo-header sum only and the device adds the rest, so
    /// only `pseudo` sums go into it; otherwise every sum does.
    fn add_to_l4_checksum(&mut self, offset: usize, sum: u32, pseudo: bool) -> bool;
    /// The ones' complement sum of the bytes of `v` (its size a multiple
    /// of 4).
    fn sum<T: Copy>(&self, v: &T) -> u32;
}

/// What the classifier hands to the reply program with the tail call: the
/// packet as it parsed it and the decision (never taken twice: that would
/// charge the buckets twice), and room for the quote of an ICMP error. The
/// value of the per-CPU `REPLY_SCRATCH` map: the two programs run on one
/// CPU, one after the other, and the kernel reads it only.
#[derive(Clone, Copy)]
pub struct ReplyScratch {
    pub parsed: Parsed,
    /// The decision's `CounterId` and rule, for the drop event.
    pub verdict: u8,
    pub rule: u16,
    /// The device the reply goes out of (`bpf_redirect`): the hook's own,
    /// so the reply takes the way back to the sender's port only.
    pub ifindex: u32,
    /// The sending endpoint's id for the drop event (0: unknown, the
    /// bridge backstop).
    pub endpoint: u32,
    /// Whether the hook saw the frame addressed to the host at layer 2 (to
    /// the bridge's MAC): at the bridge's ingress `skb->pkt_type ==
    /// PACKET_HOST`; at a veth's, whose own MAC is not the one the
    /// container sends to, the hook compares the bridge's.
    pub to_host: bool,
    pub quote: [u8; QUOTE_MAX],
}

/// How a packet is answered, or why it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Reset,
    Unreachable,
    Refused,
    Unanswerable,
}

/// Ones' complement addition of two 32-bit partial sums.
#[inline(always)]
pub const fn csum_add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(carry as u32)
}

/// The 16-bit checksum of a partial sum: folded and complemented.
#[inline(always)]
pub const fn csum_fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Whether an IPv4 address can be the source of one host's packets.
#[inline(always)]
fn v4_unicast(a: &[u8; 16]) -> bool {
    // 0/8 (this network), 127/8 (loopback), 224/4 (multicast), 240/4
    // (reserved, and the limited broadcast).
    let b = a[12];
    b != 0 && b != 127 && b < 224
}

#[inline(always)]
fn v6_unicast(a: &[u8; 16]) -> bool {
    let unspecified_or_loopback = {
        let mut high = 0u8;
        let mut i = 0;
        while i < 15 {
            high |= a[i];
            i += 1;
        }
        high == 0 && a[15] <= 1
    };
    a[0] != 0xff && !unspecified_or_loopback
}

/// Whether `parsed` (a packet a rejecting rule matched) may be answered,
/// and how. `pkt` is read for the MAC addresses and the ICMP type.
#[inline(always)]
pub fn plan<P: PacketMut + ?Sized>(pkt: &P, parsed: &Parsed) -> Plan {
    let v4 = match parsed.family {
        Family::V4 => true,
        Family::V6 => false,
        Family::NotIp => return Plan::Unanswerable,
    };
    // The host would not route it (PACKET_OTHERHOST, a broadcast or
    // multicast frame): nothing to answer.
    if !pkt.to_this_host() {
        return Plan::Unanswerable;
    }
    let Some(eth) = pkt.load_header::<EthHdr>(0) else {
        return Plan::Unanswerable;
    };
    // The reply goes to the source MAC, through the port the bridge learnt
    // it on: never to a group address (it would be flooded), zero, or the
    // bridge's own (the destination of a frame addressed to this host).
    let group = eth.src_addr[0] & 1 != 0;
    let mut zero = true;
    let mut own = true;
    let mut i = 0;
    while i < 6 {
        zero &= eth.src_addr[i] == 0;
        own &= eth.src_addr[i] == eth.dst_addr[i];
        i += 1;
    }
    if group || zero || own {
        return Plan::Refused;
    }
    let (src_ok, dst_group) = if v4 {
        let d = parsed.dst[12];
        (v4_unicast(&parsed.src), d >= 224)
    } else {
        (v6_unicast(&parsed.src), parsed.dst[0] == 0xff)
    };
    if !src_ok {
        return Plan::Refused;
    }
    let t = &parsed.transport;
    if dst_group || t.fragment == Fragment::Later {
        return Plan::Unanswerable;
    }
    let l3 = parsed.l3_offset as usize;
    let l4 = parsed.l4_offset as usize;
    if t.proto == IPPROTO_TCP {
        let plain = l4 == l3 + if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
        let ok = plain
            && t.fragment == Fragment::Whole
            && t.tcp_flags_seen
            && t.tcp_flags & TCP_RST == 0;
        return if ok { Plan::Reset } else { Plan::Unanswerable };
    }
    let icmp = if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    if t.proto == icmp {
        // Type and code in one 2-byte read (docs/design.md, Verifier
        // notes: no 1-byte packet reads).
        let Some(h) = pkt.load::<2>(l4) else {
            return Plan::Unanswerable;
        };
        let ty = h[0];
        // Never an error about an error (RFC 1122 3.2.2, RFC 4443 2.4 (e)),
        // nor about a type Linux would not answer (icmp_send,
        // icmpv6_send's is_ineligible).
        let error = if v4 {
            ty > NR_ICMP_TYPES || matches!(ty, 3 | 4 | 5 | 11 | 12)
        } else {
            ty < 128 || ty == ICMPV6_REDIRECT
        };
        if error {
            return Plan::Unanswerable;
        }
    }
    Plan::Unreachable
}

/// Rewrites the frame into its reply (`plan` said how). `false` if a read or
/// a write failed part way: the frame must then be dropped.
#[inline(always)]
pub fn build<P: PacketMut + ?Sized>(pkt: &mut P, parsed: &Parsed, plan: Plan) -> bool {
    let Some(eth) = pkt.load_header::<EthHdr>(0) else {
        return false;
    };
    let ok = match plan {
        Plan::Reset => match parsed.family {
            Family::V4 => reset_v4(pkt, parsed),
            _ => reset_v6(pkt, parsed),
        },
        Plan::Unreachable => match parsed.family {
            Family::V4 => unreachable_v4(pkt, parsed),
            _ => unreachable_v6(pkt, parsed),
        },
        Plan::Refused | Plan::Unanswerable => false,
    };
    if !ok {
        return false;
    }
    // Back to the sender: its MAC becomes the destination, ours the source;
    // the EtherType (and any VLAN tags after it) stay.
    pkt.store_macs(&eth.src_addr, &eth.dst_addr)
}

/// The reset's sequence and acknowledgment numbers and flags (RFC 793,
/// "Reset Generation"): a segment with ACK is answered with `SEQ = SEG.ACK`
/// and RST alone; one without (a SYN) with `SEQ = 0`, `ACK = SEG.SEQ +
/// SEG.LEN` (SYN and FIN count one each) and RST|ACK. `payload_len` is the
/// IP payload's length (TCP header and data).
#[inline(always)]
pub fn reset_numbers(tcp: &TcpHdr, payload_len: u32) -> (u32, u32, u8) {
    let [doff, flags] = tcp_bits(tcp);
    let seq = u32::from_be_bytes(tcp.seq);
    let ack = u32::from_be_bytes(tcp.ack_seq);
    if flags & TCP_ACK != 0 {
        return (ack, 0, TCP_RST);
    }
    let data_offset = ((doff >> 4) as u32) * 4;
    let data = payload_len.saturating_sub(data_offset);
    let seg_len = data + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
    (0, seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
}

/// Header bytes 12 and 13: data offset (high nibble) and the flags. Read as
/// bytes: the crate's bitfield accessors walk bit by bit.
#[inline(always)]
fn tcp_bits(tcp: &TcpHdr) -> [u8; 2] {
    // SAFETY: BitfieldU16 is `#[repr(C)]` over `[u8; 2]`.
    unsafe { core::mem::transmute::<BitfieldU16, [u8; 2]>(tcp._bitfield_1) }
}

/// The reset's TCP header: ports swapped, no options, window 0, checksum 0
/// (filled in by the caller).
#[inline(always)]
fn reset_header(tcp: &TcpHdr, payload_len: u32) -> TcpHdr {
    let (seq, ack, flags) = reset_numbers(tcp, payload_len);
    TcpHdr {
        source: tcp.dest,
        dest: tcp.source,
        seq: seq.to_be_bytes(),
        ack_seq: ack.to_be_bytes(),
        _bitfield_align_1: [],
        _bitfield_1: BitfieldU16::new([((TcpHdr::LEN / 4) as u8) << 4, flags]),
        window: [0; 2],
        check: [0; 2],
        urg_ptr: [0; 2],
    }
}

/// The TCP checksum of a header written with a zero checksum field: the
/// pseudo-header sum, then (unless offload is pending, see
/// [`PacketMut::add_to_l4_checksum`]) the header's own sum.
#[inline(always)]
fn reset_checksum<P: PacketMut + ?Sized, T: Copy>(
    pkt: &mut P,
    l4: usize,
    pseudo: &T,
    tcp: &TcpHdr,
) -> bool {
    let p = pkt.sum(pseudo);
    let h = pkt.sum(tcp);
    let field = l4 + core::mem::offset_of!(TcpHdr, check);
    pkt.add_to_l4_checksum(field, p, true) && pkt.add_to_l4_checksum(field, h, false)
}

/// The IPv4 header of a reply from the offending packet's destination to
/// its source, its checksum computed.
#[inline(always)]
fn v4_header<P: PacketMut + ?Sized>(
    pkt: &P,
    ip: &Ipv4Hdr,
    tos: u8,
    len: u16,
    proto: u8,
) -> Ipv4Hdr {
    let mut out = Ipv4Hdr {
        vihl: 0x40 | (Ipv4Hdr::LEN / 4) as u8,
        tos,
        tot_len: len.to_be_bytes(),
        id: [0; 2],
        frags: [IP_DF, 0],
        ttl: TTL,
        proto,
        check: [0; 2],
        src_addr: ip.dst_addr,
        dst_addr: ip.src_addr,
    };
    out.check = csum_fold(pkt.sum(&out)).to_ne_bytes();
    out
}

/// The IPv4 pseudo-header of the transport checksum (RFC 793 3.1).
#[repr(C)]
#[derive(Clone, Copy)]
struct PseudoV4 {
    src: [u8; 4],
    dst: [u8; 4],
    zero: u8,
    proto: u8,
    len: [u8; 2],
}

/// The IPv6 pseudo-header (RFC 8200 8.1).
#[repr(C)]
#[derive(Clone, Copy)]
struct PseudoV6 {
    src: [u8; 16],
    dst: [u8; 16],
    len: [u8; 4],
    zero: [u8; 3],
    next: u8,
}

#[inline(always)]
fn reset_v4<P: PacketMut + ?Sized>(pkt: &mut P, parsed: &Parsed) -> bool {
    let l3 = parsed.l3_offset as usize;
    let l4 = l3 + Ipv4Hdr::LEN;
    let (Some(ip), Some(tcp)) = (
        pkt.load_header::<Ipv4Hdr>(l3),
        pkt.load_header::<TcpHdr>(l4),
    ) else {
        return false;
    };
    let payload = (u16::from_be_bytes(ip.tot_len) as u32).saturating_sub(Ipv4Hdr::LEN as u32);
    let header = reset_header(&tcp, payload);
    let out = v4_header(
        pkt,
        &ip,
        0,
        (Ipv4Hdr::LEN + TcpHdr::LEN) as u16,
        IPPROTO_TCP,
    );
    let pseudo = PseudoV4 {
        src: out.src_addr,
        dst: out.dst_addr,
        zero: 0,
        proto: IPPROTO_TCP,
        len: (TcpHdr::LEN as u16).to_be_bytes(),
    };
    pkt.resize(l4 + TcpHdr::LEN)
        && pkt.store(l3, &out)
        && pkt.store(l4, &header)
        && reset_checksum(pkt, l4, &pseudo, &header)
}

/// The IPv6 header of a reply: from the offending packet's destination to
/// its source.
#[inline(always)]
fn v6_header(ip: &Ipv6Hdr, payload_len: u16, next: u8) -> Ipv6Hdr {
    Ipv6Hdr {
        vcf: [0x60, 0, 0, 0],
        payload_len: payload_len.to_be_bytes(),
        next_hdr: next,
        hop_limit: TTL,
        src_addr: ip.dst_addr,
        dst_addr: ip.src_addr,
    }
}

#[inline(always)]
fn v6_pseudo(out: &Ipv6Hdr, upper_len: u32, next: u8) -> PseudoV6 {
    PseudoV6 {
        src: out.src_addr,
        dst: out.dst_addr,
        len: upper_len.to_be_bytes(),
        zero: [0; 3],
        next,
    }
}

#[inline(always)]
fn reset_v6<P: PacketMut + ?Sized>(pkt: &mut P, parsed: &Parsed) -> bool {
    let l3 = parsed.l3_offset as usize;
    let l4 = l3 + Ipv6Hdr::LEN;
    let (Some(ip), Some(tcp)) = (
        pkt.load_header::<Ipv6Hdr>(l3),
        pkt.load_header::<TcpHdr>(l4),
    ) else {
        return false;
    };
    let header = reset_header(&tcp, u16::from_be_bytes(ip.payload_len) as u32);
    let out = v6_header(&ip, TcpHdr::LEN as u16, IPPROTO_TCP);
    let pseudo = v6_pseudo(&out, TcpHdr::LEN as u32, IPPROTO_TCP);
    pkt.resize(l4 + TcpHdr::LEN)
        && pkt.store(l3, &out)
        && pkt.store(l4, &header)
        && reset_checksum(pkt, l4, &pseudo, &header)
}

/// How many bytes of the offending packet, from its IP header on, the ICMP
/// error quotes: the IP header (`header_len`) and 8 bytes, no more than the
/// datagram (`datagram_len`, from its length field) or the frame holds,
/// and at most [`QUOTE_MAX`].
#[inline(always)]
pub fn quote_len(frame_len: usize, l3: usize, header_len: usize, datagram_len: usize) -> usize {
    let mut q = header_len + 8;
    let in_frame = frame_len.saturating_sub(l3);
    if q > in_frame {
        q = in_frame;
    }
    if q > datagram_len {
        q = datagram_len;
    }
    if q > QUOTE_MAX {
        q = QUOTE_MAX;
    }
    q
}

#[inline(always)]
fn unreachable_v4<P: PacketMut + ?Sized>(pkt: &mut P, parsed: &Parsed) -> bool {
    let l3 = parsed.l3_offset as usize;
    let Some(ip) = pkt.load_header::<Ipv4Hdr>(l3) else {
        return false;
    };
    let header_len = ((ip.vihl & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes(ip.tot_len) as usize;
    let q = quote_len(pkt.len(), l3, header_len, total);
    // A bounded, non-zero length: the helpers' size argument must be
    // provably within the buffer (docs/design.md, Verifier notes).
    if q == 0 || q > QUOTE_MAX {
        return false;
    }
    if !pkt.copy_to_quote(l3, q) {
        return false;
    }
    let at_icmp = l3 + Ipv4Hdr::LEN;
    let at_quote = at_icmp + Icmpv4Hdr::LEN;
    let out = v4_header(pkt, &ip, ICMP_TOS, (at_quote - l3 + q) as u16, IPPROTO_ICMP);
    let mut icmp = Icmpv4Hdr {
        type_: ICMP_DEST_UNREACH,
        code: ICMP_PORT_UNREACH,
        check: [0; 2],
        data: [0; 4],
    };
    // The quote's sum over the zero-padded buffer is the sum of its q bytes.
    icmp.check = csum_fold(csum_add(pkt.sum(&icmp), pkt.quote_sum())).to_ne_bytes();
    pkt.resize(at_quote + q)
        && pkt.store(l3, &out)
        && pkt.store(at_icmp, &icmp)
        && pkt.store_quote(at_quote, q)
}

#[inline(always)]
fn unreachable_v6<P: PacketMut + ?Sized>(pkt: &mut P, parsed: &Parsed) -> bool {
    let l3 = parsed.l3_offset as usize;
    let Some(ip) = pkt.load_header::<Ipv6Hdr>(l3) else {
        return false;
    };
    let l4 = parsed.l4_offset as usize;
    // Extension headers are quoted too: the receiver walks them to the
    // transport ports. A chain the parser did not finish is quoted as far
    // as the bound.
    let header_len = if l4 > l3 { l4 - l3 } else { QUOTE_MAX };
    let datagram = Ipv6Hdr::LEN + u16::from_be_bytes(ip.payload_len) as usize;
    let q = quote_len(pkt.len(), l3, header_len, datagram);
    // See unreachable_v4.
    if q == 0 || q > QUOTE_MAX {
        return false;
    }
    if !pkt.copy_to_quote(l3, q) {
        return false;
    }
    let at_icmp = l3 + Ipv6Hdr::LEN;
    let at_quote = at_icmp + Icmpv6Hdr::LEN;
    let upper = (Icmpv6Hdr::LEN + q) as u16;
    let out = v6_header(&ip, upper, IPPROTO_ICMPV6);
    let pseudo = v6_pseudo(&out, upper as u32, IPPROTO_ICMPV6);
    let mut icmp = Icmpv6Hdr {
        type_: ICMPV6_DEST_UNREACH,
        code: ICMPV6_PORT_UNREACH,
        check: [0; 2],
        data: [0; 4],
    };
    let sum = csum_add(csum_add(pkt.sum(&pseudo), pkt.sum(&icmp)), pkt.quote_sum());
    icmp.check = csum_fold(sum).to_ne_bytes();
    pkt.resize(at_quote + q)
        && pkt.store(l3, &out)
        && pkt.store(at_icmp, &icmp)
        && pkt.store_quote(at_quote, q)
}

/// A frame in memory as a [`PacketMut`], for the host: the checksum helpers
/// behave as the kernel's do on an skb without offload (`CHECKSUM_NONE`),
/// or, with `offload_pending`, as on one with `CHECKSUM_PARTIAL`.
#[cfg(any(test, feature = "model"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecFrame {
    pub bytes: alloc::vec::Vec<u8>,
    /// The receiving device's MAC: the frame is "to this host" when its
    /// destination MAC is this (BPF_PROG_TEST_RUN runs on the loopback
    /// device, whose MAC is zero).
    pub device_mac: [u8; 6],
    pub offload_pending: bool,
    pub quote: [u8; QUOTE_MAX],
}

#[cfg(any(test, feature = "model"))]
impl VecFrame {
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            device_mac: [0; 6],
            offload_pending: false,
            quote: [0; QUOTE_MAX],
        }
    }
}

#[cfg(any(test, feature = "model"))]
impl Packet for VecFrame {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.bytes[..].load(offset)
    }
    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// The bytes of a header.
#[cfg(any(test, feature = "model"))]
fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a `#[repr(C)]` header of bytes without padding.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The ones' complement sum of `bytes` as the kernel's csum_partial
/// computes it on a little-endian machine: 16-bit words in memory order.
#[cfg(any(test, feature = "model"))]
pub fn sum_bytes(bytes: &[u8]) -> u32 {
    let mut s = 0u32;
    for pair in bytes.chunks(2) {
        let w = u16::from_ne_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        s = csum_add(s, w as u32);
    }
    s
}

#[cfg(any(test, feature = "model"))]
impl PacketMut for VecFrame {
    fn to_this_host(&self) -> bool {
        self.bytes.len() >= 6 && self.bytes[..6] == self.device_mac
    }
    fn load_header<T: Copy>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(size_of::<T>())?;
        let b = self.bytes.get(offset..end)?;
        // SAFETY: in bounds; T is a header of bytes, valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
    }
    fn copy_to_quote(&mut self, offset: usize, len: usize) -> bool {
        let Some(src) = offset
            .checked_add(len)
            .filter(|_| (1..=QUOTE_MAX).contains(&len))
            .and_then(|end| self.bytes.get(offset..end))
        else {
            return false;
        };
        self.quote = [0; QUOTE_MAX];
        self.quote[..len].copy_from_slice(src);
        true
    }
    fn quote_sum(&self) -> u32 {
        sum_bytes(&self.quote)
    }
    fn store_quote(&mut self, offset: usize, len: usize) -> bool {
        let quote = self.quote;
        match offset
            .checked_add(len)
            .and_then(|end| self.bytes.get_mut(offset..end))
        {
            Some(dst) if len <= QUOTE_MAX => {
                dst.copy_from_slice(&quote[..len]);
                true
            }
            _ => false,
        }
    }
    fn store<T: Copy>(&mut self, offset: usize, v: &T) -> bool {
        let b = as_bytes(v);
        let Some(dst) = offset
            .checked_add(b.len())
            .and_then(|end| self.bytes.get_mut(offset..end))
        else {
            return false;
        };
        dst.copy_from_slice(b);
        true
    }
    fn store_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> bool {
        self.store(0, dst) && self.store(6, src)
    }
    fn resize(&mut self, len: usize) -> bool {
        self.bytes.resize(len, 0);
        true
    }
    fn add_to_l4_checksum(&mut self, offset: usize, sum: u32, pseudo: bool) -> bool {
        let Some(field) = self.bytes.get_mut(offset..offset + 2) else {
            return false;
        };
        let old = u16::from_ne_bytes([field[0], field[1]]);
        let new = if self.offload_pending {
            if !pseudo {
                return true;
            }
            // The field holds a plain (uncomplemented) partial sum.
            !csum_fold(csum_add(sum, old as u32))
        } else {
            // The field holds a checksum: complement, add, complement.
            csum_fold(csum_add(sum, !old as u32))
        };
        field.copy_from_slice(&new.to_ne_bytes());
        true
    }
    fn sum<T: Copy>(&self, v: &T) -> u32 {
        sum_bytes(as_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use alloc::vec::Vec;

    const HOST_MAC: [u8; 6] = [0; 6];
    const CONTAINER_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn checksum_ok(bytes: &[u8]) -> bool {
        csum_fold(sum_bytes(bytes)) == 0
    }

    /// A SYN from 172.17.0.2:40000 to 169.254.169.254:80, seq 1000, with a
    /// 4-byte MSS option, its checksums right.
    fn syn_v4() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&CONTAINER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [
            0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 172, 17, 0, 2, 169, 254, 169, 254,
        ];
        let c = csum_fold(sum_bytes(&ip)).to_ne_bytes();
        ip[10..12].copy_from_slice(&c);
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 24];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = TCP_SYN;
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 24]);
        pseudo.extend_from_slice(&tcp);
        let c = csum_fold(sum_bytes(&pseudo)).to_ne_bytes();
        tcp[16..18].copy_from_slice(&c);
        f.extend_from_slice(&tcp);
        f
    }

    fn reply(frame: &[u8]) -> (Plan, Option<VecFrame>) {
        let mut v = VecFrame::new(frame);
        let p = parse(frame);
        let plan = plan(&v, &p);
        let built = build(&mut v, &p, plan);
        (plan, built.then_some(v))
    }

    #[test]
    fn a_syn_gets_the_rfc_793_reset() {
        let (plan, out) = reply(&syn_v4());
        assert_eq!(plan, Plan::Reset);
        let f = out.unwrap().bytes;
        assert_eq!(f.len(), 14 + 40);
        assert_eq!(&f[0..6], &CONTAINER_MAC);
        assert_eq!(&f[6..12], &HOST_MAC);
        assert!(checksum_ok(&f[14..34]), "IP checksum");
        assert_eq!(&f[26..30], &[169, 254, 169, 254]);
        assert_eq!(&f[30..34], &[172, 17, 0, 2]);
        let tcp = &f[34..54];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 80);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
        assert_eq!(&tcp[4..8], &0u32.to_be_bytes());
        assert_eq!(&tcp[8..12], &1001u32.to_be_bytes());
        assert_eq!(tcp[13], TCP_RST | TCP_ACK);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(tcp);
        assert!(checksum_ok(&pseudo), "TCP checksum");
    }

    #[test]
    fn with_offload_pending_the_field_holds_the_pseudo_header_sum() {
        let mut v = VecFrame::new(&syn_v4());
        v.offload_pending = true;
        let p = parse(&v.bytes[..]);
        assert!(build(&mut v, &p, Plan::Reset));
        let f = &v.bytes;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        // What the device (or the receiver's trust in CHECKSUM_PARTIAL)
        // completes from: the folded pseudo-header sum, not complemented.
        let want = !csum_fold(sum_bytes(&pseudo));
        assert_eq!(u16::from_ne_bytes([f[50], f[51]]), want);
    }

    fn tcp_hdr(b: &[u8; 20]) -> TcpHdr {
        VecFrame::new(b).load_header(0).unwrap()
    }

    #[test]
    fn reset_numbers_follow_rfc_793() {
        let reset_numbers = |b: &[u8; 20], len| super::reset_numbers(&tcp_hdr(b), len);
        let mut t = [0u8; 20];
        t[4..8].copy_from_slice(&7u32.to_be_bytes());
        t[8..12].copy_from_slice(&99u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = TCP_SYN;
        assert_eq!(reset_numbers(&t, 20), (0, 8, TCP_RST | TCP_ACK));
        // Data and FIN count too.
        t[13] = TCP_FIN;
        assert_eq!(reset_numbers(&t, 30), (0, 7 + 10 + 1, TCP_RST | TCP_ACK));
        // A segment with ACK: SEQ = SEG.ACK, RST alone.
        t[13] = TCP_ACK | TCP_FIN;
        assert_eq!(reset_numbers(&t, 20), (99, 0, TCP_RST));
        // A bogus length never underflows.
        t[13] = TCP_SYN;
        assert_eq!(reset_numbers(&t, 3), (0, 8, TCP_RST | TCP_ACK));
        t[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(reset_numbers(&t, 20), (0, 0, TCP_RST | TCP_ACK));
    }

    #[test]
    fn refused_and_unanswerable() {
        let syn = syn_v4();
        let mut group = syn.clone();
        group[6] |= 1;
        assert_eq!(reply(&group).0, Plan::Refused);
        let mut zero = syn.clone();
        zero[6..12].fill(0);
        assert_eq!(reply(&zero).0, Plan::Refused);
        // From the bridge's own MAC (the destination of a frame to this host).
        let mut own = syn.clone();
        own[0..6].copy_from_slice(&CONTAINER_MAC);
        let mut v = VecFrame::new(&own);
        v.device_mac = CONTAINER_MAC;
        assert_eq!(plan(&v, &parse(&own[..])), Plan::Refused);
        // Not to this host at layer 2.
        let mut other = syn.clone();
        other[0] = 0x02;
        assert_eq!(reply(&other).0, Plan::Unanswerable);
        // A multicast or loopback source address.
        for src in [
            [224, 0, 0, 1],
            [127, 0, 0, 1],
            [0, 0, 0, 0],
            [255, 255, 255, 255],
        ] {
            let mut f = syn.clone();
            f[26..30].copy_from_slice(&src);
            assert_eq!(reply(&f).0, Plan::Refused, "{src:?}");
        }
        // A reset is never answered.
        let mut rst = syn.clone();
        rst[14 + 20 + 13] = TCP_RST;
        assert_eq!(reply(&rst).0, Plan::Unanswerable);
        // Nor a TCP segment behind IPv4 options.
        let mut opts = Vec::from(&syn[..14]);
        opts.extend_from_slice(&[0x46, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        opts.extend_from_slice(&syn[26..34]);
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&syn[34..]);
        assert_eq!(reply(&opts).0, Plan::Unanswerable);
    }

    /// UDP from 172.17.0.2:5000 to 169.254.169.254:80, `payload` bytes.
    fn udp_v4(payload: usize, ihl: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&CONTAINER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let hl = ihl as usize * 4;
        let total = (hl + 8 + payload) as u16;
        f.extend_from_slice(&[0x40 | ihl, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 172, 17, 0, 2, 169, 254, 169, 254]);
        f.resize(14 + hl, 1); // options: NOPs
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    #[test]
    fn udp_gets_a_port_unreachable_quoting_header_and_8_bytes() {
        for (payload, ihl) in [(0, 5), (3, 5), (100, 5), (1400, 5), (100, 15)] {
            let frame = udp_v4(payload, ihl);
            let (plan, out) = reply(&frame);
            assert_eq!(plan, Plan::Unreachable);
            let f = out.unwrap().bytes;
            let q = ihl as usize * 4 + 8.min(8 + payload);
            assert_eq!(f.len(), 14 + 28 + q, "payload {payload} ihl {ihl}");
            assert!(checksum_ok(&f[14..34]));
            assert_eq!(&f[34..36], &[3, 3]);
            assert!(checksum_ok(&f[34..]), "ICMP checksum");
            assert_eq!(&f[42..], &frame[14..14 + q], "the quote");
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, 28 + q);
        }
    }

    #[test]
    fn icmp_errors_are_never_answered_echo_requests_are() {
        let mut f = udp_v4(0, 5);
        f[14 + 9] = 1;
        for (ty, answered) in [(8, true), (13, true), (3, false), (11, false), (42, false)] {
            f[34] = ty;
            let want = if answered {
                Plan::Unreachable
            } else {
                Plan::Unanswerable
            };
            assert_eq!(reply(&f).0, want, "type {ty}");
        }
    }

    #[test]
    fn csum_helpers() {
        assert_eq!(csum_add(0xffff_ffff, 1), 1);
        assert_eq!(csum_fold(0), 0xffff);
        assert_eq!(csum_fold(0xffff), 0);
        assert_eq!(csum_fold(0x1_0000), !1);
        // The RFC 1071 example: 0x0001 + 0xf203 + 0xf4f5 + 0xf6f7.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(u16::from_be(!csum_fold(sum_bytes(&b))), 0xddf2);
    }
}
