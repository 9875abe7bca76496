//! Drop reports for userspace, through the `EVENTS` ring buffer. A flood of
//! drops must not turn into a flood of events: a GCRA budget decides which
//! are sent, and what is refused or does not fit is counted, never hidden.

use aya_ebpf::EbpfContext;
use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    decide::Decision,
    events::{DropEvent, EVENT_DRY_RUN, EVENTS_LOST, EVENTS_SUPPRESSED, reject_flags},
    hook::Hook,
    parse::Parsed,
    reply::ReplyOutcome,
};

use crate::{
    bucket, log,
    maps::{EVENT_STATS, EVENTS},
    tat,
};

#[inline(always)]
fn bump(index: u32) {
    if let Some(n) = EVENT_STATS.get_ptr_mut(index) {
        unsafe { *n += 1 };
    }
}

/// Who sent a dropped packet, as the hook that judged it knows.
#[derive(Clone, Copy)]
pub struct Origin {
    pub hook: Hook,
    /// The interface whose ingress saw it; 0 for the cgroup hooks.
    pub ifindex: u32,
    /// The endpoint (veth ifindex); 0: unknown.
    pub endpoint: u32,
    /// The sender's cgroup id (cgroup hooks); 0 for the tc hooks.
    pub cgroup_id: u64,
}

impl Origin {
    /// A tc program's: the veth program's when an endpoint is known, else
    /// the bridge's.
    #[inline(always)]
    pub fn tc(ifindex: u32, endpoint: u32) -> Self {
        Origin {
            hook: if endpoint != 0 { Hook::Veth } else { Hook::Tc },
            ifindex,
            endpoint,
            cgroup_id: 0,
        }
    }
}

/// Reports a dropping decision of a tc program (the event is built only
/// here, off the pass path), with the config the decision read and, for a
/// reject whose reply was not even attempted, its outcome (the reply
/// program reports the others).
#[inline(always)]
pub fn report<C: EbpfContext>(
    ctx: &C,
    ifindex: u32,
    endpoint: u32,
    config: &PolicyConfig,
    parsed: &Parsed,
    decision: &Decision,
    reply: Option<ReplyOutcome>,
) {
    let flags = match (decision.is_dry_run(), reply) {
        (true, _) => EVENT_DRY_RUN,
        (false, Some(outcome)) => reject_flags(outcome),
        (false, None) => 0,
    };
    emit(
        ctx,
        Origin::tc(ifindex, endpoint),
        config,
        parsed,
        decision.verdict as u8,
        decision.rule,
        flags,
    );
}

/// [`report`] for any hook: the cgroup hooks have no interface and name
/// their sender by its cgroup (and never send a reply: a Reject there is
/// EPERM from the call).
#[inline(always)]
pub fn report_from<C: EbpfContext>(
    ctx: &C,
    origin: Origin,
    config: &PolicyConfig,
    parsed: &Parsed,
    decision: &Decision,
) {
    let flags = if decision.is_dry_run() {
        EVENT_DRY_RUN
    } else {
        0
    };
    emit(
        ctx,
        origin,
        config,
        parsed,
        decision.verdict as u8,
        decision.rule,
        flags,
    );
}

/// Sends one drop event within the budget: `verdict` a `CounterId`, `flags`
/// the `DropEvent` flags.
#[inline(always)]
pub fn emit<C: EbpfContext>(
    ctx: &C,
    origin: Origin,
    config: &PolicyConfig,
    parsed: &Parsed,
    verdict: u8,
    rule: u16,
    flags: u8,
) {
    let Origin {
        hook,
        ifindex,
        endpoint,
        cgroup_id,
    } = origin;
    if config.event_emission_ns == 0 {
        return;
    }
    let budget = Gcra {
        emission_ns: config.event_emission_ns,
        burst_window_ns: config.event_burst_window_ns,
    };
    // The coarse clock: see admit_event.
    let now = tat::coarse_now();
    if !bucket::admit_event(&budget, now) {
        bump(EVENTS_SUPPRESSED);
        log::event_budget_exhausted(ctx, ifindex, now);
        return;
    }
    let event = DropEvent {
        timestamp_ns: now,
        ifindex,
        rule_id: rule,
        sport: parsed.transport.sport,
        dport: parsed.transport.dport.value(),
        verdict,
        // Family's values are FAMILY_V4 and FAMILY_V6.
        family: parsed.family as u8,
        proto: parsed.transport.proto,
        flags,
        hook: hook as u8,
        _pad: 0,
        src: parsed.src,
        dst: parsed.dst,
        endpoint,
        _pad2: 0,
        cgroup_id,
    };
    if EVENTS.output::<DropEvent>(&event, 0).is_err() {
        bump(EVENTS_LOST);
    }
}
