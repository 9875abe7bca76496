//! Rare conditions the classifier logs through aya-log, never per packet:
//! each has a slot in the `LOG_BUDGET` map, the GCRA TAT of a budget of one
//! line per [`LOG_INTERVAL_NS`] on the coarse clock, so a flood that keeps
//! a condition true writes one line a second, not one per packet.

use crate::bucket::Gcra;

wire_enum! {
    /// Index into `LOG_BUDGET`.
    #[repr(u32)]
    pub enum RareCondition {
        /// The per-source SMTP table is full: new sources share the overflow bucket.
        SourceTableFull = 0 => "source_table_full",
        /// A packet needed the policy config and the active slot was never written.
        ConfigMissing = 1 => "config_missing",
        /// A drop event was refused by the drop-event budget (counted as suppressed).
        EventBudgetExhausted = 2 => "event_budget_exhausted",
        /// The per-endpoint SMTP table is full: new endpoints share the overflow bucket.
        EndpointTableFull = 3 => "endpoint_table_full",
    }
}

pub const LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// One line per interval, no burst.
pub const BUDGET: Gcra = Gcra {
    emission_ns: LOG_INTERVAL_NS,
    burst_window_ns: LOG_INTERVAL_NS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval() {
        let mut tat = 0;
        let mut lines = 0;
        // A condition true on every packet, one packet per millisecond for 10 s.
        for ms in 0..10_000u64 {
            if let Some(t) = BUDGET.admit(tat, 5_000_000_000 + ms * 1_000_000) {
                tat = t;
                lines += 1;
            }
        }
        assert_eq!(lines, 10);
    }
}
