//! Every map the classifier pins, listed once in [`for_each_map!`]. The
//! kernel crate generates its `#[map]` statics from that list; this module
//! generates the name constants, [`ALL`] and [`LAYOUT`] (the loader's check
//! of maps already pinned) from it. The loader pins each map under
//! `<pin dir>/maps/<NAME>`.

/// Calls `$callback! { ... }` with every map the classifier pins, as
/// `NAME: Kind<Key, Value> = max_entries;` entries (each with its doc).
/// `Kind` is one of [`MapKind`]'s variants; arrays name their `u32` index as
/// the key, and the ring buffer has `()` for both (its `max_entries` is its
/// size in bytes). A new map is one entry here; the kernel static, the name,
/// `ALL` and the layout check follow.
#[macro_export]
macro_rules! for_each_map {
    ($callback:ident) => {
        $callback! {
            /// `LpmTrie<[u8; 4], BlockRule>`: blocked IPv4 destinations.
            BLOCKED_V4: LpmTrie<[u8; 4], $crate::rules::BlockRule> = $crate::maps::BLOCKED_CAPACITY;
            /// `LpmTrie<[u8; 16], BlockRule>`: blocked IPv6 destinations.
            BLOCKED_V6: LpmTrie<[u8; 16], $crate::rules::BlockRule> = $crate::maps::BLOCKED_CAPACITY;
            /// `Array<prefilter::Prefilter>`, one entry per family (`PREFILTER_V4`, `_V6`):
            /// the first-16-bit blocks that no blocked prefix overlaps, whose packets skip
            /// the tries. Written by the loader with the tries; zeros skip nothing.
            PREFILTER: Array<u32, $crate::prefilter::Prefilter> = $crate::prefilter::PREFILTER_ENTRIES;
            /// `Array<PolicyConfig>` with [`CONFIG_SLOTS`] entries, double-buffered.
            POLICY_CONFIG: Array<u32, $crate::config::PolicyConfig> = $crate::maps::CONFIG_SLOTS;
            /// `Array<u32>` with one entry: which `POLICY_CONFIG` slot is in force.
            ACTIVE_CONFIG: Array<u32, u32> = 1;
            /// `PerCpuArray<Counter>` indexed by [`crate::counters::CounterId`].
            COUNTERS: PerCpuArray<u32, $crate::counters::Counter> = $crate::counters::CounterId::COUNT;
            /// `PerCpuArray<Counter>` indexed by block rule id: drops per configured rule.
            RULE_COUNTERS: PerCpuArray<u32, $crate::counters::Counter> = $crate::maps::MAX_RULES;
            /// `Array<u64>` with [`SMTP_GLOBAL_SLOTS`] entries: the GCRA theoretical arrival
            /// time of the global bucket (slot 0) and of the per-source overflow bucket (slot 1).
            SMTP_BUCKET: Array<u32, u64> = $crate::maps::SMTP_GLOBAL_SLOTS;
            /// `HashMap<[u8; 16], u64>`: per-source GCRA buckets (IPv4 as v4-mapped IPv6).
            SMTP_SOURCE_BUCKETS: HashMap<[u8; 16], u64> = $crate::maps::SMTP_SOURCE_CAPACITY;
            /// `RingBuf` of `events::DropEvent`.
            EVENTS: RingBuf<(), ()> = $crate::events::EVENTS_RING_BYTES;
            /// `Array<u64>` with one entry: the GCRA TAT of the event budget.
            EVENT_BUCKET: Array<u32, u64> = 1;
            /// `PerCpuArray<u64>`: events lost (ring full) and suppressed (over budget).
            EVENT_STATS: PerCpuArray<u32, u64> = $crate::events::EVENT_STATS_LEN;
            /// `PerCpuHashMap<u32, counters::IfaceCounters>`: counters per ingress ifindex.
            IFACE_COUNTERS: PerCpuHashMap<u32, $crate::counters::IfaceCounters> = $crate::maps::IFACE_CAPACITY;
            /// `PerCpuArray<counters::IfaceSlot>`: direct-mapped per-interface counters,
            /// `IFACE_COUNTERS` taking the interfaces whose slot is held by another.
            IFACE_SLOTS: PerCpuArray<u32, $crate::counters::IfaceSlot> = $crate::counters::IFACE_SLOT_COUNT;
            /// `Array<u64>` indexed by `logs::RareCondition`: the GCRA TAT of each
            /// condition's log budget (one aya-log line per second at most).
            LOG_BUDGET: Array<u32, u64> = $crate::logs::RareCondition::COUNT;
            /// `Array<endpoint::Endpoint>` indexed by `endpoint_slot(veth ifindex)`: the
            /// attached endpoints (written by the loader), each slot owned by one.
            ENDPOINTS: Array<u32, $crate::endpoint::Endpoint> = $crate::endpoint::ENDPOINT_SLOTS;
            /// `HashMap<u32, endpoint::Endpoint>` by veth ifindex: endpoints whose
            /// `ENDPOINTS` slot another live endpoint holds.
            ENDPOINT_OVERFLOW: HashMap<u32, $crate::endpoint::Endpoint> = $crate::endpoint::ENDPOINT_OVERFLOW_CAPACITY;
            /// `PerCpuArray<counters::IfaceCounters>` indexed by `Endpoint::slot`:
            /// verdicts per endpoint.
            ENDPOINT_COUNTERS: PerCpuArray<u32, $crate::counters::IfaceCounters> = $crate::endpoint::ENDPOINT_SLOTS;
            /// `HashMap<endpoint::ExceptionKey, u32>`: (endpoint, block rule) pairs an
            /// exception opens.
            EXCEPTIONS: HashMap<$crate::endpoint::ExceptionKey, u32> = $crate::endpoint::EXCEPTION_CAPACITY;
            /// `HashMap<u32, u64>`: per-endpoint GCRA buckets (scope per-container, and
            /// exceptions with their own SMTP budget), by endpoint id.
            SMTP_ENDPOINT_BUCKETS: HashMap<u32, u64> = $crate::endpoint::SMTP_ENDPOINT_CAPACITY;
            /// `Array<u64>` with one entry: the cookie of the host's network namespace
            /// (the loader's), the only one whose sockets the cgroup hooks judge;
            /// 0 (never written) judges none.
            HOST_NETNS_COOKIE: Array<u32, u64> = 1;
            /// `PerCpuArray<counters::IfaceCounters>` indexed by `hook::Hook`: the
            /// verdicts of each cgroup hook, which no interface stands for.
            HOOK_COUNTERS: PerCpuArray<u32, $crate::counters::IfaceCounters> = $crate::hook::Hook::COUNT;
            /// `Array<u64>` with one entry: the GCRA TAT of the reply budget (the
            /// resets and ICMP errors rejecting rules send).
            REPLY_BUCKET: Array<u32, u64> = 1;
            /// `PerCpuArray<u64>` indexed by `reply::ReplyOutcome`: replies sent,
            /// suppressed over the budget, refused, and packets not answerable.
            REPLY_STATS: PerCpuArray<u32, u64> = $crate::reply::ReplyOutcome::COUNT;
            /// `ProgramArray` with one entry: the reply program
            /// ([`REPLY_PROGRAM_NAME`]) the classifiers tail-call to answer a reject.
            REPLY_PROGRAM: ProgArray<u32, u32> = 1;
            /// `PerCpuArray<reply::ReplyScratch>` with one entry: what the classifier
            /// hands to the reply program, and the bytes an ICMP error quotes (they
            /// would not fit the reply program's stack). Read by the kernel only.
            REPLY_SCRATCH: PerCpuArray<u32, $crate::reply::ReplyScratch> = 1;
            /// `ProgramArray` with one entry: the source-route program
            /// ([`ROUTE_PROGRAM_NAME`]) the classifiers tail-call for a packet they
            /// pass that may carry a source route (`route`). It reads the packet
            /// and the decision from `REPLY_SCRATCH` (a packet is either rejected
            /// or passed: the two never share it).
            ROUTE_PROGRAM: ProgArray<u32, u32> = 1;
        }
    };
}

