//! The one way the parser reads a packet. The kernel implements [`Packet`] on
//! its socket buffer (egress-ebpf's `skb` module: direct reads of the linear
//! area, then `bpf_skb_load_bytes`), the host on a byte slice, so the host's
//! tests and fuzzer run exactly the parser the kernel runs.

/// Read access to the bytes of one frame, starting at the Ethernet header.
pub trait Packet {
    /// The `N` bytes at `offset`, or `None` when the frame ends before
    /// `offset + N`. A read never returns part of the bytes.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// Length of the whole frame in bytes.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Packet for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_reads_whole_windows_or_nothing() {
        let b: &[u8] = &[1, 2, 3, 4];
        assert_eq!(b.load::<2>(0), Some([1, 2]));
        assert_eq!(b.load::<2>(2), Some([3, 4]));
        assert_eq!(b.load::<2>(3), None);
        assert_eq!(b.load::<0>(4), Some([]));
        assert_eq!(b.load::<1>(usize::MAX), None);
        assert_eq!(Packet::len(b), 4);
        assert!(Packet::is_empty(&[][..]));
    }
}
