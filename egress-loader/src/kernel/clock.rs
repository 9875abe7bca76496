//! The kernel's clocks as the classifier reads them.
//!
//! The classifier stamps SMTP bucket admissions with bpf_ktime_get_ns
//! (CLOCK_MONOTONIC) and drop events, the event budget and the bucket's
//! refusals with bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE, Linux
//! 5.11+), which trails CLOCK_MONOTONIC by at most one tick.

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the bucket TATs;
/// a coarse stamp is never ahead of it.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
