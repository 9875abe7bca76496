use aya_ebpf::bindings::BPF_NOEXIST;
use egress_ebpf_common::{
    counters::{Counter, CounterId, IFACE_SLOT_COUNT, IfaceCounters},
    endpoint::Endpoint,
    hook::Hook,
    maps::MAX_RULES,
    rules::NO_RULE,
};

use crate::maps::{
    COUNTERS, ENDPOINT_COUNTERS, HOOK_COUNTERS, IFACE_COUNTERS, IFACE_SLOTS, RULE_COUNTERS,
};

#[inline(always)]
fn add(c: *mut Counter, bytes: u32) {
    // Per-CPU slots: no other CPU writes them, so plain adds are exact.
    unsafe {
        (*c).packets += 1;
        (*c).bytes += bytes as u64;
    }
}

#[inline(always)]
pub fn count(id: CounterId, rule: u16, ifindex: u32, bytes: u32) {
    count_global(id, rule, bytes);
    count_iface(id, ifindex, bytes);
}

/// A packet the veth program judged: globally, and per endpoint (its
/// counters slot, an array the loader assigns; none without an entry). The
/// veth's per-endpoint counters stand for its per-interface ones.
#[inline(always)]
pub fn count_endpoint(id: CounterId, rule: u16, endpoint: Option<&Endpoint>, bytes: u32) {
    count_global(id, rule, bytes);
    if let Some(e) = endpoint
        && let Some(all) = ENDPOINT_COUNTERS.get_ptr_mut(e.slot)
        && let Some(c) = unsafe { (*all).by_verdict.get_mut(id as usize) }
    {
        add(c, bytes);
    }
}

/// [`count`] for a cgroup hook: the global and rule counters, and the
/// hook's own in `HOOK_COUNTERS` instead of an interface's.
#[inline(always)]
pub fn count_hook(id: CounterId, rule: u16, hook: Hook, bytes: u32) {
    count_global(id, rule, bytes);
    if let Some(all) = HOOK_COUNTERS.get_ptr_mut(hook as u32)
        && let Some(c) = unsafe { (*all).by_verdict.get_mut(id as usize) }
    {
        add(c, bytes);
    }
}

#[inline(always)]
fn count_global(id: CounterId, rule: u16, bytes: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(id as u32) {
        add(c, bytes);
    }
    if rule != NO_RULE
        && (rule as u32) < MAX_RULES
        && let Some(c) = RULE_COUNTERS.get_ptr_mut(rule as u32)
    {
        add(c, bytes);
    }
}

#[inline(always)]
fn count_iface(id: CounterId, ifindex: u32, bytes: u32) {
    if let Some(slot) = IFACE_SLOTS.get_ptr_mut(ifindex % IFACE_SLOT_COUNT) {
        // Per-CPU: this CPU alone reads and claims its copy of the slot.
        let owner = unsafe { (*slot).ifindex };
        if owner == ifindex || owner == 0 {
            unsafe { (*slot).ifindex = ifindex };
            if let Some(c) = unsafe { (*slot).counters.by_verdict.get_mut(id as usize) } {
                add(c, bytes);
            }
            return;
        }
    }
    if let Some(all) = IFACE_COUNTERS.get_ptr_mut(ifindex) {
        if let Some(c) = unsafe { (*all).by_verdict.get_mut(id as usize) } {
            add(c, bytes);
        }
        return;
    }
    // First packet seen on this interface. A full table (more interfaces
    // than IFACE_CAPACITY) leaves it to the global counters alone.
    let mut fresh = IfaceCounters::default();
    if let Some(c) = fresh.by_verdict.get_mut(id as usize) {
        c.packets = 1;
        c.bytes = bytes as u64;
    }
    if IFACE_COUNTERS
        .insert(ifindex, fresh, BPF_NOEXIST as u64)
        .is_err()
        && let Some(all) = IFACE_COUNTERS.get_ptr_mut(ifindex)
        && let Some(c) = unsafe { (*all).by_verdict.get_mut(id as usize) }
    {
        // Lost the race to another CPU's insert... of this CPU's own slot
        // (per-CPU values): count into it.
        add(c, bytes);
    }
}
