//! The maps, pinned by name so they (and the counters and buckets in them)
//! outlive the loader. Names must equal the constants in
//! `egress_ebpf_common::maps` (the loader checks every one exists).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf},
};
use egress_ebpf_common::{
    config::PolicyConfig,
    counters::{Counter, CounterId, IFACE_SLOT_COUNT, IfaceCounters, IfaceSlot},
    events::{EVENT_STATS_LEN, EVENTS_RING_BYTES},
    maps::{
        BLOCKED_CAPACITY, CONFIG_SLOTS, IFACE_CAPACITY, MAX_RULES, SMTP_GLOBAL_SLOTS,
        SMTP_SOURCE_CAPACITY,
    },
    rules::BlockRule,
};

#[map]
pub static BLOCKED_V4: LpmTrie<[u8; 4], BlockRule> = LpmTrie::pinned(BLOCKED_CAPACITY, 0);

#[map]
pub static BLOCKED_V6: LpmTrie<[u8; 16], BlockRule> = LpmTrie::pinned(BLOCKED_CAPACITY, 0);

#[map]
pub static POLICY_CONFIG: Array<PolicyConfig> = Array::pinned(CONFIG_SLOTS, 0);

#[map]
pub static ACTIVE_CONFIG: Array<u32> = Array::pinned(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(CounterId::COUNT, 0);

#[map]
pub static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULES, 0);

#[map]
pub static SMTP_BUCKET: Array<u64> = Array::pinned(SMTP_GLOBAL_SLOTS, 0);

#[map]
pub static SMTP_SOURCE_BUCKETS: HashMap<[u8; 16], u64> = HashMap::pinned(SMTP_SOURCE_CAPACITY, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

#[map]
pub static EVENT_BUCKET: Array<u64> = Array::pinned(1, 0);

#[map]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::pinned(EVENT_STATS_LEN, 0);

#[map]
pub static IFACE_COUNTERS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::pinned(IFACE_CAPACITY, 0);

#[map]
pub static IFACE_SLOTS: PerCpuArray<IfaceSlot> = PerCpuArray::pinned(IFACE_SLOT_COUNT, 0);
