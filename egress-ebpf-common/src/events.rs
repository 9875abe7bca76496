//! Drop events: what the classifier reports through the `EVENTS` ring buffer
//! for every packet it drops (or would drop, in dry-run), rate-limited in the
//! kernel so a flood cannot swamp the reader.

/// `DropEvent::family`: the parser's [`Family`](crate::parse::Family).
pub const FAMILY_V4: u8 = crate::parse::Family::V4 as u8;
pub const FAMILY_V6: u8 = crate::parse::Family::V6 as u8;

/// `DropEvent::flags` bit: the packet was not dropped (dry-run).
pub const EVENT_DRY_RUN: u8 = 1;
/// `DropEvent::flags` bit: the action was reject; the reply's
/// `reply::ReplyOutcome` is in the bits under [`EVENT_REPLY_MASK`].
pub const EVENT_REJECT: u8 = 2;
pub const EVENT_REPLY_SHIFT: u8 = 2;
pub const EVENT_REPLY_MASK: u8 = 0b11 << EVENT_REPLY_SHIFT;

/// The flags of a reject whose reply had `outcome`.
pub const fn reject_flags(outcome: crate::reply::ReplyOutcome) -> u8 {
    EVENT_REJECT | ((outcome as u8) << EVENT_REPLY_SHIFT)
}

/// The reply outcome a drop event's flags carry, for a reject.
pub const fn reply_outcome(flags: u8) -> Option<crate::reply::ReplyOutcome> {
    if flags & EVENT_REJECT == 0 {
        return None;
    }
    crate::reply::ReplyOutcome::from_u8((flags & EVENT_REPLY_MASK) >> EVENT_REPLY_SHIFT)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// bpf_ktime_get_coarse_ns() at the drop: CLOCK_MONOTONIC as of the last
    /// timer tick (CLOCK_MONOTONIC_COARSE), so up to one tick (1-10 ms)
    /// before the drop itself.
    pub timestamp_ns: u64,
    /// Interface whose ingress saw the packet (the hook): the veth of an
    /// attached endpoint, else the bridge; 0 for the cgroup hooks.
    pub ifindex: u32,
    /// Block rule id, or `rules::NO_RULE`.
    pub rule_id: u16,
    /// Transport ports, host byte order; 0 when not visible.
    pub sport: u16,
    pub dport: u16,
    /// A `CounterId` as u8.
    pub verdict: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub proto: u8,
    pub flags: u8,
    /// The `hook::Hook` that decided, as u8.
    pub hook: u8,
    pub _pad: u8,
    /// IPv4 addresses in the last 4 bytes as v4-mapped IPv6.
    /// As the packet says (forgeable); the sender is `endpoint`.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The endpoint that sent it (`endpoint::Endpoint::id`, the veth's
    /// ifindex); 0: unknown (judged by the bridge backstop or a cgroup hook).
    pub endpoint: u32,
    pub _pad2: u32,
    /// The sender's cgroup (v2 id: the inode of its directory) for the
    /// cgroup hooks, which name the container by it; 0 for the tc hooks.
    pub cgroup_id: u64,
}
crate::assert_size!(DropEvent, 72);

/// Indexes into `EVENT_STATS`.
pub const EVENTS_LOST: u32 = 0;
pub const EVENTS_SUPPRESSED: u32 = 1;
pub const EVENT_STATS_LEN: u32 = 2;

/// Ring buffer size (a power-of-two multiple of the page size): about 4,600
/// events in flight.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Default event budget: 100 per second, bursts of 500.
pub const DEFAULT_EVENT_RATE_PER_SEC: u64 = 100;
pub const DEFAULT_EVENT_BURST: u64 = 500;
