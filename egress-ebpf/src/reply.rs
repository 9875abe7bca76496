//! Answering a rejected packet from the hook: the shared builder
//! (`egress_ebpf_common::reply`) over the socket buffer, an in-kernel
//! budget, and the redirect out of the target device the hook names (its
//! own): the bridge forwards the reply by its destination MAC (the
//! offending frame's source), through its FDB, to the port that MAC was
//! learnt on, which is the port the frame came in on; a per-endpoint
//! program's device is the container's veth. docs/design.md, Reject.
//!
//! The reply is built in a program of its own (`egress_reply`), reached by
//! a tail call, not a BPF-to-BPF call: a called function's stack frame adds
//! to its caller's and the chain must stay within 512 bytes, while the
//! classifier's own frame is over 400 (its parser, decision and event);
//! a tail call starts the reply with a stack of its own (docs/design.md,
//! Verifier notes). The parsed packet and the decision go along in the
//! per-CPU `REPLY_SCRATCH` map, so the reply program does not parse again
//! (the parser's frame alone is 272 bytes).

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_CSUM_LEVEL_RESET, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM, TC_ACT_SHOT,
    },
    helpers::{
        bpf_csum_diff, bpf_csum_level, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    decide::Decision,
    events::reject_flags,
    packet::Packet,
    parse::Parsed,
    reply::{self, DEFAULT_BUDGET, PacketMut, Plan, QUOTE_MAX, ReplyOutcome, ReplyScratch},
};

use crate::{
    events,
    maps::{REPLY_BUCKET, REPLY_PROGRAM, REPLY_SCRATCH, REPLY_STATS},
    skb::Skb,
    tat::{self, update},
    view,
};

/// This CPU's scratch value (`ReplyScratch`).
#[inline(always)]
fn scratch() -> Option<*mut ReplyScratch> {
    REPLY_SCRATCH.get_ptr_mut(0)
}

/// `skb->pkt_type` of a frame addressed to this host (linux/if_packet.h).
pub const PACKET_HOST: u32 = 0;

/// A length already checked to be in 1..=QUOTE_MAX, rewritten so the
/// verifier can see it: a helper's size argument must be provably within
/// the buffer and non-zero, and LLVM hands the helper a spilled copy of the
/// length that the check never narrowed ("R4 invalid zero-sized read:
/// u64=[0,128]"). The mask and the +1 bound the value by themselves; the
/// volatile read keeps LLVM from folding them away as a no-op on a value it
/// knows is in range (docs/design.md, Verifier notes).
#[inline(always)]
fn helper_len(len: usize) -> u32 {
    // SAFETY: a read of a local.
    let l = unsafe { core::ptr::read_volatile(&len) };
    ((l.wrapping_sub(1) & (QUOTE_MAX - 1)) + 1) as u32
}

/// The socket buffer, writable.
struct SkbMut<'a>(&'a TcContext);

impl SkbMut<'_> {
    #[inline(always)]
    fn raw(&self) -> *mut __sk_buff {
        self.0.skb.skb
    }
}

impl Packet for SkbMut<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        Skb(self.0).load(offset)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
}

