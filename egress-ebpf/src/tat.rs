//! A bucket's TAT (theoretical arrival time) in a map slot: the coarse
//! clock it is read against, and the compare-and-swap that updates it,
//! shared by the SMTP buckets, the drop-event and reply budgets and the log
//! budget.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// CAS attempts before giving up. Each failure means another CPU admitted or
/// refused an attempt in between; running out refuses this one (fail closed).
const MAX_CAS_ATTEMPTS: usize = 8;

/// bpf_ktime_get_coarse_ns (Linux 5.11).
#[inline(always)]
pub fn coarse_now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Compare-and-swap loop: `decide` maps the TAT seen to the TAT to store
/// (`None` refuses, leaving the bucket as it was).
#[inline(always)]
pub fn update(tat: *mut u64, mut decide: impl FnMut(u64) -> Option<u64>) -> bool {
    for _ in 0..MAX_CAS_ATTEMPTS {
        // A plain volatile read: the CAS below validates it.
        let seen = unsafe { core::ptr::read_volatile(tat) };
        let Some(next) = decide(seen) else {
            return false;
        };
        // SeqCst: with a relaxed ordering LLVM may drop BPF_FETCH and the
        // returned success flag would be wrong (docs/design.md, verifier
        // notes: the LLVM relaxed-atomic fetch bug).
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
