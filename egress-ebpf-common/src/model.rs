//! The policy in memory: a [`PolicyView`] for the host, holding what the
//! classifier's maps hold (the trie entries the loader computes, the config,
//! the SMTP buckets) and answering the way the maps do: longest-prefix match,
//! an unwritten config that limits nothing, a per-source table that shares an
//! overflow bucket when full. With it the host runs [`crate::decide::decide`]
//! without a kernel: in tests, and for the policy read back from the pins.

use alloc::collections::BTreeMap;
use core::cell::{Cell, RefCell};

use crate::{
    bucket::Gcra,
    config::{PolicyConfig, SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE},
    decide::PolicyView,
    maps::{SMTP_GLOBAL_SLOT, SMTP_GLOBAL_SLOTS, SMTP_OVERFLOW_SLOT, SMTP_SOURCE_CAPACITY},
    rules::BlockRule,
};

/// Trie contents keyed like the kernel's `lpm_trie::Key`: (prefix length, address).
pub type Prefixes<const N: usize> = BTreeMap<(u32, [u8; N]), BlockRule>;

pub struct PolicyModel {
    blocked_v4: Prefixes<4>,
    blocked_v6: Prefixes<16>,
    config: PolicyConfig,
    /// `SMTP_BUCKET`: the TATs of the global and the overflow bucket (0 = full).
    smtp_bucket: Cell<[u64; SMTP_GLOBAL_SLOTS as usize]>,
    /// `SMTP_SOURCE_BUCKETS`.
    smtp_sources: RefCell<BTreeMap<[u8; 16], u64>>,
    source_capacity: usize,
    /// The clock the buckets see (the kernel's coarse and precise clocks are
    /// one clock here), in nanoseconds.
    now_ns: Cell<u64>,
}

impl PolicyModel {
    /// A model holding these trie entries (host bits beyond each prefix are
    /// ignored, as in the kernel's trie) and this config (in force only if
    /// `valid`), with full buckets at time 1 ns.
    pub fn new(blocked_v4: Prefixes<4>, blocked_v6: Prefixes<16>, config: PolicyConfig) -> Self {
        Self {
            blocked_v4: masked(blocked_v4),
            blocked_v6: masked(blocked_v6),
            config,
            smtp_bucket: Cell::new([0; SMTP_GLOBAL_SLOTS as usize]),
            smtp_sources: RefCell::new(BTreeMap::new()),
            source_capacity: SMTP_SOURCE_CAPACITY as usize,
            now_ns: Cell::new(1),
        }
    }

    /// The per-source table holds at most `n` sources (the kernel's is
    /// `SMTP_SOURCE_CAPACITY`).
    pub fn with_source_capacity(mut self, n: usize) -> Self {
        self.source_capacity = n;
        self
    }

    /// The SMTP buckets as the kernel holds them (`SMTP_BUCKET`'s TATs and
    /// `SMTP_SOURCE_BUCKETS`), e.g. read back from the pins.
    pub fn with_smtp_state(
        self,
        slots: [u64; SMTP_GLOBAL_SLOTS as usize],
        sources: BTreeMap<[u8; 16], u64>,
    ) -> Self {
        self.smtp_bucket.set(slots);
        *self.smtp_sources.borrow_mut() = sources;
        self
    }

    pub fn set_now(&self, ns: u64) {
        self.now_ns.set(ns);
    }

    pub fn now(&self) -> u64 {
        self.now_ns.get()
    }

    /// Sources with a bucket of their own.
    pub fn sources(&self) -> usize {
        self.smtp_sources.borrow().len()
    }

    fn admit_slot(&self, g: &Gcra, slot: u32) -> bool {
        let mut tats = self.smtp_bucket.get();
        let tat = &mut tats[slot as usize];
        match g.admit(*tat, self.now()) {
            Some(next) => {
                *tat = next;
                self.smtp_bucket.set(tats);
                true
            }
            None => false,
        }
    }
}

fn masked<const N: usize>(p: Prefixes<N>) -> Prefixes<N> {
    p.into_iter()
        .map(|((len, addr), v)| ((len, mask(&addr, len)), v))
        .collect()
}

fn mask<const N: usize>(addr: &[u8; N], len: u32) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, (o, a)) in out.iter_mut().zip(addr).enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8);
        *o = if bits == 0 {
            0
        } else {
            a & (0xffu8 << (8 - bits))
        };
    }
    out
}

/// Longest-prefix match: the entry of the longest prefix that holds `dst`.
fn longest_match<'a, const N: usize>(p: &'a Prefixes<N>, dst: &[u8; N]) -> Option<&'a BlockRule> {
    (0..=(N as u32 * 8))
        .rev()
        .find_map(|len| p.get(&(len, mask(dst, len))))
}