impl PacketMut for SkbMut<'_> {
    #[inline(always)]
    fn to_this_host(&self) -> bool {
        match scratch() {
            // SAFETY: written by the hook before the tail call.
            Some(s) => unsafe { (*s).to_host },
            None => false,
        }
    }

    #[inline(always)]
    fn load_header<T: Copy>(&self, offset: usize) -> Option<T> {
        // bpf_skb_load_bytes: the headers of a reply are read once, off the
        // pass path, so the direct-read fast path is not worth its code.
        self.0.load::<T>(offset).ok()
    }

    #[inline(always)]
    fn copy_to_quote(&mut self, offset: usize, len: usize) -> bool {
        let Some(s) = scratch() else {
            return false;
        };
        if len == 0 || len > QUOTE_MAX {
            return false;
        }
        // SAFETY: a per-CPU map value, this CPU's alone while we run.
        let buf = unsafe { &mut (*s).quote };
        buf.fill(0);
        let r = unsafe {
            bpf_skb_load_bytes(
                self.raw().cast(),
                offset as u32,
                buf.as_mut_ptr().cast(),
                helper_len(len),
            )
        };
        r == 0
    }

    #[inline(always)]
    fn quote_sum(&self) -> u32 {
        match scratch() {
            // SAFETY: see copy_to_quote; the whole buffer is summed.
            Some(s) => self.sum(unsafe { &(*s).quote }),
            None => 0,
        }
    }

    #[inline(always)]
    fn store_quote(&mut self, offset: usize, len: usize) -> bool {
        let Some(s) = scratch() else {
            return false;
        };
        if len == 0 || len > QUOTE_MAX {
            return false;
        }
        let r = unsafe {
            bpf_skb_store_bytes(
                self.raw(),
                offset as u32,
                (*s).quote.as_ptr().cast(),
                helper_len(len),
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        r == 0
    }

    #[inline(always)]
    fn store<T: Copy>(&mut self, offset: usize, v: &T) -> bool {
        // BPF_F_RECOMPUTE_CSUM keeps skb->csum right for a CHECKSUM_COMPLETE
        // skb (it covers the packet from the IP header on).
        self.0.store(offset, v, BPF_F_RECOMPUTE_CSUM as u64).is_ok()
    }

    #[inline(always)]
    fn store_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> bool {
        // No BPF_F_RECOMPUTE_CSUM: at tc ingress skb->csum does not cover
        // the MAC header (bpf_push_mac_rcsum adds it on redirect).
        self.0.store(0, dst, 0).is_ok() && self.0.store(6, src, 0).is_ok()
    }

    #[inline(always)]
    fn resize(&mut self, len: usize) -> bool {
        unsafe { bpf_skb_change_tail(self.raw(), len as u32, 0) == 0 }
    }

    #[inline(always)]
    fn add_to_l4_checksum(&mut self, offset: usize, sum: u32, pseudo: bool) -> bool {
        // from = 0 and no size in the flags: `to` is a diff from bpf_csum_diff.
        let flags = if pseudo { BPF_F_PSEUDO_HDR as u64 } else { 0 };
        self.0.l4_csum_replace(offset, 0, sum as u64, flags).is_ok()
    }

    #[inline(always)]
    fn sum<T: Copy>(&self, v: &T) -> u32 {
        // bpf_csum_diff with nothing removed: the sum of the words of `v`.
        let r = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                (v as *const T).cast_mut().cast(),
                size_of::<T>() as u32,
                0,
            )
        };
        r as u32
    }
}

#[inline(always)]
fn bump(outcome: ReplyOutcome) {
    if let Some(n) = REPLY_STATS.get_ptr_mut(outcome as u32) {
        // Per CPU: a plain add is exact.
        unsafe { *n += 1 };
    }
}

/// A reject on a tunnel device: no reply is sent (the sender behind the
/// tunnel cannot be told from the inner packet; tunnel module), counted as
/// `refused`.
#[inline(always)]
pub fn refuse() -> ReplyOutcome {
    bump(ReplyOutcome::Refused);
    ReplyOutcome::Refused
}

/// The reply budget: one global GCRA bucket on the coarse clock, like the
/// drop-event budget (bucket::admit_event explains why the coarse clock).
#[inline(always)]
fn within_budget(config: Option<&PolicyConfig>) -> bool {
    let g = match config {
        Some(c) => Gcra {
            emission_ns: c.reply_emission_ns,
            burst_window_ns: c.reply_burst_window_ns,
        },
        None => DEFAULT_BUDGET,
    };
    if g.emission_ns == 0 {
        return false;
    }
    let now = tat::coarse_now();
    match REPLY_BUCKET.get_ptr_mut(0) {
        Some(tat) => update(tat, |seen| g.admit(seen, now)),
        None => false,
    }
}

