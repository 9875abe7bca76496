//! Shared GCRA buckets, updated with compare-and-swap because every CPU runs
//! the program at once (per-CPU buckets would admit N times the rate).

use aya_ebpf::{EbpfContext, bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use egress_ebpf_common::{
    bucket::{COARSE_CLOCK_SLACK_NS, Gcra},
    maps::{SMTP_GLOBAL_SLOT, SMTP_OVERFLOW_SLOT},
};

use crate::{
    log,
    maps::{EVENT_BUCKET, SMTP_BUCKET, SMTP_ENDPOINT_BUCKETS, SMTP_SOURCE_BUCKETS},
    tat::{coarse_now, update},
};

const E2BIG: i32 = 7;

/// One packet's view of time. The coarse clock is cheap but trails real time
/// by up to a tick; a bucket decision made on it would let a window through
/// up to rate * tick more than burst + rate * t (a stale stamp where the
/// bucket restarts from full stretches the window the bucket sees; the
/// two-CPU flood test caught 804 admitted against a bound of 801). So the
/// coarse clock only refuses, when the bucket's next token is more than
/// COARSE_CLOCK_SLACK_NS away (a flood against the default 5/minute spends
/// almost all its time there), and every admission is decided and stamped
/// with the precise clock, read at most once per packet.
pub struct Clock {
    coarse: u64,
    precise: u64,
}

impl Clock {
    #[inline(always)]
    pub fn now() -> Self {
        Self {
            coarse: coarse_now(),
            precise: 0,
        }
    }

    /// bpf_ktime_get_ns, read on first use (it is never 0 after boot).
    #[inline(always)]
    pub fn precise(&mut self) -> u64 {
        if self.precise == 0 {
            self.precise = unsafe { bpf_ktime_get_ns() };
        }
        self.precise
    }
}

#[inline(always)]
pub fn admit_global(g: &Gcra, clock: &mut Clock) -> bool {
    match SMTP_BUCKET.get_ptr_mut(SMTP_GLOBAL_SLOT) {
        Some(tat) => admit(tat, g, clock),
        None => false,
    }
}

#[inline(always)]
pub fn admit_per_source<C: EbpfContext>(
    ctx: &C,
    g: &Gcra,
    src: &[u8; 16],
    clock: &mut Clock,
) -> bool {
    if let Some(tat) = SMTP_SOURCE_BUCKETS.get_ptr_mut(src) {
        return admit(tat, g, clock);
    }
    // First attempt from this source: a fresh (full) bucket, admitted unless
    // the burst is zero. NOEXIST so a racing CPU's entry is never overwritten.
    let Some(first) = g.admit(0, clock.precise()) else {
        return false;
    };
    match SMTP_SOURCE_BUCKETS.insert(src, first, BPF_NOEXIST as u64) {
        Ok(()) => true,
        // Table full: share the overflow bucket rather than evicting anyone
        // (eviction would hand out fresh buckets to whoever fills the table).
        Err(e) if e == -E2BIG => {
            log::source_table_full(ctx, src, clock.coarse);
            match SMTP_BUCKET.get_ptr_mut(SMTP_OVERFLOW_SLOT) {
                Some(tat) => admit(tat, g, clock),
                None => false,
            }
        }
        // Another CPU inserted it first: go through its bucket.
        Err(_) => match SMTP_SOURCE_BUCKETS.get_ptr_mut(src) {
            Some(tat) => admit(tat, g, clock),
            None => false,
        },
    }
}

/// One bucket per endpoint (the veth's ifindex), like the per-source ones:
/// a new endpoint gets a full bucket, inserted with NOEXIST; a full table
/// sends newcomers to the shared overflow bucket (never evicting anyone).
#[inline(always)]
pub fn admit_per_endpoint<C: EbpfContext>(ctx: &C, g: &Gcra, id: u32, clock: &mut Clock) -> bool {
    if let Some(tat) = SMTP_ENDPOINT_BUCKETS.get_ptr_mut(id) {
        return admit(tat, g, clock);
    }
    let Some(first) = g.admit(0, clock.precise()) else {
        return false;
    };
    match SMTP_ENDPOINT_BUCKETS.insert(id, first, BPF_NOEXIST as u64) {
        Ok(()) => true,
        Err(e) if e == -E2BIG => {
            log::endpoint_table_full(ctx, id, clock.coarse);
            match SMTP_BUCKET.get_ptr_mut(SMTP_OVERFLOW_SLOT) {
                Some(tat) => admit(tat, g, clock),
                None => false,
            }
        }
        Err(_) => match SMTP_ENDPOINT_BUCKETS.get_ptr_mut(id) {
            Some(tat) => admit(tat, g, clock),
            None => false,
        },
    }
}

/// The drop-event budget: one global bucket, on the coarse clock alone. Its
/// lag can let a window through rate * one tick more events than the budget
/// (under one event at 100/s): fine for a flood guard, and the precise clock
/// would cost every drop of a flood a helper call, since at 100/s the bucket
/// is always within the slack of its next token.
#[inline(always)]
pub fn admit_event(g: &Gcra, coarse_now: u64) -> bool {
    match EVENT_BUCKET.get_ptr_mut(0) {
        Some(tat) => update(tat, |seen| g.admit(seen, coarse_now)),
        None => false,
    }
}

/// An SMTP bucket decision: refused on the coarse clock when it can be,
/// otherwise decided and stamped with the precise clock.
#[inline(always)]
fn admit(tat: *mut u64, g: &Gcra, clock: &mut Clock) -> bool {
    update(tat, |seen| {
        // Refused even if the coarse clock trails by the whole slack: no need
        // for the precise clock (a lag beyond the slack could only make this
        // a refusal the precise clock would not have made).
        if g.refuses_through(seen, clock.coarse, COARSE_CLOCK_SLACK_NS) {
            return None;
        }
        g.admit(seen, clock.precise())
    })
}
