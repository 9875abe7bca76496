//! The cgroup hooks (docs/design.md, Cgroup hooks): attached to the cgroup
//! under which the engine creates containers, they judge what a container in
//! the host's network namespace (`--network host`, `hostNetwork` pods)
//! sends, with the decision and counters of the tc classifier.
//!
//! - `connect4/6` judge a `connect()` (a TCP connection attempt is charged
//!   to the SMTP bucket here, once per attempt; a connected UDP socket's
//!   destination). Returning 0 makes the call fail with EPERM at once.
//! - `cgroup_skb/egress` judges every other packet a socket of the cgroup
//!   sends: unconnected UDP (each `sendto()`), raw sockets, ICMP ping,
//!   SCTP... Returning 0 drops the packet, and the kernel returns EPERM to
//!   the `sendto()`/`sendmsg()` that sent it, at once (ip_finish_output
//!   hands `__cgroup_bpf_run_filter_skb`'s -EPERM back up through
//!   ip_send_skb/udp_send_skb; the same on IPv6). Packets whose destination
//!   `connect()` judged (TCP; a connected UDP socket sending to its peer)
//!   pass untouched, so a SYN is never charged a second time; except a TCP
//!   packet with IPv4 options or IPv6 extension headers, where a source
//!   route (`IP_OPTIONS` LSRR/SSRR, `IPV6_RTHDR`) sends it to the route's
//!   first hop instead of the address `connect()` judged: judged here by
//!   its real destination (a SYN with options to an SMTP port is charged
//!   twice: stricter, and no client sends one).
//!
//! `sendmsg4/6` judge a UDP `sendto()` only on kernels where
//! `cgroup_skb/egress` cannot load (before Linux 6.15, whose verifier has
//! no `bpf_get_netns_cookie` for it): where it loads, it judges the same
//! datagrams with the same EPERM, and a sendmsg hook, run under the socket
//! lock on every `sendto()`, would only add its cost (docs/benchmarks.md,
//! Analysis). The loader attaches one or the other, never both.
//!
//! Only sockets in the host's network namespace are judged: a bridged
//! container's sockets live in its own namespace and its packets are judged
//! by the tc classifier on the bridge; judging them here too would count
//! and charge them twice.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id,
    },
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};
use egress_ebpf_common::{
    bucket::Gcra,
    config::PolicyConfig,
    counters::CounterId,
    decide::{Action, PolicyView, decide},
    hook::Hook,
    packet::Packet,
    parse::{Family, Parsed, parse_ip},
    rules::{BlockRule, NO_RULE, PROTO_TCP, PROTO_UDP},
    shortcut::open_udp_datagram,
    sockaddr::{self, Call, PROTO_UDPLITE, cgroup_bucket_key},
};

use crate::{
    counters, events,
    maps::{HOST_NETNS_COOKIE, PREFILTER},
    skb::CgroupSkb,
    view::Maps,
};

/// Return values of cgroup programs: 1 lets the call or packet go on; 0
/// refuses it (EPERM for connect/sendmsg; a dropped packet for cgroup_skb).
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// Whether the socket behind `ctx` lives in the host's network namespace.
/// An unwritten cookie (0) judges nothing: a miss never refuses.
#[inline(always)]
fn in_host_netns<C: EbpfContext>(ctx: &C) -> bool {
    let host = match HOST_NETNS_COOKIE.get(0) {
        Some(c) => *c,
        None => return false,
    };
    // bpf_get_netns_cookie: sock_addr programs since Linux 5.7, cgroup_skb
    // since 6.15 (docs/design.md, Cgroup hooks: the helpers per program type).
    host != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == host
}

/// The maps, with the caller's cgroup as its per-source bucket key: a
/// host-network container shares the host's addresses, so its source
/// address cannot tell it from the others. The cgroup id is asked of the
/// kernel only when a bucket or an event needs it, not for every packet
/// that passes.
struct CgroupView<'a, C: EbpfContext, F: Fn() -> u64> {
    maps: Maps<'a, C>,
    cgroup_id: F,
}

impl<C: EbpfContext, F: Fn() -> u64> PolicyView for CgroupView<'_, C, F> {
    #[inline(always)]
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule> {
        self.maps.blocked_v4(dst)
    }

    #[inline(always)]
    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule> {
        self.maps.blocked_v6(dst)
    }

    #[inline(always)]
    fn config(&self) -> Option<&PolicyConfig> {
        self.maps.config()
    }

    #[inline(always)]
    fn admit_smtp(&self, gcra: &Gcra, scope: u8, _src: &[u8; 16]) -> bool {
        // The global scope ignores the key.
        self.maps
            .admit_smtp(gcra, scope, &cgroup_bucket_key((self.cgroup_id)()))
    }
}

