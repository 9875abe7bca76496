//! The policy as the kernel's maps hold it: the [`PolicyView`] the shared
//! decision (`egress_ebpf_common::decide`) runs against in the classifier.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use egress_ebpf_common::{
    bucket::Gcra,
    config::{PolicyConfig, SCOPE_PER_SOURCE},
    decide::PolicyView,
    rules::BlockRule,
};

use crate::{
    bucket::{self, Clock},
    log,
    maps::{ACTIVE_CONFIG, BLOCKED_V4, BLOCKED_V6, POLICY_CONFIG},
};

pub struct Maps<'a> {
    /// For the rare-condition logs.
    pub ctx: &'a TcContext,
}

impl PolicyView for Maps<'_> {
    #[inline(always)]
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        BLOCKED_V4.get(Key::new(32, *dst))
    }

    // Not inlined, on purpose. With both lookups inlined LLVM merges them
    // into one call site fed with either trie; the verifier cannot bind
    // that call to one map ("poisoned" map pointer), so it keeps the
    // generic bpf_map_lookup_elem and its indirect call (a retpoline on
    // this kernel) instead of calling trie_lookup_elem directly: 15 ns on
    // every packet. As a subprogram this lookup has a call site of its own.
    #[inline(never)]
    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        BLOCKED_V6.get(Key::new(128, *dst))
    }

    #[inline(always)]
    fn config(&self) -> Option<&PolicyConfig> {
        let config = active_config();
        if config.is_none() {
            log::config_missing(self.ctx);
        }
        config
    }

    #[inline(always)]
    fn admit_smtp(&self, gcra: &Gcra, scope: u8, src: &[u8; 16]) -> bool {
        // Refusals on the coarse clock, admissions on the precise one (Clock).
        let mut clock = Clock::now();
        if scope == SCOPE_PER_SOURCE {
            bucket::admit_per_source(self.ctx, gcra, src, &mut clock)
        } else {
            bucket::admit_global(gcra, &mut clock)
        }
    }
}

#[inline(always)]
fn active_config() -> Option<&'static PolicyConfig> {
    let slot = *ACTIVE_CONFIG.get(0)?;
    let config = POLICY_CONFIG.get(slot)?;
    // A slot the loader never wrote limits nothing (blocked destinations still apply).
    if config.valid == 0 {
        None
    } else {
        Some(config)
    }
}
