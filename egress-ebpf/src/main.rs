//! The tc classifier attached to the ingress of each Docker bridge, which is
//! where the containers' egress traffic enters the host.
#![no_std]
#![no_main]
// The bpfel target has no native compare-and-swap in `core::sync::atomic`
// (`atomic-cas: false`); the intrinsic lowers to BPF_CMPXCHG.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bucket;
mod counters;
mod events;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::TC_ACT_SHOT, bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext,
};
use egress_ebpf_common::counters::CounterId;

#[classifier]
pub fn egress_filter(ctx: TcContext) -> i32 {
    let outcome = policy::classify(&ctx);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    counters::count(outcome.counter, outcome.rule, ifindex, ctx.len());
    if outcome.counter.drops() && !outcome.dry_run {
        TC_ACT_SHOT
    } else {
        // TC_ACT_UNSPEC is TCX_NEXT: the next program on the hook (Cilium,
        // Calico...) still runs, and with none left the packet goes on.
        TC_ACT_UNSPEC
    }
}

/// An empty classifier, never attached: `cargo xtask bench` subtracts its
/// BPF_PROG_TEST_RUN time from the filter's to get the program's own cost.
#[classifier]
pub fn egress_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// What the program decided for one packet.
pub struct Outcome {
    pub counter: CounterId,
    /// Block rule that matched, for the per-rule counters, or `NO_RULE`.
    /// Not an `Option`: LLVM may compute with the undefined payload of a
    /// `None`, and the verifier rejects arithmetic on whatever register
    /// (here the ctx pointer) held it.
    pub rule: u16,
    pub dry_run: bool,
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects code that could panic.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
