//! Map names, the single place they are spelled. The loader pins each map under
//! `<pin dir>/maps/<NAME>`.

/// `LpmTrie<[u8; 4], BlockRule>`: blocked IPv4 destinations.
pub const BLOCKED_V4: &str = "BLOCKED_V4";
/// `LpmTrie<[u8; 16], BlockRule>`: blocked IPv6 destinations.
pub const BLOCKED_V6: &str = "BLOCKED_V6";
/// `Array<PolicyConfig>` with [`CONFIG_SLOTS`] entries, double-buffered.
pub const POLICY_CONFIG: &str = "POLICY_CONFIG";
/// `Array<u32>` with one entry: which `POLICY_CONFIG` slot is in force.
pub const ACTIVE_CONFIG: &str = "ACTIVE_CONFIG";
/// `PerCpuArray<Counter>` indexed by [`crate::counters::CounterId`].
pub const COUNTERS: &str = "COUNTERS";
/// `PerCpuArray<Counter>` indexed by block rule id: drops per configured rule.
pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
/// `Array<u64>` with [`SMTP_GLOBAL_SLOTS`] entries: the GCRA theoretical arrival
/// time of the global bucket (slot 0) and of the per-source overflow bucket (slot 1).
pub const SMTP_BUCKET: &str = "SMTP_BUCKET";
/// `HashMap<[u8; 16], u64>`: per-source GCRA buckets (IPv4 as v4-mapped IPv6).
pub const SMTP_SOURCE_BUCKETS: &str = "SMTP_SOURCE_BUCKETS";

/// `RingBuf` of `events::DropEvent`.
pub const EVENTS: &str = "EVENTS";
/// `Array<u64>` with one entry: the GCRA TAT of the event budget.
pub const EVENT_BUCKET: &str = "EVENT_BUCKET";
/// `PerCpuArray<u64>`: events lost (ring full) and suppressed (over budget).
pub const EVENT_STATS: &str = "EVENT_STATS";
/// `PerCpuHashMap<u32, counters::IfaceCounters>`: counters per ingress ifindex.
pub const IFACE_COUNTERS: &str = "IFACE_COUNTERS";
/// `PerCpuArray<counters::IfaceSlot>`: direct-mapped per-interface counters,
/// `IFACE_COUNTERS` taking the interfaces whose slot is held by another.
pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
/// Capacity of `IFACE_COUNTERS`; interfaces beyond it are counted only globally.
pub const IFACE_CAPACITY: u32 = 4096;

/// Every map the classifier pins, for the loader's checks and for `detach`.
pub const ALL: [&str; 13] = [
    IFACE_SLOTS,
    EVENTS,
    EVENT_BUCKET,
    EVENT_STATS,
    IFACE_COUNTERS,
    BLOCKED_V4,
    BLOCKED_V6,
    POLICY_CONFIG,
    ACTIVE_CONFIG,
    COUNTERS,
    RULE_COUNTERS,
    SMTP_BUCKET,
    SMTP_SOURCE_BUCKETS,
];

/// Name of the classifier program in the object file.
pub const PROGRAM: &str = "egress_filter";
/// An empty classifier in the same object, for benchmark baselines.
pub const NOOP_PROGRAM: &str = "egress_noop";

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
