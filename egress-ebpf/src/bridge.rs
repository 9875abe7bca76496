//! The bridge's program: the backstop for every port whose veth program is
//! not attached (yet). Parse and decide with the shared code
//! (egress-ebpf-common), then count, answer a reject, report a drop, and
//! act; a packet the sender's veth program judged already is handed on.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use egress_ebpf_common::{
    decide::{Action, decide},
    endpoint::HANDOFF_MARK,
    packet::Packet,
    parse::parse,
};

use crate::{counters, events, reply, route, skb, view};

#[inline(always)]
pub fn judge(ctx: &TcContext) -> i32 {
    // Judged already by the sender's veth program (docs/design.md,
    // Endpoints): hand it on at once, without a second judgement, charge or
    // count. The bit cannot come from a container: skb_scrub_packet() clears
    // skb->mark when the packet crosses into this namespace through the veth
    // (__dev_forward_skb, xnet), before the veth program runs.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & HANDOFF_MARK != 0 {
        ctx.set_mark(mark & !HANDOFF_MARK);
        return TC_ACT_UNSPEC;
    }
    let skb = skb::Skb(ctx);
    let parsed = parse(&skb);
    let maps = view::Maps { ctx };
    let decision = decide(&parsed, &maps);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // A packet passed that may carry a source route: judged and counted
    // by the route program (no return from here when it runs).
    if !decision.verdict.drops() {
        route::check(ctx, &parsed, &decision, ifindex, 0);
    }
    counters::count(decision.verdict, decision.rule, ifindex, skb.len() as u32);
    // The reply program answers, reports and returns the verdict (no
    // return from here when it runs); if it cannot run, a silent drop.
    let reply = match decision.action {
        // Back out of the bridge: it forwards by the reply's destination
        // MAC (the sender's) to the port that MAC was learnt on.
        Action::Reject => {
            let to_host = unsafe { (*ctx.skb.skb).pkt_type } == reply::PACKET_HOST;
            Some(reply::reject(ctx, &parsed, &decision, ifindex, 0, to_host))
        }
        _ => None,
    };
    if decision.verdict.drops()
        && let Some(config) = decision.config
    {
        events::report(ctx, ifindex, 0, config, &parsed, &decision, reply);
    }
    match decision.action {
        Action::Drop | Action::Reject => TC_ACT_SHOT,
        // TC_ACT_UNSPEC is TCX_NEXT: the next program on the hook (Cilium,
        // Calico...) still runs, and with none left the packet goes on.
        Action::Pass => TC_ACT_UNSPEC,
    }
}
