use egress_ebpf_common::{counters::CounterId, maps::MAX_RULES, rules::NO_RULE};

use crate::maps::{COUNTERS, RULE_COUNTERS};

#[inline(always)]
pub fn count(id: CounterId, rule: u16, bytes: u32) {
    // Per-CPU slots: no other CPU writes them, so plain adds are exact.
    if let Some(c) = COUNTERS.get_ptr_mut(id as u32) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
    if rule != NO_RULE
        && (rule as u32) < MAX_RULES
        && let Some(c) = RULE_COUNTERS.get_ptr_mut(rule as u32)
    {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
