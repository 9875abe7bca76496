//! The source-route check (`egress_route`): the addresses of an IPv4
//! LSRR/SSRR option or an IPv6 routing header are judged like the
//! destination (egress_ebpf_common::route). A program of its own, reached
//! by a tail call like the reply program: in the classifiers' own parse
//! and decision the walk took the verifier past its 1M-instruction budget.
//! The classifier hands over a packet only when its decision passes it and
//! the packet may carry a route (IPv4 options, IPv6 extension headers:
//! `route::may_carry`), before counting it; this program counts it, with
//! the main verdict when the route is clean, and does what the classifier
//! does to a passed packet.
//!
//! If the tail call fails (no program in `ROUTE_PROGRAM`) the classifier
//! passes the packet as it decided: fail open. The loader fills the slot
//! before it attaches any classifier and the pinned map keeps it, so the
//! failure is a broken install, not a window an attacker can pick; and the
//! hint is coarse (every IGMP report carries a router-alert option, every
//! MLD report a hop-by-hop header), so failing closed would drop traffic no
//! rule matches.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_probe_read_kernel,
    programs::TcContext,
};
use egress_ebpf_common::{
    counters::CounterId,
    decide::Decision,
    endpoint::HANDOFF_MARK,
    events::EVENT_DRY_RUN,
    packet::Packet,
    parse::Parsed,
    route::{self, RouteVerdict},
};

use crate::{
    counters, events,
    maps::{REPLY_SCRATCH, ROUTE_PROGRAM},
    view,
};

/// Hands a packet the classifier's `decision` passes, and that may carry a
/// source route, to the route program (no return on success). `endpoint`:
/// the veth program's endpoint id, 0 for the bridge and tunnel programs.
/// Returns only if the tail call failed: the caller goes on as if the
/// route were clean (see the module).
#[inline(always)]
pub fn check(ctx: &TcContext, parsed: &Parsed, decision: &Decision, ifindex: u32, endpoint: u32) {
    if !route::may_carry(parsed) {
        return;
    }
    if let Some(s) = REPLY_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's value; the route program runs next, here.
        unsafe {
            (*s).parsed = *parsed;
            (*s).verdict = decision.verdict as u8;
            (*s).rule = decision.rule;
            (*s).ifindex = ifindex;
            (*s).endpoint = endpoint;
        }
        unsafe { ROUTE_PROGRAM.tail_call(ctx, 0) };
    }
}

/// The route program's body.
#[inline(always)]
pub fn judge(ctx: &TcContext) -> i32 {
    let Some(s) = REPLY_SCRATCH.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: written by the classifier just before the tail call.
    let (parsed, verdict, rule, ifindex, id) = unsafe {
        (
            &(*s).parsed,
            (*s).verdict,
            (*s).rule,
            (*s).ifindex,
            (*s).endpoint,
        )
    };
    let skb = HelperSkb(ctx);
    // The walk's ways out (which step, which option) are states of their
    // own to the verifier, each taking the lookups after it along: over a
    // million instructions. Through a helper's copy, which the verifier
    // takes as any value, they meet as one.
    let (r, hidden) = route::find(&skb, parsed);
    let (r, hidden) = route::unpack(forget(route::pack(r, hidden)));
    // One view for all three programs (one copy of the lookups): without
    // an endpoint (bridge, tunnel) its `excepted` is no, as theirs is.
    let maps = view::EndpointMaps {
        ctx,
        id,
        endpoint: if id != 0 {
            view::endpoint_entry(id)
        } else {
            None
        },
    };
    let found = route::judge_route(&skb, &maps, parsed, r, hidden);
    let bytes = skb.len() as u32;
    let count = |v: CounterId, r: u16| {
        if id != 0 {
            counters::count_endpoint(v, r, view::endpoint_entry(id), bytes);
        } else {
            counters::count(v, r, ifindex, bytes);
        }
    };
    if found == RouteVerdict::CLEAN {
        // The classifier's verdict (Passed, Excepted, SmtpAllowed...).
        let v = CounterId::from_u8(verdict).unwrap_or(CounterId::Passed);
        count(v, rule);
        return pass(ctx, id);
    }
    count(found.verdict, found.rule);
    let config = view::active_config();
    let dry_run = config.is_some_and(|c| c.dry_run != 0);
    if let Some(c) = config {
        events::emit(
            ctx,
            events::Origin::tc(ifindex, id),
            c,
            parsed,
            found.verdict as u8,
            found.rule,
            if dry_run { EVENT_DRY_RUN } else { 0 },
        );
    }
    if dry_run {
        return pass(ctx, id);
    }
    // A rule whose action is reject drops silently here: source-routed
    // packets are too rare for a reply path of their own.
    TC_ACT_SHOT
}

/// The packet read through `bpf_skb_load_bytes` alone: `skb::Skb`'s
/// direct read doubles the verifier's paths at every read (linear or
/// not), and the option walk reads up to 40 times in a row. Off the pass
/// path, the helper's cost does not matter.
struct HelperSkb<'a>(&'a TcContext);

impl Packet for HelperSkb<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
}

/// `v` copied by `bpf_probe_read_kernel`, whose output the verifier takes
/// as any value; all ones if the copy fails (an evasive route: `unpack`).
#[inline(always)]
fn forget(v: u64) -> u64 {
    // SAFETY: reads 8 bytes of this stack frame's own `v`.
    unsafe { bpf_probe_read_kernel(&v as *const u64).unwrap_or(u64::MAX) }
}

/// What the classifier does to a packet it passes: the veth program marks
/// it judged for the bridge program behind it (endpoint module).
#[inline(always)]
fn pass(ctx: &TcContext, endpoint: u32) -> i32 {
    if endpoint != 0 {
        let mark = unsafe { (*ctx.skb.skb).mark };
        ctx.set_mark(mark | HANDOFF_MARK);
    }
    TC_ACT_UNSPEC
}
