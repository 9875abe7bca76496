//! Answering a rejected packet from the hook: the shared builder
//! (`egress_ebpf_common::reply`) over the socket buffer, an in-kernel
//! budget, and the redirect back out of the hook's device.
//!
//! The bridge program passes the bridge's ifindex: the bridge forwards the
//! reply by its destination MAC (the offending frame's source), through its
//! FDB, to the port that MAC was learnt on, which is the port the frame came
//! in on. A per-endpoint program passes its veth. docs/design.md, Reject.

use aya_ebpf::{
    bindings::{__sk_buff, BPF_CSUM_LEVEL_RESET, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::{
        bpf_csum_diff, bpf_csum_level, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    packet::Packet,
    parse::Parsed,
    reply::{self, DEFAULT_BUDGET, PacketMut, Plan, ReplyOutcome},
};

use crate::{
    bucket,
    maps::{REPLY_BUCKET, REPLY_STATS},
    skb::Skb,
};

/// `skb->pkt_type` of a frame addressed to this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

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
        unsafe { (*self.raw()).pkt_type == PACKET_HOST }
    }

    #[inline(always)]
    fn load_header<T: Copy>(&self, offset: usize) -> Option<T> {
        // bpf_skb_load_bytes: the headers of a reply are read once, off the
        // pass path, so the direct-read fast path is not worth its code.
        self.0.load::<T>(offset).ok()
    }

    #[inline(always)]
    fn load_prefix<const N: usize>(&self, offset: usize, len: usize) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        // The size argument must be provably in 1..=N (docs/design.md,
        // Verifier notes: the helpers' size arguments).
        if len == 0 || len > N {
            return None;
        }
        let r = unsafe {
            bpf_skb_load_bytes(
                self.raw().cast(),
                offset as u32,
                buf.as_mut_ptr().cast(),
                len as u32,
            )
        };
        (r == 0).then_some(buf)
    }

    #[inline(always)]
    fn store<T: Copy>(&mut self, offset: usize, v: &T) -> bool {
        // BPF_F_RECOMPUTE_CSUM keeps skb->csum right for a CHECKSUM_COMPLETE
        // skb (it covers the packet from the IP header on).
        self.0.store(offset, v, BPF_F_RECOMPUTE_CSUM as u64).is_ok()
    }

    #[inline(always)]
    fn store_prefix<const N: usize>(&mut self, offset: usize, bytes: &[u8; N], len: usize) -> bool {
        // See load_prefix.
        if len == 0 || len > N {
            return false;
        }
        let r = unsafe {
            bpf_skb_store_bytes(
                self.raw(),
                offset as u32,
                bytes.as_ptr().cast(),
                len as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        r == 0
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
    let now = bucket::coarse_now();
    match REPLY_BUCKET.get_ptr_mut(0) {
        Some(tat) => bucket::update(tat, |seen| g.admit(seen, now)),
        None => false,
    }
}

/// Rewrites the rejected packet into its reply and redirects it out of
/// `target_ifindex`, if it may be answered and the budget allows; counts
/// the outcome. The caller returns [`verdict`] for it.
#[inline(never)]
pub fn reject(
    ctx: &TcContext,
    parsed: &Parsed,
    config: Option<&PolicyConfig>,
    target_ifindex: u32,
) -> ReplyOutcome {
    let outcome = answer(ctx, parsed, config, target_ifindex);
    bump(outcome);
    outcome
}

#[inline(always)]
fn answer(
    ctx: &TcContext,
    parsed: &Parsed,
    config: Option<&PolicyConfig>,
    target_ifindex: u32,
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
    // TC_ACT_REDIRECT: the skb goes out of target_ifindex once we return.
    let r = unsafe { bpf_redirect(target_ifindex, 0) };
    if r == aya_ebpf::bindings::TC_ACT_REDIRECT as i64 {
        ReplyOutcome::Sent
    } else {
        ReplyOutcome::Unanswerable
    }
}

/// The tc verdict of a rejected packet: redirected when its reply was sent,
/// dropped otherwise.
#[inline(always)]
pub fn verdict(outcome: ReplyOutcome) -> i32 {
    match outcome {
        ReplyOutcome::Sent => aya_ebpf::bindings::TC_ACT_REDIRECT as i32,
        _ => aya_ebpf::bindings::TC_ACT_SHOT,
    }
}