/// Decide, count and report as the classifier does; `bytes` is 0 for the
/// socket hooks (a call, not a packet). `cgroup_id` asks the kernel for
/// the sender's cgroup.
#[inline(always)]
fn judge<C: EbpfContext, F: Fn() -> u64>(
    ctx: &C,
    parsed: &Parsed,
    hook: Hook,
    cgroup_id: F,
    bytes: u32,
) -> i32 {
    let view = CgroupView {
        maps: Maps { ctx },
        cgroup_id: &cgroup_id,
    };
    let decision = decide(parsed, &view);
    counters::count_hook(decision.verdict, decision.rule, hook, bytes);
    if decision.verdict.drops()
        && let Some(config) = decision.config
    {
        events::report_from(
            ctx,
            events::Origin {
                hook,
                ifindex: 0,
                endpoint: 0,
                cgroup_id: cgroup_id(),
            },
            config,
            parsed,
            &decision,
        );
    }
    match decision.action {
        // A socket hook cannot answer with a packet: a Reject is the same
        // refusal as a Drop, EPERM from connect()/sendto() at once
        // (docs/design.md, Reject).
        Action::Drop | Action::Reject => REFUSE,
        Action::Pass => ALLOW,
    }
}

/// The IPv4 socket hooks. Each field of `bpf_sock_addr` is read on its own:
/// the verifier allows only loads at constant offsets of the context, and
/// `user_ip4` only in the IPv4 attach types.
#[inline(always)]
fn sock_addr_v4(ctx: &SockAddrContext, hook: Hook, call: Call) -> i32 {
    if !in_host_netns(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context, valid for the program's run.
    let (ip, port, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    // Both are in network byte order as the caller wrote them.
    let parsed = sockaddr::v4(
        ip.to_ne_bytes(),
        u16::from_be(port as u16),
        proto as u8,
        call,
    );
    judge(ctx, &parsed, hook, current_cgroup, 0)
}

#[inline(always)]
fn sock_addr_v6(ctx: &SockAddrContext, hook: Hook, call: Call) -> i32 {
    if !in_host_netns(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context, valid for the program's run.
    let (w, port, proto) = unsafe {
        (
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            (*sa).user_port,
            (*sa).protocol,
        )
    };
    let mut dst = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        dst[i * 4] = b[0];
        dst[i * 4 + 1] = b[1];
        dst[i * 4 + 2] = b[2];
        dst[i * 4 + 3] = b[3];
        i += 1;
    }
    let parsed = sockaddr::v6(dst, u16::from_be(port as u16), proto as u8, call);
    judge(ctx, &parsed, hook, current_cgroup, 0)
}

/// The calling task's cgroup (a socket hook runs in the caller's context).
#[inline(always)]
fn current_cgroup() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}

#[cgroup_sock_addr(connect4)]
pub fn egress_connect4(ctx: SockAddrContext) -> i32 {
    sock_addr_v4(&ctx, Hook::Connect4, Call::Connect)
}

#[cgroup_sock_addr(connect6)]
pub fn egress_connect6(ctx: SockAddrContext) -> i32 {
    sock_addr_v6(&ctx, Hook::Connect6, Call::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn egress_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr_v4(&ctx, Hook::Sendmsg4, Call::Sendmsg)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn egress_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr_v6(&ctx, Hook::Sendmsg6, Call::Sendmsg)
}

/// What the socket of a packet told `connect()`, read before the packet is
/// parsed: its destination, when `connect()` judged every packet it sends
/// there. A plain struct (`tcp` and `udp` false: not connected), not an
/// `Option`: LLVM tests an `Option`'s payload without its discriminant,
/// and the verifier refuses the read of a register it never saw written
/// (`R7 !read_ok`, docs/design.md, Verifier notes).
struct Connected {
    /// A TCP socket: every packet goes to the peer `connect()` judged.
    tcp: bool,
    /// A connected UDP socket (sk_state TCP_ESTABLISHED after `connect()`):
    /// its packets to the peer were judged there; a `sendto()` naming
    /// another address on it was not, and is judged here.
    udp: bool,
    dst_ip4: u32,
    dst_ip6: [u32; 4],
    /// Network byte order.
    dst_port: u16,
}

const BPF_TCP_ESTABLISHED: u32 = 1;

impl Connected {
    const NONE: Self = Self {
        tcp: false,
        udp: false,
        dst_ip4: 0,
        dst_ip6: [0; 4],
        dst_port: 0,
    };

    #[inline(always)]
    fn is_connected(&self) -> bool {
        self.tcp || self.udp
    }
}

#[inline(always)]
fn connected(ctx: &SkBuffContext) -> Connected {
    let skb = ctx.skb.skb;
    // SAFETY: the context's socket pointer; bpf_sk_fullsock checks it.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Connected::NONE;
    }
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return Connected::NONE;
    }
    // SAFETY: a full socket the helper returned; each field is a load at a
    // constant offset, which is all the verifier allows of a bpf_sock.
    let (sock_type, protocol) = unsafe { ((*full).type_, (*full).protocol) };
    let tcp = sock_type == SOCK_STREAM && protocol == PROTO_TCP as u32;
    let udp = sock_type == SOCK_DGRAM
        && (protocol == PROTO_UDP as u32 || protocol == PROTO_UDPLITE as u32)
        && unsafe { (*full).state } == BPF_TCP_ESTABLISHED;
    if !tcp && !udp {
        return Connected::NONE;
    }
    unsafe {
        Connected {
            tcp,
            udp,
            dst_ip4: (*full).dst_ip4,
            dst_ip6: (*full).dst_ip6,
            dst_port: (*full).dst_port,
        }
    }
}

