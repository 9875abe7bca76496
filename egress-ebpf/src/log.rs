//! Rare conditions, logged through aya-log (the `AYA_LOGS` ring buffer that
//! `egress-loader run` reads), each at most once a second: the `LOG_BUDGET`
//! slot of the condition is a GCRA bucket on the coarse clock (see
//! `egress_ebpf_common::logs`), so a flood that keeps a condition true cannot
//! become a log flood. Never called on the path of an ordinary packet.
//!
//! A line costs the program hundreds of instructions (aya-log copies the
//! message, target, module and file names into the ring buffer a byte at a
//! time, the destination being unaligned): the messages are short, and the
//! functions are not inlined, so each exists once in the program.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::{error, warn};
use egress_ebpf_common::logs::{self, RareCondition};

use crate::{maps::LOG_BUDGET, tat};

#[inline(always)]
fn budget_allows(condition: RareCondition, coarse_now: u64) -> bool {
    match LOG_BUDGET.get_ptr_mut(condition as u32) {
        Some(slot) => tat::update(slot, |seen| logs::BUDGET.admit(seen, coarse_now)),
        None => false,
    }
}

/// The per-source SMTP table is full; `src` is the new source sent to the
/// overflow bucket.
#[inline(never)]
pub fn source_table_full<C: EbpfContext>(ctx: &C, src: &[u8; 16], coarse_now: u64) {
    if budget_allows(RareCondition::SourceTableFull, coarse_now) {
        warn!(
            ctx,
            "SMTP per-source table full: new sources ({:i}) share the overflow bucket", *src
        );
    }
}

/// The per-endpoint SMTP table is full; `id` is the new endpoint sent to
/// the overflow bucket.
#[inline(never)]
pub fn endpoint_table_full<C: EbpfContext>(ctx: &C, id: u32, coarse_now: u64) {
    if budget_allows(RareCondition::EndpointTableFull, coarse_now) {
        warn!(
            ctx,
            "SMTP per-endpoint table full: new endpoints (ifindex {}) share the overflow bucket",
            id
        );
    }
}

/// A packet needed the policy config and none is in force.
#[inline(never)]
pub fn config_missing<C: EbpfContext>(ctx: &C) {
    if budget_allows(RareCondition::ConfigMissing, tat::coarse_now()) {
        error!(
            ctx,
            "no policy config in force: SMTP limits and dry-run are off"
        );
    }
}

/// A drop event was refused by the drop-event budget.
#[inline(never)]
pub fn event_budget_exhausted<C: EbpfContext>(ctx: &C, ifindex: u32, coarse_now: u64) {
    if budget_allows(RareCondition::EventBudgetExhausted, coarse_now) {
        warn!(
            ctx,
            "drop-event budget exhausted (ifindex {}): drops counted as suppressed events", ifindex
        );
    }
}
