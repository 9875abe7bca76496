//! The policy as the kernel's maps hold it: the [`PolicyView`] the shared
//! decision (`egress_ebpf_common::decide`) runs against in the classifier.

use aya_ebpf::{EbpfContext, maps::lpm_trie::Key, programs::TcContext};
use egress_ebpf_common::{
    bucket::Gcra,
    config::{PolicyConfig, SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE},
    decide::PolicyView,
    endpoint::{
        ENDPOINT_EXCEPTED, ENDPOINT_OWN_SMTP, ENDPOINT_SMTP_UNLIMITED, Endpoint, ExceptionKey,
        endpoint_slot,
    },
    prefilter::{PREFILTER_V4, PREFILTER_V6, hi16},
    rules::BlockRule,
};

use crate::{
    bucket::{self, Clock},
    log,
    maps::{
        ACTIVE_CONFIG, BLOCKED_V4, BLOCKED_V6, ENDPOINT_OVERFLOW, ENDPOINTS, EXCEPTIONS,
        POLICY_CONFIG, PREFILTER,
    },
};

/// The longest blocked IPv4 prefix holding `dst`: none at once when the
/// pre-filter says its /16 holds no blocked prefix (an array lookup the
/// verifier inlines, and a bit test), else the trie's answer
/// (egress_ebpf_common::prefilter).
#[inline(always)]
pub fn blocked_v4(dst: &[u8; 4]) -> Option<&'static BlockRule> {
    if let Some(f) = PREFILTER.get(PREFILTER_V4)
        && f.is_open(hi16(dst[0], dst[1]))
    {
        return None;
    }
    BLOCKED_V4.get(Key::new(32, *dst))
}

// Not inlined, on purpose. With both trie lookups inlined LLVM merges them
// into one call site fed with either trie; the verifier cannot bind that
// call to one map ("poisoned" map pointer), so it keeps the generic
// bpf_map_lookup_elem and its indirect call (a retpoline on this kernel)
// instead of calling trie_lookup_elem directly: 15 ns on every packet. As
// a subprogram this lookup has a call site of its own.
#[inline(never)]
pub fn blocked_v6(dst: &[u8; 16]) -> Option<&'static BlockRule> {
    if let Some(f) = PREFILTER.get(PREFILTER_V6)
        && f.is_open(hi16(dst[0], dst[1]))
    {
        return None;
    }
    BLOCKED_V6.get(Key::new(128, *dst))
}

pub struct Maps<'a, C: EbpfContext> {
    /// For the rare-condition logs.
    pub ctx: &'a C,
}

impl<C: EbpfContext> PolicyView for Maps<'_, C> {
    #[inline(always)]
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        blocked_v4(dst)
    }

    #[inline(always)]
    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        blocked_v6(dst)
    }

    #[inline(always)]
    fn config(&self) -> Option<&PolicyConfig> {
        config_or_log(self.ctx)
    }

    #[inline(always)]
    fn admit_smtp(&self, gcra: &Gcra, scope: u8, src: &[u8; 16]) -> bool {
        // Refusals on the coarse clock, admissions on the precise one (Clock).
        let mut clock = Clock::now();
        // The bridge cannot tell which port sent the packet: per-container
        // falls back to per source address here (docs/design.md, Endpoints).
        if scope == SCOPE_PER_SOURCE || scope == SCOPE_PER_CONTAINER {
            bucket::admit_per_source(self.ctx, gcra, src, &mut clock)
        } else {
            bucket::admit_global(gcra, &mut clock)
        }
    }
}

/// [`active_config`], with a rare-condition log when there is none.
#[inline(always)]
fn config_or_log<C: EbpfContext>(ctx: &C) -> Option<&'static PolicyConfig> {
    let config = active_config();
    if config.is_none() {
        log::config_missing(ctx);
    }
    config
}

/// The policy config in force, if the loader wrote one.
#[inline(always)]
pub fn active_config() -> Option<&'static PolicyConfig> {
    let slot = *ACTIVE_CONFIG.get(0)?;
    let config = POLICY_CONFIG.get(slot)?;
    // A slot the loader never wrote limits nothing (blocked destinations still apply).
    if config.valid == 0 {
        None
    } else {
        Some(config)
    }
}

/// The maps as the veth program of one endpoint sees them: the same policy,
/// with the endpoint's exceptions and SMTP budget.
pub struct EndpointMaps<'a> {
    pub ctx: &'a TcContext,
    /// The endpoint id (the veth's ifindex).
    pub id: u32,
    /// Its entry, when the loader wrote one.
    pub endpoint: Option<&'a Endpoint>,
}

impl PolicyView for EndpointMaps<'_> {
    #[inline(always)]
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        blocked_v4(dst)
    }

    #[inline(always)]
    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        blocked_v6(dst)
    }

    #[inline(always)]
    fn config(&self) -> Option<&PolicyConfig> {
        config_or_log(self.ctx)
    }

    #[inline(always)]
    fn admit_smtp(&self, gcra: &Gcra, scope: u8, src: &[u8; 16]) -> bool {
        let mut clock = Clock::now();
        if let Some(e) = self.endpoint {
            if e.has(ENDPOINT_SMTP_UNLIMITED) {
                return true;
            }
            if e.has(ENDPOINT_OWN_SMTP) {
                // Its own budget, charged to its own bucket and nobody else's.
                let own = Gcra {
                    emission_ns: e.smtp_emission_ns,
                    burst_window_ns: e.smtp_burst_window_ns,
                };
                return bucket::admit_per_endpoint(self.ctx, &own, self.id, &mut clock);
            }
        }
        match scope {
            // The veth is the sender: a forged source address charges the
            // forger's bucket.
            SCOPE_PER_CONTAINER => bucket::admit_per_endpoint(self.ctx, gcra, self.id, &mut clock),
            SCOPE_PER_SOURCE => bucket::admit_per_source(self.ctx, gcra, src, &mut clock),
            _ => bucket::admit_global(gcra, &mut clock),
        }
    }

    #[inline(always)]
    fn excepted(&self, rule: u16) -> bool {
        let Some(e) = self.endpoint else {
            return false;
        };
        if !e.has(ENDPOINT_EXCEPTED) {
            return false;
        }
        let key = ExceptionKey {
            endpoint: self.id,
            rule,
            _pad: 0,
        };
        unsafe { EXCEPTIONS.get(key) }.is_some()
    }
}

/// The endpoint entry of `id`: its `ENDPOINTS` slot when it owns it (an
/// inlined array lookup), else the overflow table. `None`: not written
/// (yet): a frame to the bridge is left to the bridge program (the bridge's
/// MAC is in the entry); one to the veth itself, or a broadcast, is judged
/// with the host's policy, no exception, no own budget.
#[inline(always)]
pub fn endpoint_entry(id: u32) -> Option<&'static Endpoint> {
    if let Some(e) = ENDPOINTS.get(endpoint_slot(id))
        && e.id == id
    {
        return Some(e);
    }
    unsafe { ENDPOINT_OVERFLOW.get(id) }
}
