//! Drop reports for userspace, through the `EVENTS` ring buffer. A flood of
//! drops must not turn into a flood of events: a GCRA budget decides which
//! are sent, and what is refused or does not fit is counted, never hidden.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
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
    // The coarse clock (one tick of resolution) is plenty for a budget of
    // about 100 events a second, and costs a fraction of bpf_ktime_get_ns.
    // Its lag can let a window through rate * one tick more events (under
    // one at 100/s): fine for a flood guard, unlike the SMTP bucket.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
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
