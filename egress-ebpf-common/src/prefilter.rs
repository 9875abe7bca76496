//! The prefix pre-filter: which /16s (IPv4) and which first 16 bits (IPv6)
//! hold no blocked prefix at all, so that a packet to one of them skips the
//! LPM trie walk. Nearly every packet goes to an open destination; one
//! inlined array lookup and a bit test replace the trie's call and walk
//! (docs/design.md, Per-packet rules; docs/benchmarks.md, Analysis).
//!
//! Fail-safe by construction: a set bit says "open, skip the trie", so a
//! map that was never written (all zeros) sends every packet to the trie,
//! and the loader clears bits before it adds the trie entries that need
//! them cleared (`policy::apply`).

/// Words of one family's bitmap: 65,536 bits, one per value of the
/// address's first 16 bits.
pub const PREFILTER_WORDS: usize = 1024;

/// `PREFILTER` entries: [`PREFILTER_V4`] and [`PREFILTER_V6`].
pub const PREFILTER_ENTRIES: u32 = 2;
pub const PREFILTER_V4: u32 = 0;
pub const PREFILTER_V6: u32 = 1;

/// The value of one `PREFILTER` entry: bit `hi16 % 64` of word `hi16 / 64`
/// is set when no blocked prefix overlaps the addresses whose first 16
/// bits are `hi16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefilter {
    pub words: [u64; PREFILTER_WORDS],
}
crate::assert_size!(Prefilter, 8192);

/// The first 16 bits of an address (its first two bytes), as the index.
#[inline(always)]
pub const fn hi16(b0: u8, b1: u8) -> u16 {
    ((b0 as u16) << 8) | b1 as u16
}

impl Prefilter {
    /// Every destination walks the trie (what an unwritten entry says).
    pub const fn closed() -> Self {
        Self {
            words: [0; PREFILTER_WORDS],
        }
    }

    /// Every destination skips the trie (a policy with no prefix of this family).
    pub const fn open() -> Self {
        Self {
            words: [u64::MAX; PREFILTER_WORDS],
        }
    }

    /// Whether addresses starting with `hi16` are clear of every blocked
    /// prefix. `hi16 >> 6` is below [`PREFILTER_WORDS`] by construction,
    /// so the verifier sees a bounded index (no runtime check left).
    #[inline(always)]
    pub fn is_open(&self, hi16: u16) -> bool {
        let word = self.words[(hi16 >> 6) as usize];
        word & (1u64 << (hi16 & 63)) != 0
    }

    /// Marks every /16 that the prefix `addr/len` overlaps as not open.
    pub fn close(&mut self, len: u32, addr: &[u8]) {
        let first = hi16(
            addr.first().copied().unwrap_or(0),
            addr.get(1).copied().unwrap_or(0),
        );
        // A prefix of 16 bits or more lies inside one /16; a shorter one
        // covers 2^(16 - len) of them.
        let span: u32 = if len >= 16 { 1 } else { 1 << (16 - len) };
        let start = u32::from(first) & !(span - 1);
        for v in start..start + span {
            self.words[(v >> 6) as usize] &= !(1u64 << (v & 63));
        }
    }

    /// Bitwise and: open only where both are (the filter in force while
    /// the trie holds both policies' entries).
    pub fn and(&self, other: &Self) -> Self {
        let mut out = *self;
        for (w, o) in out.words.iter_mut().zip(other.words.iter()) {
            *w &= *o;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_filter_opens_nothing_and_close_is_exact() {
        assert!(!Prefilter::closed().is_open(0xc633));
        let mut f = Prefilter::open();
        f.close(32, &[169, 254, 169, 254]);
        assert!(!f.is_open(hi16(169, 254)));
        assert!(f.is_open(hi16(169, 253)));
        assert!(f.is_open(hi16(169, 255)));
        // A /10 closes the 64 /16s it covers, and none next to them.
        f.close(10, &[100, 64, 0, 0]);
        for b1 in 64..128 {
            assert!(!f.is_open(hi16(100, b1)), "100.{b1}");
        }
        assert!(f.is_open(hi16(100, 63)) && f.is_open(hi16(100, 128)));
        // An IPv6 /16 and a /0.
        let mut v6 = Prefilter::open();
        v6.close(128, &[0xfd, 0x00, 0x0e, 0xc2]);
        assert!(!v6.is_open(0xfd00) && v6.is_open(0x2001));
        v6.close(0, &[]);
        assert!(v6.words.iter().all(|&w| w == 0));
    }

    #[test]
    fn and_is_open_only_where_both_are() {
        let mut a = Prefilter::open();
        a.close(16, &[10, 1]);
        let mut b = Prefilter::open();
        b.close(16, &[10, 2]);
        let c = a.and(&b);
        assert!(!c.is_open(hi16(10, 1)) && !c.is_open(hi16(10, 2)) && c.is_open(hi16(10, 3)));
    }
}
