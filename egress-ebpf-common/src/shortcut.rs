//! The pass path's shortcut for the datagrams a host-network process sends
//! with `sendto()`: a whole (unfragmented) UDP datagram to a destination
//! whose first 16 bits hold no blocked prefix is one that [`decide`] passes
//! as `Passed`, whatever else it holds. Told from four header bytes and the
//! pre-filter, it costs a fraction of the parse and the decision, which the
//! `cgroup_skb/egress` program runs on every datagram of an unconnected
//! socket (docs/benchmarks.md, Analysis: host-network UDP).
//!
//! Why the answer is the decision's: an open /16 means no trie lookup finds
//! a rule ([`crate::prefilter`]), so no block rule and no exception apply;
//! a UDP datagram is never a connection attempt (only TCP is charged to the
//! SMTP bucket); and the only evasive UDP shape is a first fragment too
//! short for its ports, which is a fragment. Anything else returns false and
//! takes the full decision: TCP, a fragment, an IPv6 extension header, a
//! header cut short. The host's tests hold
//! this to [`decide`] over random headers (tests/tests/integration/host_parser.rs).
//!
//! [`decide`]: crate::decide::decide

use crate::{
    packet::Packet,
    prefilter::{PREFILTER_V4, PREFILTER_V6, Prefilter, hi16},
    rules::PROTO_UDP,
};

/// Whether `pkt` (starting at its IP header, as a `cgroup_skb` program sees
/// it) is a whole UDP datagram to an open destination. `prefilter` returns
/// the `PREFILTER` entry of a family (`PREFILTER_V4` / `PREFILTER_V6`); one
/// that is missing opens nothing.
#[inline(always)]
pub fn open_udp_datagram<'f, P, F>(pkt: &P, prefilter: F) -> bool
where
    P: Packet + ?Sized,
    F: FnOnce(u32) -> Option<&'f Prefilter>,
{
    // Version, traffic class / IHL, and for IPv6 the next header (byte 6);
    // for IPv4 the fragment field (bytes 6-7).
    let Some(h) = pkt.load::<10>(0) else {
        return false;
    };
    match h[0] >> 4 {
        4 => {
            // IHL of at least 5 (20 bytes): a shorter one is not IP to the
            // parser. Options only move the ports, which no pass reads.
            let whole = h[6] & 0x3f == 0 && h[7] == 0; // no MF, offset 0
            if h[0] & 0x0f < 5 || !whole || h[9] != PROTO_UDP {
                return false;
            }
            let Some(dst) = pkt.load::<2>(16) else {
                return false;
            };
            // The parser reads the whole 20-byte header or nothing.
            if pkt.len() < 20 {
                return false;
            }
            is_open(prefilter(PREFILTER_V4), dst)
        }
        6 => {
            // Next header UDP: no extension header, so no fragment header.
            if h[6] != PROTO_UDP || pkt.len() < 40 {
                return false;
            }
            let Some(dst) = pkt.load::<2>(24) else {
                return false;
            };
            is_open(prefilter(PREFILTER_V6), dst)
        }
        _ => false,
    }
}

#[inline(always)]
fn is_open(filter: Option<&Prefilter>, dst: [u8; 2]) -> bool {
    match filter {
        Some(f) => f.is_open(hi16(dst[0], dst[1])),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(dst: [u8; 4], proto: u8, frag: [u8; 2]) -> [u8; 28] {
        let mut h = [0u8; 28];
        h[0] = 0x45;
        h[6] = frag[0];
        h[7] = frag[1];
        h[9] = proto;
        h[16..20].copy_from_slice(&dst);
        h
    }

    #[test]
    fn only_whole_udp_to_an_open_slash16() {
        let mut f = Prefilter::open();
        f.close(32, &[169, 254, 169, 254]);
        let pf = |_| Some(&f);
        assert!(open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0, 0])[..],
            pf
        ));
        // Don't-fragment is whole.
        assert!(open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0x40, 0])[..],
            pf
        ));
        assert!(!open_udp_datagram(
            &v4([169, 254, 1, 1], 17, [0, 0])[..],
            pf
        ));
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 6, [0, 0])[..],
            pf
        ));
        // A first fragment (MF) and a later one.
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0x20, 0])[..],
            pf
        ));
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0, 1])[..],
            pf
        ));
        // Cut short, or no pre-filter written.
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0, 0])[..18],
            pf
        ));
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0, 0])[..],
            |_| None
        ));
        let closed = Prefilter::closed();
        assert!(!open_udp_datagram(
            &v4([198, 51, 100, 1], 17, [0, 0])[..],
            |_| Some(&closed)
        ));
    }
}
