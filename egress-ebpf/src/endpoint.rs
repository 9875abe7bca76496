//! The per-endpoint program's judgement: the shared decision over the
//! endpoint's view of the maps, counted per endpoint, handed to the bridge
//! program behind the veth with the hand-off mark.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use egress_ebpf_common::{
    decide::{Action, decide},
    endpoint::{HANDOFF_MARK, for_the_host},
    packet::Packet,
    parse::parse,
};

use crate::{counters, events, reply, route, skb, view};

#[inline(always)]
pub fn judge(ctx: &TcContext) -> i32 {
    // The hook's ifindex is the veth's: the endpoint id.
    let id = unsafe { (*ctx.skb.skb).ifindex };
    let endpoint = view::endpoint_entry(id);
    let skb = skb::Skb(ctx);
    // Container to container: the bridge forwards it to another port and
    // no program of the filter judged it before endpoints; passed on as
    // it is, unmarked, uncounted. Whatever of it still goes up to the host
    // meets the bridge program unmarked (docs/design.md, Endpoints).
    let pkt_type = unsafe { (*ctx.skb.skb).pkt_type };
    let dst_mac = skb.load::<6>(0).unwrap_or([0; 6]);
    let bridge_mac = endpoint.map_or([0; 6], |e| e.bridge_mac);
    if !for_the_host(pkt_type, dst_mac, bridge_mac) {
        return TC_ACT_UNSPEC;
    }
    let parsed = parse(&skb);
    let maps = view::EndpointMaps { ctx, id, endpoint };
    let decision = decide(&parsed, &maps);
    // A packet passed that may carry a source route: judged, counted and
    // marked by the route program (no return from here when it runs).
    if !decision.verdict.drops() {
        route::check(ctx, &parsed, &decision, id, id);
    }
    counters::count_endpoint(decision.verdict, decision.rule, endpoint, skb.len() as u32);
    // The reply program answers, reports and returns the verdict (no
    // return from here when it runs); if it cannot run, a silent drop.
    // Out of the veth itself (`id`): only this container gets the reply.
    // The frame is for the host (checked above: to the bridge's MAC, or
    // the veth's), so a reply may be sent (docs/design.md, Reject).
    let reply = match decision.action {
        Action::Reject => Some(reply::reject(ctx, &parsed, &decision, id, id, true)),
        _ => None,
    };
    if decision.verdict.drops()
        && let Some(config) = decision.config
    {
        events::report(ctx, id, id, config, &parsed, &decision, reply);
    }
    match decision.action {
        Action::Drop | Action::Reject => TC_ACT_SHOT,
        Action::Pass => {
            // Judged: the bridge program behind this port passes it on at
            // once and clears the bit (docs/design.md, Endpoints). The
            // loader attaches this program only to ports of bridges it
            // filters, so the bit never outlives the bridge's ingress on
            // the way out of the host.
            let mark = unsafe { (*ctx.skb.skb).mark };
            ctx.set_mark(mark | HANDOFF_MARK);
            TC_ACT_UNSPEC
        }
    }
}
