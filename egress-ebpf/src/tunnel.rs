//! The decapsulating devices' program: what a vxlan, geneve, gre, ipip or
//! tun device hands up on its ingress is an inner packet that the host
//! routes next, to the metadata service as readily as anywhere. Judged
//! like a bridge's ingress (same decision, counters per interface, drop
//! events), with two differences that the tunnel makes:
//!
//! - The hand-off mark is neither trusted nor set. The outer packet's
//!   `skb->mark` survives decapsulation within a namespace
//!   (`__iptunnel_pull_header` scrubs it only across namespaces), and the
//!   inner packet was judged by nobody yet, whatever the outer one was.
//! - A reject is a silent drop, counted as a refused reply. A reply sent
//!   back out of the device would be encapsulated to wherever the device's
//!   forwarding table sends the inner source (a learnt or static VTEP, a
//!   default remote that floods to every node, a tun's daemon): not
//!   necessarily the sender, so not "only the port it came from"
//!   (docs/threat-model.md, Tunnels).

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use egress_ebpf_common::{
    decide::{Action, decide},
    packet::Packet,
    parse::{parse, parse_ip},
};

use crate::{counters, events, reply, route, skb, view};

/// `L3`: the device hands up bare IP packets (no Ethernet header at tc
/// ingress: the loader picks `egress_tunnel_l3` for a device whose link
/// type is not Ethernet).
#[inline(always)]
pub fn judge<const L3: bool>(ctx: &TcContext) -> i32 {
    let skb = skb::Skb(ctx);
    let parsed = if L3 { parse_ip(&skb) } else { parse(&skb) };
    let maps = view::Maps { ctx };
    let decision = decide(&parsed, &maps);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // A packet passed that may carry a source route: judged and counted
    // by the route program (no return from here when it runs).
    if !decision.verdict.drops() {
        route::check(ctx, &parsed, &decision, ifindex, 0);
    }
    counters::count(decision.verdict, decision.rule, ifindex, skb.len() as u32);
    let reply = match decision.action {
        Action::Reject => Some(reply::refuse()),
        _ => None,
    };
    if decision.verdict.drops()
        && let Some(config) = decision.config
    {
        events::report(ctx, ifindex, 0, config, &parsed, &decision, reply);
    }
    match decision.action {
        Action::Drop | Action::Reject => TC_ACT_SHOT,
        // TCX_NEXT, as on the bridges: other tc users still run.
        Action::Pass => TC_ACT_UNSPEC,
    }
}