/// Hands a rejected packet to the reply program (a tail call: no return
/// on success), which sends the reply out of `target` (the ifindex of the
/// hook's device: the bridge, whose egress forwards it to the port the
/// sender's MAC was learnt on, or a container's veth); `to_host`: the frame
/// was addressed to the host at layer 2 (else no reply). Returns only if the
/// tail call failed (no reply program in `REPLY_PROGRAM`): then the outcome
/// is counted here and the caller drops.
#[inline(always)]
pub fn reject(
    ctx: &TcContext,
    parsed: &Parsed,
    decision: &Decision,
    target: u32,
    endpoint: u32,
    to_host: bool,
) -> ReplyOutcome {
    if let Some(s) = scratch() {
        // SAFETY: this CPU's value; the reply program runs next, here.
        unsafe {
            (*s).parsed = *parsed;
            (*s).verdict = decision.verdict as u8;
            (*s).rule = decision.rule;
            (*s).ifindex = target;
            (*s).to_host = to_host;
            (*s).endpoint = endpoint;
        }
        unsafe { REPLY_PROGRAM.tail_call(ctx, 0) };
    }
    bump(ReplyOutcome::Unanswerable);
    ReplyOutcome::Unanswerable
}

/// The reply program's body: answers the packet the classifier put in
/// `REPLY_SCRATCH` if it may be answered and the budget allows, counts and
/// reports it, and returns the verdict.
#[inline(always)]
pub fn reply(ctx: &TcContext) -> i32 {
    let Some(s) = scratch() else {
        return TC_ACT_SHOT;
    };
    // SAFETY: written by the classifier just before the tail call.
    let (parsed, verdict, rule, target, endpoint) = unsafe {
        (
            &(*s).parsed,
            (*s).verdict,
            (*s).rule,
            (*s).ifindex,
            (*s).endpoint,
        )
    };
    let config = view::active_config();
    let outcome = answer(ctx, parsed, config, target);
    bump(outcome);
    if let Some(c) = config {
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        events::emit(
            ctx,
            events::Origin::tc(ifindex, endpoint),
            c,
            parsed,
            verdict,
            rule,
            reject_flags(outcome),
        );
    }
    verdict_of(outcome)
}

#[inline(always)]
fn answer(
    ctx: &TcContext,
    parsed: &Parsed,
    config: Option<&PolicyConfig>,
    target: u32,
) -> ReplyOutcome {
    let mut skb = SkbMut(ctx);
    let plan = reply::plan(&skb, parsed);
    match plan {
        Plan::Refused => return ReplyOutcome::Refused,
        Plan::Unanswerable => return ReplyOutcome::Unanswerable,
        Plan::Reset | Plan::Unreachable => {}
    }
    if !within_budget(config) {
        return ReplyOutcome::Suppressed;
    }
    // A checksum the NIC vouched for (CHECKSUM_UNNECESSARY) is the old
    // packet's: make the receiver check the reply's own.
    unsafe { bpf_csum_level(skb.raw(), BPF_CSUM_LEVEL_RESET as u64) };
    if !reply::build(&mut skb, parsed, plan) {
        return ReplyOutcome::Unanswerable;
    }
    // Out of the target's egress once we return TC_ACT_REDIRECT.
    let r = unsafe { bpf_redirect(target, 0) };
    if r == aya_ebpf::bindings::TC_ACT_REDIRECT as i64 {
        ReplyOutcome::Sent
    } else {
        ReplyOutcome::Unanswerable
    }
}

/// The tc verdict of a rejected packet: redirected when its reply was sent,
/// dropped otherwise.
#[inline(always)]
fn verdict_of(outcome: ReplyOutcome) -> i32 {
    match outcome {
        ReplyOutcome::Sent => aya_ebpf::bindings::TC_ACT_REDIRECT,
        _ => TC_ACT_SHOT,
    }
}