/// Whether `connect()` judged this packet: TCP, or a connected UDP socket's
/// datagram to the very address and port it connected to.
#[inline(always)]
fn judged_at_connect(c: &Connected, parsed: &Parsed) -> bool {
    if c.tcp {
        return true;
    }
    if !c.udp || !parsed.transport.dport.is_known() {
        return false;
    }
    if parsed.transport.dport.value() != u16::from_be(c.dst_port) {
        return false;
    }
    match parsed.family {
        Family::V4 => parsed.dst_v4() == c.dst_ip4.to_ne_bytes(),
        Family::V6 => {
            let mut i = 0;
            while i < 4 {
                let w = c.dst_ip6[i].to_ne_bytes();
                if parsed.dst[i * 4] != w[0]
                    || parsed.dst[i * 4 + 1] != w[1]
                    || parsed.dst[i * 4 + 2] != w[2]
                    || parsed.dst[i * 4 + 3] != w[3]
                {
                    return false;
                }
                i += 1;
            }
            true
        }
        Family::NotIp => false,
    }
}

/// Whether the packet has IPv4 options or an IPv6 extension header, where
/// a source route would be. The destination in its header is then not
/// necessarily the one connect() judged (ip_queue_xmit and
/// inet6_csk_xmit send to the route's first hop).
#[inline(always)]
fn may_carry_route<P: Packet>(pkt: &P) -> bool {
    // Bytes 0-7 in one read: the version and IHL, and IPv6's next header.
    let Some(h) = pkt.load::<8>(0) else {
        return false;
    };
    match h[0] >> 4 {
        4 => h[0] & 0x0f > 5,
        6 => h[6] != PROTO_TCP,
        _ => false,
    }
}

#[cgroup_skb(egress)]
pub fn egress_cgroup_skb(ctx: SkBuffContext) -> i32 {
    // A TCP socket's packet first: it passes whatever its namespace (judged
    // at connect() in the host's, by the tc classifier in a container's),
    // so most packets here cost no netns lookup.
    let conn = connected(&ctx);
    let pkt = CgroupSkb(&ctx);
    // A source route (IP_OPTIONS, IPV6_RTHDR) sends a TCP socket's packets
    // to the route's first hop, which connect() never judged: a packet
    // that may carry one is judged here like any other.
    let routed = may_carry_route(&pkt);
    if conn.tcp && !routed {
        return ALLOW;
    }
    if !in_host_netns(&ctx) {
        return ALLOW;
    }
    // An unconnected socket's datagram to an open destination, what a
    // host-network `sendto()` loop sends: passed on four header bytes and
    // the pre-filter, as the full decision would pass it (the shortcut's
    // proof and its test: egress_ebpf_common::shortcut).
    if !conn.is_connected() && open_udp_datagram(&pkt, |family| PREFILTER.get(family)) {
        counters::count_hook(
            CounterId::Passed,
            NO_RULE,
            Hook::CgroupSkb,
            pkt.len() as u32,
        );
        return ALLOW;
    }
    let parsed = parse_ip(&pkt);
    // A TCP socket's packet here may carry a route: judged whatever the
    // socket says.
    if !conn.tcp && judged_at_connect(&conn, &parsed) {
        return ALLOW;
    }
    let skb = ctx.skb.skb;
    let cgroup_id = || unsafe { bpf_skb_cgroup_id(skb) };
    judge(&ctx, &parsed, Hook::CgroupSkb, cgroup_id, pkt.len() as u32)
}
