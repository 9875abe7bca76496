//! Drop reports for userspace, through the `EVENTS` ring buffer. A flood of
//! drops must not turn into a flood of events: a GCRA budget decides which
//! are sent, and what is refused or does not fit is counted, never hidden.

use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    events::{DropEvent, EVENT_DRY_RUN, EVENTS_LOST, EVENTS_SUPPRESSED},
};

use crate::{
    bucket,
    maps::{EVENT_STATS, EVENTS},
};

#[inline(always)]
fn bump(index: u32) {
    if let Some(n) = EVENT_STATS.get_ptr_mut(index) {
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn report(config: &PolicyConfig, mut event: DropEvent) {
    if config.event_emission_ns == 0 {
        return;
    }
    let budget = Gcra {
        emission_ns: config.event_emission_ns,
        burst_window_ns: config.event_burst_window_ns,
    };
    // The coarse clock: see admit_event.
    let now = bucket::Clock::now().coarse();
    if !bucket::admit_event(&budget, now) {
        bump(EVENTS_SUPPRESSED);
        return;
    }
    event.timestamp_ns = now;
    if config.dry_run != 0 {
        event.flags |= EVENT_DRY_RUN;
    }
    if EVENTS.output::<DropEvent>(&event, 0).is_err() {
        bump(EVENTS_LOST);
    }
}