/// The kinds of map in [`for_each_map!`], as the kernel names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Array,
    PerCpuArray,
    HashMap,
    PerCpuHashMap,
    LpmTrie,
    RingBuf,
    ProgArray,
}

/// What the kernel reports of a map (`bpf_map_info`), as this build creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    /// Per CPU, for the per-CPU kinds.
    pub value_size: u32,
    pub max_entries: u32,
}

/// Key size as the kernel sees it: an LPM trie's key is a u32 prefix length
/// followed by the address.
macro_rules! key_size {
    (LpmTrie, $k:ty) => {
        4 + core::mem::size_of::<$k>() as u32
    };
    ($kind:ident, $k:ty) => {
        core::mem::size_of::<$k>() as u32
    };
}

macro_rules! names_and_layout {
    ($( $(#[$doc:meta])* $name:ident : $kind:ident < $key:ty , $value:ty > = $max:expr ; )*) => {
        $(
            $(#[$doc])*
            pub const $name: &str = stringify!($name);
        )*

        /// Number of maps in [`for_each_map!`].
        pub const MAP_COUNT: usize = [$($name),*].len();

        /// Every map the classifier pins, for the loader's checks and for `detach`.
        pub const ALL: [&str; MAP_COUNT] = [$($name),*];

        /// The layout this build gives each map. A pin made by a build with
        /// another layout would be misread, so the loader refuses it.
        pub const LAYOUT: [MapLayout; MAP_COUNT] = [$(
            MapLayout {
                name: $name,
                kind: MapKind::$kind,
                key_size: key_size!($kind, $key),
                value_size: core::mem::size_of::<$value>() as u32,
                max_entries: $max,
            }
        ),*];
    };
}

for_each_map!(names_and_layout);

/// Capacity of `IFACE_COUNTERS`; interfaces beyond it are counted only globally.
pub const IFACE_CAPACITY: u32 = 4096;

/// Name of the classifier program in the object file.
pub const PROGRAM: &str = "egress_filter";
/// The classifier on each endpoint's (container's) host-side veth.
pub const ENDPOINT_PROGRAM: &str = "egress_endpoint";
/// The classifier on a decapsulating device that hands up Ethernet frames
/// (vxlan, geneve, gretap, a tap): the inner packets (docs/design.md, Tunnels).
pub const TUNNEL_PROGRAM: &str = "egress_tunnel";
/// The same for a device that hands up bare IP packets (tun, ipip, sit,
/// gre, ip6tnl): at its tc ingress the packet starts at the IP header.
pub const TUNNEL_L3_PROGRAM: &str = "egress_tunnel_l3";
/// An empty classifier in the same object, for benchmark baselines.
pub const NOOP_PROGRAM: &str = "egress_noop";
/// An empty `cgroup_skb/egress` program, for the host-network baseline.
pub const CGROUP_NOOP_PROGRAM: &str = "egress_cgroup_noop";
/// The classifier that answers a reject, tail-called from slot 0 of
/// `REPLY_PROGRAM`; never attached.
pub const REPLY_PROGRAM_NAME: &str = "egress_reply";
/// The classifier that judges a source route's addresses, tail-called from
/// slot 0 of `ROUTE_PROGRAM`; never attached.
pub const ROUTE_PROGRAM_NAME: &str = "egress_route";

/// The cgroup programs (docs/design.md, Cgroup hooks), with the hook each
/// one is, in the order the loader attaches them.
pub const CGROUP_PROGRAMS: [(&str, crate::hook::Hook); 3] = [
    ("egress_connect4", crate::hook::Hook::Connect4),
    ("egress_connect6", crate::hook::Hook::Connect6),
    ("egress_cgroup_skb", crate::hook::Hook::CgroupSkb),
];

/// Where `cgroup_skb/egress` cannot load (its `bpf_get_netns_cookie` needs
/// Linux 6.15), these judge unconnected UDP at each `sendto()` instead:
/// loaded and attached only then, so that no datagram is judged twice.
pub const UDP_FALLBACK_PROGRAMS: [(&str, crate::hook::Hook); 2] = [
    ("egress_sendmsg4", crate::hook::Hook::Sendmsg4),
    ("egress_sendmsg6", crate::hook::Hook::Sendmsg6),
];

pub const CONFIG_SLOTS: u32 = 2;
pub const SMTP_GLOBAL_SLOT: u32 = 0;
/// Shared by the sources that found the per-source table full: a flood of
/// spoofed sources can fill the table, but never gets fresh buckets from it.
pub const SMTP_OVERFLOW_SLOT: u32 = 1;
pub const SMTP_GLOBAL_SLOTS: u32 = 2;
/// Capacity of the per-source table (max containers expected on one host, with margin).
pub const SMTP_SOURCE_CAPACITY: u32 = 16384;
/// Capacity of each blocked-destination trie.
pub const BLOCKED_CAPACITY: u32 = 65536;
/// Number of per-rule counters; rule ids are below this.
pub const MAX_RULES: u32 = 16384;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_identifiers_and_unique() {
        assert_eq!(BLOCKED_V4, "BLOCKED_V4");
        assert_eq!(LOG_BUDGET, "LOG_BUDGET");
        for (i, a) in ALL.iter().enumerate() {
            assert_eq!(LAYOUT[i].name, *a);
            assert!(!ALL[..i].contains(a), "{a} listed twice");
        }
    }

    #[test]
    fn layout_follows_the_kernel_conventions() {
        let get = |n: &str| *LAYOUT.iter().find(|l| l.name == n).unwrap();
        // An LPM trie key is struct bpf_lpm_trie_key: a u32 prefix length, then the data.
        assert_eq!(get(BLOCKED_V4).key_size, 4 + 4);
        assert_eq!(get(BLOCKED_V6).key_size, 4 + 16);
        // Arrays are indexed by u32.
        assert_eq!(get(COUNTERS).key_size, 4);
        assert_eq!(get(COUNTERS).kind, MapKind::PerCpuArray);
        // A ring buffer has neither key nor value; its size is max_entries.
        let ring = get(EVENTS);
        assert_eq!((ring.key_size, ring.value_size), (0, 0));
        assert_eq!(ring.max_entries, crate::events::EVENTS_RING_BYTES);
        assert_eq!(get(SMTP_SOURCE_BUCKETS).key_size, 16);
        assert_eq!(get(SMTP_SOURCE_BUCKETS).kind, MapKind::HashMap);
    }
}
