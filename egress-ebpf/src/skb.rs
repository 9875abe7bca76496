//! The socket buffer as the parser's [`Packet`].

use aya_ebpf::programs::{SkBuffContext, TcContext};
use egress_ebpf_common::packet::Packet;

/// Offsets below this are read straight from the packet when the linear area
/// holds them. The bound exists for the verifier: it accepts a packet pointer
/// plus a variable offset only when the offset's maximum is known and small.
/// Headers beyond it (long IPv6 chains) go through the helper.
const DIRECT_READ_LIMIT: usize = 512;

/// A newtype because both the trait and `TcContext` are foreign to this crate.
pub struct Skb<'a>(pub &'a TcContext);

impl Packet for Skb<'_> {
    /// The one way to read packet data: straight from the linear area when the
    /// bytes are there, otherwise `bpf_skb_load_bytes`, which also reaches
    /// paged (non-linear) data a bridge can hand us.
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if offset < DIRECT_READ_LIMIT {
            let start = self.0.data();
            let end = self.0.data_end();
            if start + offset + N <= end {
                // SAFETY: bounds checked against data_end just above.
                return Some(unsafe {
                    core::ptr::read_unaligned((start + offset) as *const [u8; N])
                });
            }
        }
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
}

/// A `cgroup_skb` program's packet as the parser's [`Packet`]: it starts at
/// the IP header (no Ethernet header; `parse::parse_ip`). Read the same way
/// as [`Skb`]: the linear area first, then `bpf_skb_load_bytes`.
pub struct CgroupSkb<'a>(pub &'a SkBuffContext);

impl Packet for CgroupSkb<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if offset < DIRECT_READ_LIMIT {
            // SAFETY: the context's own fields; the verifier checks the reads.
            let (start, end) = unsafe {
                let skb = self.0.skb.skb;
                ((*skb).data as usize, (*skb).data_end as usize)
            };
            if start + offset + N <= end {
                // SAFETY: bounds checked against data_end just above.
                return Some(unsafe {
                    core::ptr::read_unaligned((start + offset) as *const [u8; N])
                });
            }
        }
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
}
