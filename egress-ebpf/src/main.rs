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
mod log;
mod maps;
mod skb;
mod view;

use aya_ebpf::{
    bindings::TC_ACT_SHOT, bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext,
};
use egress_ebpf_common::{
    decide::{Action, decide},
    packet::Packet,
    parse::parse,
};

/// Parse and decide with the shared code (egress-ebpf-common), then count,
/// report a drop, and act.
#[classifier]
pub fn egress_filter(ctx: TcContext) -> i32 {
    let skb = skb::Skb(&ctx);
    let parsed = parse(&skb);
    let maps = view::Maps { ctx: &ctx };
    let decision = decide(&parsed, &maps);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    counters::count(decision.verdict, decision.rule, ifindex, skb.len() as u32);
    if decision.verdict.drops()
        && let Some(config) = decision.config
    {
        events::report(&ctx, ifindex, config, &parsed, &decision);
    }
    match decision.action {
        Action::Drop => TC_ACT_SHOT,
        // TC_ACT_UNSPEC is TCX_NEXT: the next program on the hook (Cilium,
        // Calico...) still runs, and with none left the packet goes on.
        Action::Pass => TC_ACT_UNSPEC,
    }
}

/// An empty classifier, never attached: `cargo xtask bench` subtracts its
/// BPF_PROG_TEST_RUN time from the filter's to get the program's own cost.
#[classifier]
pub fn egress_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
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
