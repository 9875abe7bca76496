//! Typed handles on the pinned maps, opened by path so any process (the
//! running loader, `counters`, `status`) sees the same kernel objects.

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap, RingBuf,
};
use egress_ebpf_common::{
    config::PolicyConfig,
    counters::{Counter, IfaceCounters, IfaceSlot},
    endpoint::{Endpoint, ExceptionKey},
    maps as names,
    prefilter::Prefilter,
    rules::BlockRule,
};

use crate::{
    error::{Error, MapShape},
    kernel::pins::PinDir,
};

/// Why nothing of this build's layout is pinned at `pins`: nothing at all,
/// or another version's layout.
pub fn not_loaded(pins: &PinDir) -> Error {
    let dir = pins.root().to_path_buf();
    let ours = crate::kernel::pins::LAYOUT_VERSION;
    match pins.pinned_layouts().last() {
        Some(&found) if found > ours => Error::NewerLayout { dir, found, ours },
        Some(&found) if found != ours => Error::OtherLayout { dir, found, ours },
        _ => Error::NotLoaded(dir),
    }
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, Error> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(not_loaded(pins));
    }
    let data = MapData::from_pin(&path).map_err(|e| Error::map(name, e))?;
    Map::from_map_data(data).map_err(|e| Error::map(name, e))
}

macro_rules! typed {
    ($pins:expr, $name:expr) => {
        open($pins, $name)?
            .try_into()
            .map_err(|e| Error::map($name, e))?
    };
}

/// What `apply` writes.
pub struct PolicyMaps {
    pub blocked_v4: LpmTrie<MapData, [u8; 4], BlockRule>,
    pub blocked_v6: LpmTrie<MapData, [u8; 16], BlockRule>,
    /// Which /16s no blocked prefix overlaps (egress_ebpf_common::prefilter).
    pub prefilter: Array<MapData, Prefilter>,
    pub policy_config: Array<MapData, PolicyConfig>,
    pub active_config: Array<MapData, u32>,
    pub rule_counters: PerCpuArray<MapData, Counter>,
}

impl PolicyMaps {
    pub fn open(pins: &PinDir) -> Result<Self, Error> {
        Ok(Self {
            blocked_v4: typed!(pins, names::BLOCKED_V4),
            blocked_v6: typed!(pins, names::BLOCKED_V6),
            prefilter: typed!(pins, names::PREFILTER),
            policy_config: typed!(pins, names::POLICY_CONFIG),
            active_config: typed!(pins, names::ACTIVE_CONFIG),
            rule_counters: typed!(pins, names::RULE_COUNTERS),
        })
    }
}

pub fn counters(pins: &PinDir) -> Result<PerCpuArray<MapData, Counter>, Error> {
    Ok(typed!(pins, names::COUNTERS))
}

/// Drop events lost and suppressed, per CPU (indices `EVENTS_LOST`,
/// `EVENTS_SUPPRESSED` of the common crate's `events`).
pub fn event_stats(pins: &PinDir) -> Result<PerCpuArray<MapData, u64>, Error> {
    Ok(typed!(pins, names::EVENT_STATS))
}

/// Replies of rejecting rules, per CPU, indexed by the common crate's
/// `reply::ReplyOutcome`.
pub fn reply_stats(pins: &PinDir) -> Result<PerCpuArray<MapData, u64>, Error> {
    Ok(typed!(pins, names::REPLY_STATS))
}

/// The reply budget's GCRA TAT (one entry).
pub fn reply_bucket(pins: &PinDir) -> Result<Array<MapData, u64>, Error> {
    Ok(typed!(pins, names::REPLY_BUCKET))
}

/// The SMTP buckets' GCRA TATs: global (slot 0) and overflow (slot 1).
pub fn smtp_bucket(pins: &PinDir) -> Result<Array<MapData, u64>, Error> {
    Ok(typed!(pins, names::SMTP_BUCKET))
}

/// The drop events' ring buffer.
pub fn events(pins: &PinDir) -> Result<RingBuf<MapData>, Error> {
    Ok(typed!(pins, names::EVENTS))
}

/// Per-interface counters of the interfaces that did not get a slot.
pub fn iface_counters(pins: &PinDir) -> Result<PerCpuHashMap<MapData, u32, IfaceCounters>, Error> {
    Ok(typed!(pins, names::IFACE_COUNTERS))
}

/// The direct-mapped per-interface counters.
pub fn iface_slots(pins: &PinDir) -> Result<PerCpuArray<MapData, IfaceSlot>, Error> {
    Ok(typed!(pins, names::IFACE_SLOTS))
}

/// The verdicts of each cgroup hook, by `hook::Hook`.
pub fn hook_counters(pins: &PinDir) -> Result<PerCpuArray<MapData, IfaceCounters>, Error> {
    Ok(typed!(pins, names::HOOK_COUNTERS))
}

/// The host's network namespace cookie, which the cgroup hooks compare.
pub fn host_netns_cookie(pins: &PinDir) -> Result<Array<MapData, u64>, Error> {
    Ok(typed!(pins, names::HOST_NETNS_COOKIE))
}

/// The per-source SMTP buckets (GCRA TAT by v4-mapped source address).
pub fn smtp_source_buckets(pins: &PinDir) -> Result<HashMap<MapData, [u8; 16], u64>, Error> {
    Ok(typed!(pins, names::SMTP_SOURCE_BUCKETS))
}

/// What the endpoint layer writes and reads: the attached endpoints, their
/// counters, exceptions and SMTP buckets.
pub struct EndpointMaps {
    pub endpoints: Array<MapData, Endpoint>,
    pub overflow: HashMap<MapData, u32, Endpoint>,
    pub counters: PerCpuArray<MapData, IfaceCounters>,
    pub exceptions: HashMap<MapData, ExceptionKey, u32>,
    pub buckets: HashMap<MapData, u32, u64>,
}

impl EndpointMaps {
    pub fn open(pins: &PinDir) -> Result<Self, Error> {
        Ok(Self {
            endpoints: typed!(pins, names::ENDPOINTS),
            overflow: typed!(pins, names::ENDPOINT_OVERFLOW),
            counters: typed!(pins, names::ENDPOINT_COUNTERS),
            exceptions: typed!(pins, names::EXCEPTIONS),
            buckets: typed!(pins, names::SMTP_ENDPOINT_BUCKETS),
        })
    }
}

/// The layout this build expects of each pinned map: (name, key size, value
/// size, max entries), from the common crate's one list of maps. A pin made
/// by a build with another layout would be misread, so the loader refuses it.
pub fn expected_layout() -> impl Iterator<Item = (&'static str, u32, u32, u32)> {
    names::LAYOUT
        .iter()
        .map(|m| (m.name, m.key_size, m.value_size, m.max_entries))
}

/// Checks the maps already pinned in `pins` against [`expected_layout`].
pub fn check_pinned_layout(pins: &PinDir) -> Result<(), Error> {
    for (name, key, value, max) in expected_layout() {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| Error::map(name, e))?;
        let found = MapShape {
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        let needed = MapShape {
            key_size: key,
            value_size: value,
            max_entries: max,
        };
        if found != needed {
            return Err(Error::IncompatiblePins {
                dir: pins.root().to_path_buf(),
                map: name,
                found,
                needed,
            });
        }
    }
    Ok(())
}
