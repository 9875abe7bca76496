//! Shared GCRA buckets, updated with compare-and-swap because every CPU runs
//! the program at once (per-CPU buckets would admit N times the rate).

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::bindings::BPF_NOEXIST;
use egress_ebpf_common::{
    bucket::Gcra,
    maps::{SMTP_GLOBAL_SLOT, SMTP_OVERFLOW_SLOT},
};

use crate::maps::{EVENT_BUCKET, SMTP_BUCKET, SMTP_SOURCE_BUCKETS};

/// CAS attempts before giving up. Each failure means another CPU admitted or
/// refused an attempt in between; running out refuses this one (fail closed).
const MAX_CAS_ATTEMPTS: usize = 8;

const E2BIG: i32 = 7;

#[inline(always)]
pub fn admit_global(g: &Gcra, now: u64) -> bool {
    match SMTP_BUCKET.get_ptr_mut(SMTP_GLOBAL_SLOT) {
        Some(tat) => admit(tat, g, now),
        None => false,
    }
}

#[inline(always)]
pub fn admit_per_source(g: &Gcra, src: &[u8; 16], now: u64) -> bool {
    if let Some(tat) = SMTP_SOURCE_BUCKETS.get_ptr_mut(src) {
        return admit(tat, g, now);
    }
    // First attempt from this source: a fresh (full) bucket, admitted unless
    // the burst is zero. NOEXIST so a racing CPU's entry is never overwritten.
    let Some(first) = g.admit(0, now) else {
        return false;
    };
    match SMTP_SOURCE_BUCKETS.insert(src, first, BPF_NOEXIST as u64) {
        Ok(()) => true,
        // Table full: share the overflow bucket rather than evicting anyone
        // (eviction would hand out fresh buckets to whoever fills the table).
        Err(e) if e == -E2BIG => match SMTP_BUCKET.get_ptr_mut(SMTP_OVERFLOW_SLOT) {
            Some(tat) => admit(tat, g, now),
            None => false,
        },
        // Another CPU inserted it first: go through its bucket.
        Err(_) => match SMTP_SOURCE_BUCKETS.get_ptr_mut(src) {
            Some(tat) => admit(tat, g, now),
            None => false,
        },
    }
}

/// The drop-event budget: one global bucket.
#[inline(always)]
pub fn admit_event(g: &Gcra, now: u64) -> bool {
    match EVENT_BUCKET.get_ptr_mut(0) {
        Some(tat) => admit(tat, g, now),
        None => false,
    }
}

#[inline(always)]
fn admit(tat: *mut u64, g: &Gcra, now: u64) -> bool {
    for _ in 0..MAX_CAS_ATTEMPTS {
        // A plain volatile read: the CAS below validates it.
        let seen = unsafe { core::ptr::read_volatile(tat) };
        let Some(next) = g.admit(seen, now) else {
            return false;
        };
        // SeqCst: with a relaxed ordering LLVM may drop BPF_FETCH and the
        // returned success flag would be wrong (DESIGN.md).
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                tat, seen, next,
            )
        };
        if swapped {
            return true;
        }
    }
    false
}