impl PolicyView for PolicyModel {
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        longest_match(&self.blocked_v4, dst)
    }

    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        longest_match(&self.blocked_v6, dst)
    }

    fn config(&self) -> Option<&PolicyConfig> {
        (self.config.valid != 0).then_some(&self.config)
    }

    fn admit_smtp(&self, g: &Gcra, scope: u8, src: &[u8; 16]) -> bool {
        // Per-container falls back to per-source where the sender is not
        // known (this model is the bridge's view).
        if scope != SCOPE_PER_SOURCE && scope != SCOPE_PER_CONTAINER {
            return self.admit_slot(g, SMTP_GLOBAL_SLOT);
        }
        let now = self.now();
        let mut sources = self.smtp_sources.borrow_mut();
        if let Some(tat) = sources.get_mut(src) {
            return match g.admit(*tat, now) {
                Some(next) => {
                    *tat = next;
                    true
                }
                None => false,
            };
        }
        // A new source: a fresh (full) bucket, or the shared overflow bucket
        // once the table is full (the kernel never evicts).
        let Some(first) = g.admit(0, now) else {
            return false;
        };
        if sources.len() < self.source_capacity {
            sources.insert(*src, first);
            return true;
        }
        drop(sources);
        self.admit_slot(g, SMTP_OVERFLOW_SLOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SCOPE_GLOBAL;

    fn rule(id: u16) -> BlockRule {
        let mut r = BlockRule::empty();
        r.all_rule_id = id;
        r
    }

    fn config(scope: u8) -> PolicyConfig {
        let g = Gcra::new(1, 3_600_000_000_000, 2).unwrap();
        let mut c = PolicyConfig::empty();
        c.emission_ns = g.emission_ns;
        c.burst_window_ns = g.burst_window_ns;
        c.smtp_ports[0] = 25;
        c.smtp_port_count = 1;
        c.scope = scope;
        c.valid = 1;
        c
    }

    #[test]
    fn the_longest_prefix_wins_and_host_bits_are_ignored() {
        let mut v4 = Prefixes::new();
        v4.insert((8, [10, 0, 0, 0]), rule(1));
        v4.insert((24, [10, 1, 2, 99]), rule(2)); // host bits set: ignored
        v4.insert((32, [10, 1, 2, 3]), rule(3));
        let m = PolicyModel::new(v4, Prefixes::new(), config(SCOPE_GLOBAL));
        let id = |d: [u8; 4]| m.blocked_v4(&d).map(|r| r.all_rule_id);
        assert_eq!(id([10, 1, 2, 3]), Some(3));
        assert_eq!(id([10, 1, 2, 4]), Some(2));
        assert_eq!(id([10, 9, 9, 9]), Some(1));
        assert_eq!(id([11, 0, 0, 0]), None);
        let mut all = Prefixes::new();
        all.insert((0, [0; 16]), rule(4));
        let m = PolicyModel::new(Prefixes::new(), all, config(SCOPE_GLOBAL));
        assert_eq!(m.blocked_v6(&[0xfd; 16]).map(|r| r.all_rule_id), Some(4));
    }

    #[test]
    fn mask_keeps_exactly_the_prefix_bits() {
        assert_eq!(mask(&[0xff; 4], 0), [0; 4]);
        assert_eq!(mask(&[0xff; 4], 9), [0xff, 0x80, 0, 0]);
        assert_eq!(mask(&[0xff; 4], 32), [0xff; 4]);
        assert_eq!(mask(&[0xab; 2], 12), [0xab, 0xa0]);
    }

    #[test]
    fn an_unwritten_config_is_not_in_force() {
        let m = PolicyModel::new(Prefixes::new(), Prefixes::new(), PolicyConfig::empty());
        assert!(m.config().is_none());
    }

    #[test]
    fn global_bucket_admits_burst_then_refills() {
        let c = config(SCOPE_GLOBAL);
        let g = Gcra {
            emission_ns: c.emission_ns,
            burst_window_ns: c.burst_window_ns,
        };
        let m = PolicyModel::new(Prefixes::new(), Prefixes::new(), c);
        let src = [1; 16];
        assert!(m.admit_smtp(&g, SCOPE_GLOBAL, &src));
        assert!(m.admit_smtp(&g, SCOPE_GLOBAL, &[2; 16]));
        assert!(!m.admit_smtp(&g, SCOPE_GLOBAL, &src));
        m.set_now(m.now() + g.emission_ns);
        assert!(m.admit_smtp(&g, SCOPE_GLOBAL, &src));
    }

    #[test]
    fn a_full_source_table_shares_the_overflow_bucket() {
        let c = config(SCOPE_PER_SOURCE);
        let g = Gcra {
            emission_ns: c.emission_ns,
            burst_window_ns: c.burst_window_ns,
        };
        let m = PolicyModel::new(Prefixes::new(), Prefixes::new(), c).with_source_capacity(2);
        for s in [1u8, 2] {
            assert!(m.admit_smtp(&g, SCOPE_PER_SOURCE, &[s; 16]));
            assert!(m.admit_smtp(&g, SCOPE_PER_SOURCE, &[s; 16]));
            assert!(!m.admit_smtp(&g, SCOPE_PER_SOURCE, &[s; 16]));
        }
        // Sources 3, 4, 5 share one bucket of burst 2.
        assert!(m.admit_smtp(&g, SCOPE_PER_SOURCE, &[3; 16]));
        assert!(m.admit_smtp(&g, SCOPE_PER_SOURCE, &[4; 16]));
        assert!(!m.admit_smtp(&g, SCOPE_PER_SOURCE, &[5; 16]));
        assert_eq!(m.sources(), 2);
    }
}
