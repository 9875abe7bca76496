//! Hand-built frames for BPF_PROG_TEST_RUN: Ethernet (with VLAN tags), IPv4
//! (options, fragments), IPv6 (extension headers, fragments), TCP, UDP, ICMP.
//! Checksums are left zero: the classifier never looks at them.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// The frames' source MAC (a container's).
pub const SRC_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
/// The destination of every frame built here: the bridge's MAC, as a
/// container's frames to its default gateway carry it (an endpoint entry
/// written for BPF_PROG_TEST_RUN names it as its bridge's). Not the test
/// device's: BPF_PROG_TEST_RUN takes such frames as not addressed to this
/// host, see [`to_this_host`].
pub const DST_MAC: [u8; 6] = [0x02, 0x42, 0x5e, 0x00, 0x00, 0x01];

/// The frame addressed to the MAC of the device BPF_PROG_TEST_RUN runs on
/// (the loopback device's, zero), so the kernel takes it as addressed to
/// this host (`PACKET_HOST`), as a bridge takes a frame to its own MAC: the
/// frames a reject answers.
pub fn to_this_host(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].fill(0);
    frame
}

/// A transport payload: the bytes after the IP header(s).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

pub fn icmp_echo() -> Vec<u8> {
    vec![8, 0, 0, 0, 0, 1, 0, 1]
}

#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// Option bytes (padded to a multiple of 4 by the caller).
    pub options: Vec<u8>,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub more_fragments: bool,
    /// Overrides the IHL nibble (for malformed headers).
    pub ihl_override: Option<u8>,
    /// Overrides the total length field.
    pub tot_len_override: Option<u16>,
    /// Identification field (tests use it to recognise their packets).
    pub id: u16,
}

impl V4 {
    pub fn new(dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src: Ipv4Addr::new(172, 17, 0, 2),
            dst,
            proto,
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
            ihl_override: None,
            tot_len_override: None,
            id: 0x1234,
        }
    }

    pub fn header(&self, payload_len: usize) -> Vec<u8> {
        let ihl = (20 + self.options.len()) / 4;
        let mut h = vec![0u8; 20];
        h[0] = 0x40 | self.ihl_override.unwrap_or(ihl as u8);
        let tot = self
            .tot_len_override
            .unwrap_or((ihl * 4 + payload_len) as u16);
        h[2..4].copy_from_slice(&tot.to_be_bytes());
        h[4..6].copy_from_slice(&self.id.to_be_bytes());
        let frags = (self.frag_offset & 0x1fff) | if self.more_fragments { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&frags.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        // A valid header checksum, so frames sent for real survive ip_rcv().
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h
    }
}

/// An IPv6 extension header in the chain.
#[derive(Clone, Debug)]
pub enum Ext {
    HopByHop,
    DestOpts,
    Routing,
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Authentication header with `len` 32-bit words beyond the first two.
    Auth,
    /// A routing header of type `kind` (0, 2, 4 = SRH) naming `addrs`
    /// (for an SRH, `addrs[0]` is the last segment, RFC 8754).
    Route {
        kind: u8,
        segments_left: u8,
        addrs: Vec<Ipv6Addr>,
    },
    /// Any other extension header in RFC 6564's uniform format (Mobility
    /// 135, HIP 139, Shim6 140, experimental 253 and 254): 8 bytes.
    Generic(u8),
}

impl Ext {
    fn number(&self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing | Ext::Route { .. } => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts => 60,
            Ext::Generic(n) => *n,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            // 8 bytes: next, hdr ext len 0, PadN option of 4.
            Ext::HopByHop | Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            // Type 0 segments-left 0 routing header, 8 bytes.
            Ext::Routing | Ext::Generic(_) => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Ext::Fragment { offset, more } => {
                let v = (offset << 3) | (*more as u16);
                let mut b = vec![next, 0];
                b.extend_from_slice(&v.to_be_bytes());
                b.extend_from_slice(&0xdead_beefu32.to_be_bytes());
                b
            }
            Ext::Route {
                kind,
                segments_left,
                addrs,
            } => {
                let n = addrs.len() as u8;
                // Type 4's byte 4 is the last entry; 0 and 2 reserve it.
                let last = if *kind == 4 { n.saturating_sub(1) } else { 0 };
                let mut b = vec![next, 2 * n, *kind, *segments_left, last, 0, 0, 0];
                for a in addrs {
                    b.extend_from_slice(&a.octets());
                }
                b
            }
            // AH: payload len in 4-byte units minus 2: 1 => 12 bytes.
            Ext::Auth => {
                let mut b = vec![next, 1, 0, 0];
                b.extend_from_slice(&[0u8; 8]);
                b
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Flow label (20 bits); tests use it to recognise their packets.
    pub flow: u32,
    pub exts: Vec<Ext>,
    pub proto: u8,
}

impl V6 {
    pub fn new(dst: Ipv6Addr, proto: u8) -> Self {
        Self {
            src: "fd00:dead::2".parse().unwrap(),
            dst,
            flow: 0,
            exts: Vec::new(),
            proto,
        }
    }

    pub fn header(&self, payload_len: usize) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map(Ext::number).unwrap_or(self.proto);
            chain.extend(e.bytes(next));
        }
        let first = self.exts.first().map(Ext::number).unwrap_or(self.proto);
        let mut h = vec![0u8; 40];
        h[0..4].copy_from_slice(&(0x6000_0000u32 | (self.flow & 0xf_ffff)).to_be_bytes());
        h[4..6].copy_from_slice(&((chain.len() + payload_len) as u16).to_be_bytes());
        h[6] = first;
        h[7] = 64;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        h.extend(chain);
        h
    }
}

/// Ethernet framing, with VLAN tags (outermost first: (TPID, VID)).
pub fn ethernet(ether_type: u16, vlans: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn v4_frame(ip: &V4, l4: &[u8]) -> Vec<u8> {
    v4_frame_vlan(ip, l4, &[])
}

pub fn v4_frame_vlan(ip: &V4, l4: &[u8], vlans: &[(u16, u16)]) -> Vec<u8> {
    let mut p = ip.header(l4.len());
    p.extend_from_slice(l4);
    ethernet(0x0800, vlans, &p)
}

pub fn v6_frame(ip: &V6, l4: &[u8]) -> Vec<u8> {
    let mut p = ip.header(l4.len());
    p.extend_from_slice(l4);
    ethernet(0x86dd, &[], &p)
}

/// Convenience: an IPv4 TCP segment from a container.
pub fn v4_tcp(dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    v4_frame(
        &V4::new(Ipv4Addr::from(dst), IPPROTO_TCP),
        &tcp(40000, dport, flags),
    )
}

pub fn v6_tcp(dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    v6_frame(
        &V6::new(dst.parse().unwrap(), IPPROTO_TCP),
        &tcp(40000, dport, flags),
    )
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&[172, 17, 0, 2]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[172, 17, 0, 1]);
    ethernet(0x0806, &[], &a)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
