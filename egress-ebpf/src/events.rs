//! Drop reports for userspace, through the `EVENTS` ring buffer. A flood of
//! drops must not turn into a flood of events: a GCRA budget decides which
//! are sent, and what is refused or does not fit is counted, never hidden.

use aya_ebpf::programs::TcContext;
use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    decide::Decision,
    events::{DropEvent, EVENT_DRY_RUN, EVENTS_LOST, EVENTS_SUPPRESSED},
    parse::Parsed,
};

use crate::{
    bucket, log,
    maps::{EVENT_STATS, EVENTS},
};

#[inline(always)]
fn bump(index: u32) {
    if let Some(n) = EVENT_STATS.get_ptr_mut(index) {
        unsafe { *n += 1 };
    }
}

/// Reports a dropping decision (the event is built only here, off the pass
/// path), with the config the decision read.
#[inline(always)]
pub fn report(
    ctx: &TcContext,
    ifindex: u32,
    endpoint: u32,
    config: &PolicyConfig,
    parsed: &Parsed,
    decision: &Decision,
) {
    if config.event_emission_ns == 0 {
        return;
    }
    let budget = Gcra {
        emission_ns: config.event_emission_ns,
        burst_window_ns: config.event_burst_window_ns,
    };
    // The coarse clock: see admit_event.
    let now = bucket::coarse_now();
    if !bucket::admit_event(&budget, now) {
        bump(EVENTS_SUPPRESSED);
        log::event_budget_exhausted(ctx, ifindex, now);
        return;
    }
    let event = DropEvent {
        timestamp_ns: now,
        ifindex,
        rule_id: decision.rule,
        sport: parsed.transport.sport,
        dport: parsed.transport.dport.value(),
        verdict: decision.verdict as u8,
        // Family's values are FAMILY_V4 and FAMILY_V6.
        family: parsed.family as u8,
        proto: parsed.transport.proto,
        flags: if decision.is_dry_run() {
            EVENT_DRY_RUN
        } else {
            0
        },
        _pad: [0; 2],
        src: parsed.src,
        dst: parsed.dst,
        endpoint,
        _pad2: 0,
    };
    if EVENTS.output::<DropEvent>(&event, 0).is_err() {
        bump(EVENTS_LOST);
    }
}
