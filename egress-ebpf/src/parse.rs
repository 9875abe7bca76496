//! Header parsing: Ethernet (up to two VLAN tags), IPv4 (with options),
//! IPv6 (a bounded walk of the extension-header chain), and the first bytes of
//! TCP/UDP.
//!
//! Every read goes through [`load`]: direct packet access where the linear
//! area holds the bytes, `bpf_skb_load_bytes` where it does not.

use aya_ebpf::programs::TcContext;
use egress_ebpf_common::{
    packet::{Fragment, Transport},
    rules::{DestPort, PROTO_TCP, PROTO_UDP},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;

/// Most IPv6 extension headers walked before the upper-layer header. A
/// conforming stack sends a handful at most (RFC 8200 section 4.1 orders at
/// most 6 kinds); a longer chain is treated as evasive.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Protocol value used when the parser never reached the upper-layer header.
pub const PROTO_UNKNOWN: u8 = 255;

pub enum Parsed {
    /// Not IP, or malformed so that the host's IP layer discards it anyway.
    Other,
    V4(Ip<[u8; 4]>),
    V6(Ip<[u8; 16]>),
}

pub struct Ip<A> {
    pub src: A,
    pub dst: A,
    pub transport: Transport,
    /// A shape that hides the transport header from inspection (see
    /// `CounterId::Evasive`).
    pub evasive: bool,
}

/// Offsets below this are read straight from the packet when the linear area
/// holds them. The bound exists for the verifier: it accepts a packet pointer
/// plus a variable offset only when the offset's maximum is known and small.
/// Headers beyond it (long IPv6 chains) go through the helper.
const DIRECT_READ_LIMIT: usize = 512;

/// The one way to read packet data: straight from the linear area when the
/// bytes are there, otherwise `bpf_skb_load_bytes`, which also reaches
/// paged (non-linear) data a bridge can hand us.
#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, ()> {
    if offset < DIRECT_READ_LIMIT {
        let start = ctx.data();
        let end = ctx.data_end();
        if start + offset + core::mem::size_of::<T>() <= end {
            // SAFETY: bounds checked against data_end just above.
            return Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) });
        }
    }
    ctx.load::<T>(offset).map_err(|_| ())
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    match try_parse(ctx) {
        Ok(p) => p,
        // A frame too short for its own L2/L3 headers carries nothing a rule
        // can match, and the stack drops it.
        Err(()) => Parsed::Other,
    }
}

#[inline(always)]
fn try_parse(ctx: &TcContext) -> Result<Parsed, ()> {
    let eth: EthHdr = load(ctx, 0)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // 802.1Q tag: TCI (2 bytes), then the encapsulated EtherType.
        let inner: [u8; 2] = load(ctx, off + 2)?;
        ether_type = u16::from_be_bytes(inner);
        off += 4;
    }
    match ether_type {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        _ => Ok(Parsed::Other),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, off: usize) -> Result<Parsed, ()> {
    let h: Ipv4Hdr = load(ctx, off)?;
    let ihl = h.ihl() as usize;
    if h.version() != 4 || ihl < Ipv4Hdr::LEN {
        // ip_rcv() discards these before routing.
        return Ok(Parsed::Other);
    }
    let frag_offset = h.frag_offset();
    let more_fragments = h.frag_flags() & 0x1 != 0;
    let fragment = if frag_offset != 0 {
        Fragment::Later
    } else if more_fragments {
        Fragment::First
    } else {
        Fragment::Whole
    };
    let (transport, mut evasive) = transport(ctx, off + ihl, h.proto, fragment);
    // RFC 1858: a TCP fragment at offset 8 bytes can only serve to overwrite
    // the flags of the first fragment.
    if h.proto == PROTO_TCP && frag_offset == 1 {
        evasive = true;
    }
    Ok(Parsed::V4(Ip {
        src: h.src_addr,
        dst: h.dst_addr,
        transport,
        evasive,
    }))
}

/// Reads the destination port and TCP flags at `off`, as far as the fragment
/// holds them. The second value is true when a first fragment hides the ports.
#[inline(always)]
fn transport(ctx: &TcContext, off: usize, proto: u8, fragment: Fragment) -> (Transport, bool) {
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
    match load::<[u8; 4]>(ctx, off) {
        Ok(ports) => {
            t.sport = u16::from_be_bytes([ports[0], ports[1]]);
            t.dport = DestPort::known(u16::from_be_bytes([ports[2], ports[3]]));
        }
        Err(()) => {
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
        if let Ok(b) = load::<[u8; 2]>(ctx, off + 12) {
            t.tcp_flags = b[1];
            t.tcp_flags_seen = true;
        }
    }
    (t, false)
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;
const IPPROTO_EXPERIMENT1: u8 = 253;
const IPPROTO_EXPERIMENT2: u8 = 254;

#[inline(always)]
fn is_extension_header(next: u8) -> bool {
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
fn ipv6(ctx: &TcContext, off: usize) -> Result<Parsed, ()> {
    let h: Ipv6Hdr = load(ctx, off)?;
    if h.version() != 6 {
        return Ok(Parsed::Other);
    }
    let mut next = h.next_hdr;
    let mut off = off + Ipv6Hdr::LEN;
    let mut fragment = Fragment::Whole;
    let mut reached_upper_layer = false;
    let mut truncated = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_FRAGMENT => {
                // next header, reserved, offset (13 bits) | res (2) | M (1), id.
                let Ok(f) = load::<[u8; 4]>(ctx, off) else {
                    truncated = true;
                    break;
                };
                next = f[0];
                let offset_flags = u16::from_be_bytes([f[2], f[3]]);
                if offset_flags >> 3 != 0 {
                    fragment = Fragment::Later;
                    // The rest of the chain lives in the first fragment.
                    reached_upper_layer = true;
                    break;
                }
                if offset_flags & 1 != 0 {
                    fragment = Fragment::First;
                }
                off += 8;
            }
            IPPROTO_AH => {
                let Ok(a) = load::<[u8; 2]>(ctx, off) else {
                    truncated = true;
                    break;
                };
                next = a[0];
                off += (a[1] as usize + 2) * 4;
            }
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH | IPPROTO_HIP
            | IPPROTO_SHIM6 | IPPROTO_EXPERIMENT1 | IPPROTO_EXPERIMENT2 => {
                let Ok(e) = load::<[u8; 2]>(ctx, off) else {
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
    // layer: a chain exactly at the bound is complete.
    if !reached_upper_layer && !truncated && !is_extension_header(next) {
        reached_upper_layer = true;
    }
    let (transport, evasive) = if reached_upper_layer {
        transport(ctx, off, next, fragment)
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
    Ok(Parsed::V6(Ip {
        src: h.src_addr,
        dst: h.dst_addr,
        transport,
        evasive,
    }))
}
