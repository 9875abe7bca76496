//! The tc classifiers: `egress_filter` on the ingress of each Docker bridge,
//! where the containers' egress traffic enters the host, and
//! `egress_endpoint` on the ingress of each container's host-side veth,
//! where the sender is known (docs/design.md, Endpoints), and
//! `egress_tunnel`/`egress_tunnel_l3` on the ingress of each decapsulating
//! device, where inner packets enter the host (docs/design.md, Tunnels).
#![no_std]
#![no_main]
// The bpfel target has no native compare-and-swap in `core::sync::atomic`
// (`atomic-cas: false`); the intrinsic lowers to BPF_CMPXCHG.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bridge;
mod bucket;
mod cgroup;
mod counters;
mod endpoint;
mod events;
mod log;
mod maps;
mod reply;
mod route;
mod skb;
mod tat;
mod tunnel;
mod view;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

/// The bridge's program (bridge module): the backstop for every port
/// whose veth program is not attached (yet).
#[classifier]
pub fn egress_filter(ctx: TcContext) -> i32 {
    bridge::judge(&ctx)
}

/// The program on a container's host-side veth: its ingress is the
/// container's egress, and the veth is who sent the packet (the container
/// cannot forge it). Judges with the endpoint's policy (scope
/// per-container, exceptions, its own SMTP budget), counts per endpoint,
/// and hands a passed packet to the bridge program with
/// [`HANDOFF_MARK`](egress_ebpf_common::endpoint::HANDOFF_MARK).
#[classifier]
pub fn egress_endpoint(ctx: TcContext) -> i32 {
    endpoint::judge(&ctx)
}

/// The program on a decapsulating device that hands up Ethernet frames
/// (vxlan, geneve, gretap, tap): its ingress carries the inner packets a
/// container may have wrapped to reach the host's routing (tunnel module).
#[classifier]
pub fn egress_tunnel(ctx: TcContext) -> i32 {
    tunnel::judge::<false>(&ctx)
}

/// The same for a device whose ingress starts at the IP header (tun,
/// ipip, sit, gre, ip6tnl: no Ethernet header).
#[classifier]
pub fn egress_tunnel_l3(ctx: TcContext) -> i32 {
    tunnel::judge::<true>(&ctx)
}

/// Answers a rejected packet (a TCP reset, an ICMP port unreachable) and
/// sends it back out of the device: tail-called by the classifiers through
/// `REPLY_PROGRAM`, never attached (reply module).
#[classifier]
pub fn egress_reply(ctx: TcContext) -> i32 {
    reply::reply(&ctx)
}

/// Judges the addresses of a source route (an IPv4 LSRR/SSRR option, an
/// IPv6 routing header) of a packet a classifier passes: tail-called by
/// the classifiers through `ROUTE_PROGRAM`, never attached (route module).
#[classifier]
pub fn egress_route(ctx: TcContext) -> i32 {
    route::judge(&ctx)
}

/// An empty classifier, never attached: `cargo xtask bench` subtracts its
/// BPF_PROG_TEST_RUN time from the filter's to get the program's own cost.
#[classifier]
pub fn egress_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// An empty `cgroup_skb/egress` program, never attached by the loader:
/// `cargo xtask bench` attaches it to a cgroup of its own to measure what
/// the kernel's hook costs a host-network datagram before any program work.
#[aya_ebpf::macros::cgroup_skb(egress)]
pub fn egress_cgroup_noop(_ctx: aya_ebpf::programs::SkBuffContext) -> i32 {
    1
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
