//! Garbage collection of per-source SMTP buckets.

use crate::kernel::{clock::monotonic_ns, maps, pins::PinDir};

/// Per-source buckets that have refilled completely are identical to a
/// fresh bucket, so deleting them gives nothing away and keeps the table
/// from filling with containers long gone. One emission interval of margin
/// (`margin_ns`) keeps a bucket the kernel is updating right now out of
/// reach. The TATs are on CLOCK_MONOTONIC: the kernel writes one only when
/// it admits, with bpf_ktime_get_ns (a refusal, on either clock, writes
/// nothing).
pub fn forget_full_source_buckets(pins: &PinDir, margin_ns: u64) {
    let Ok(mut map) = maps::smtp_source_buckets(pins) else {
        return;
    };
    let now = monotonic_ns();
    let stale: Vec<[u8; 16]> = map
        .iter()
        .flatten()
        .filter(|(_, tat)| tat.saturating_add(margin_ns) <= now)
        .map(|(k, _)| k)
        .collect();
    for k in &stale {
        let _ = map.remove(k);
    }
    if !stale.is_empty() {
        log::debug!("forgot {} refilled per-source buckets", stale.len());
    }
}
