//! Map layouts and upgrades without a gap.
//!
//! Each build pins its maps under `<pin dir>/layout-<LAYOUT_VERSION>/`
//! (`kernel::pins`). A loader that finds an older layout pinned does not
//! refuse, and does not detach: it
//!
//! 1. creates its own layout directory beside the old one, pinning there
//!    the very map objects of the old layout that hold state (counters,
//!    buckets) and whose kernel layout is unchanged ([`CARRIED`]), so the
//!    counts go on without a lost update, even from the old program still
//!    running;
//! 2. loads its program with fresh policy maps (the old program never reads
//!    a policy written in the new format), and the daemon writes the policy;
//! 3. swaps its program into the existing links (BPF_LINK_UPDATE, or the
//!    netlink filter replaced in place), as a restart does;
//! 4. then removes the old layout's pins ([`remove_older`]).
//!
//! A layout newer than this build's is refused before anything changes: a
//! downgrade cannot know what the newer maps mean.

use aya::maps::{MapData, MapInfo};
use egress_ebpf_common::maps as names;
use log::info;

use crate::{
    error::Error,
    kernel::{
        maps,
        pins::{LAYOUT_VERSION, PinDir},
    },
};

/// The maps whose contents are state worth keeping across an upgrade: the
/// counters (per interface, per endpoint and per cgroup hook) and the token
/// buckets, and the endpoints (their counters slots, and the exceptions of
/// running containers, which stay in force until the new loader's engine
/// lists the containers: each entry is tagged with the policy that wrote it,
/// and a changed policy closes them). The policy maps are written anew from
/// the configuration (`HOST_NETNS_COOKIE` too, at each start); the ring
/// buffer has no reader left to serve.
pub const CARRIED: &[&str] = &[
    names::ENDPOINTS,
    names::ENDPOINT_OVERFLOW,
    names::ENDPOINT_COUNTERS,
    names::EXCEPTIONS,
    names::SMTP_ENDPOINT_BUCKETS,
    names::COUNTERS,
    names::RULE_COUNTERS,
    names::SMTP_BUCKET,
    names::SMTP_SOURCE_BUCKETS,
    names::EVENT_BUCKET,
    names::EVENT_STATS,
    names::IFACE_COUNTERS,
    names::IFACE_SLOTS,
    names::HOOK_COUNTERS,
    names::REPLY_BUCKET,
    names::REPLY_STATS,
];

/// The layout table of this build: (name, key size, value size, max entries).
pub fn table() -> Vec<(&'static str, u32, u32, u32)> {
    maps::expected_layout().collect()
}

/// FNV-1a over the table, for the test that keeps [`LAYOUT_VERSION`] honest.
pub fn fingerprint(table: &[(&str, u32, u32, u32)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, key, value, max) in table {
        eat(name.as_bytes());
        eat(&[0]);
        for n in [key, value, max] {
            eat(&n.to_le_bytes());
        }
    }
    h
}

/// What [`prepare`] found and did.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Older layouts still pinned; [`remove_older`] removes them once every
    /// link runs this build's program.
    pub older: Vec<u32>,
    /// The maps carried from the older layout (names).
    pub carried: Vec<&'static str>,
    /// The layout migrated from, if this run created its layout directory.
    pub migrated_from: Option<u32>,
}

/// (key size, value size, max entries) this build gives a map.
fn table_shape(name: &str) -> Option<(u32, u32, u32)> {
    table()
        .into_iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, k, v, m)| (k, v, m))
}

/// Before loading: refuses a newer layout, checks this layout's pins, and
/// on an upgrade carries the old layout's state maps into this one.
pub fn prepare(pins: &PinDir) -> Result<Prepared, Error> {
    let layouts = pins.pinned_layouts();
    if let Some(&newer) = layouts.iter().find(|&&v| v > LAYOUT_VERSION) {
        return Err(Error::NewerLayout {
            dir: pins.root().to_path_buf(),
            found: newer,
            ours: LAYOUT_VERSION,
        });
    }
    let older: Vec<u32> = layouts
        .iter()
        .copied()
        .filter(|&v| v < LAYOUT_VERSION)
        .collect();
    let mut prepared = Prepared {
        older: older.clone(),
        ..Default::default()
    };
    let ours = pins.maps();
    if ours.exists() {
        // A restart, or an upgrade interrupted after its maps were made:
        // this layout's maps are the ones to adopt.
        maps::check_pinned_layout(pins)?;
        return Ok(prepared);
    }
    let Some(&from) = older.last() else {
        return Ok(prepared);
    };
    std::fs::create_dir_all(&ours)?;
    let source = pins.layout_dir(from);
    for &name in CARRIED {
        let old = source.join(name);
        if !old.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&old).map_err(|e| Error::map(name, e))?;
        let want = table_shape(name);
        let matches = want == Some((info.key_size(), info.value_size(), info.max_entries()));
        if !matches {
            info!(
                "{name}: layout {from} has key/value/entries {}/{}/{}, this build {want:?}: starting it empty",
                info.key_size(),
                info.value_size(),
                info.max_entries()
            );
            continue;
        }
        let data = MapData::from_pin(&old).map_err(|e| Error::map(name, e))?;
        data.pin(ours.join(name)).map_err(|source| Error::Pin {
            context: format!("{name}: pinning layout {from}'s map in {}", ours.display()),
            source,
        })?;
        prepared.carried.push(name);
    }
    prepared.migrated_from = Some(from);
    Ok(prepared)
}

/// Removes the pins of the older layouts: called once every link runs this
/// build's program, so nothing that enforces depends on them (an old
/// program still in some link keeps its maps alive by reference).
pub fn remove_older(pins: &PinDir, older: &[u32]) -> Result<usize, Error> {
    let mut removed = 0;
    for &v in older {
        let dir = pins.layout_dir(v);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
        std::fs::remove_dir(&dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint of the layout table that [`LAYOUT_VERSION`] names.
    /// Changing a map (name, sizes, capacity) changes the table: bump
    /// LAYOUT_VERSION in kernel/pins.rs and set this to the new value. A
    /// loader then migrates pins of the previous layout instead of misreading
    /// them, and an older loader refuses the new ones. A layout that no
    /// release has shipped yet keeps its number: only the fingerprint moves.
    const LAYOUT_FINGERPRINT: (u32, u64) = (3, 0x58e6_b568_ca24_e03d);

    #[test]
    fn the_layout_table_has_its_version() {
        let now = fingerprint(&table());
        assert_eq!(
            (LAYOUT_VERSION, now),
            LAYOUT_FINGERPRINT,
            "the map layout table changed (fingerprint {now:#x}): bump LAYOUT_VERSION in \
             kernel/pins.rs to {} and set LAYOUT_FINGERPRINT to ({}, {now:#x})",
            LAYOUT_FINGERPRINT.0 + 1,
            LAYOUT_FINGERPRINT.0 + 1
        );
    }

    #[test]
    fn every_carried_map_is_in_the_table() {
        for name in CARRIED {
            assert!(table_shape(name).is_some(), "{name}");
        }
        assert!(!CARRIED.contains(&names::BLOCKED_V4) && !CARRIED.contains(&names::POLICY_CONFIG));
    }

    #[test]
    fn the_fingerprint_sees_every_field() {
        let t = vec![("A", 4, 8, 16)];
        let f = fingerprint(&t);
        for changed in [
            ("B", 4, 8, 16),
            ("A", 5, 8, 16),
            ("A", 4, 9, 16),
            ("A", 4, 8, 17),
        ] {
            assert_ne!(fingerprint(&[changed]), f, "{changed:?}");
        }
    }
}
