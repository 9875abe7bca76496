//! Where everything lives on bpffs; nothing else spells a path.
//!
//! ```text
//! <pin dir>/layout-<N>/<MAP NAME>   every map (policy, counters, buckets), of map layout N
//! <pin dir>/links/<ifname>          one TCX link per filtered interface
//! <pin dir>/cgroups/<cgroup>/<hook> one link per cgroup hook and cgroup (the cgroup's path
//!                                   below the cgroup2 mount, `/` written `%2F`, `.` `%2E`)
//! <pin dir>/maps/<MAP NAME>         the maps of loaders before layouts were numbered (layout 1)
//! ```
//!
//! The maps are versioned and the links are not: a loader with a newer
//! layout creates its maps beside the old ones and swaps its program into
//! the same links (`kernel::layout`).

use std::path::{Path, PathBuf};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress";
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// The layout of the loaders that pinned their maps in `<pin dir>/maps/`.
pub const LEGACY_LAYOUT: u32 = 1;
/// This build's map layout. Bumped by hand whenever the layout table
/// (`kernel::layout::table`) changes; a test fails until it is
/// (`kernel::layout`, `the_layout_table_has_its_version`).
pub const LAYOUT_VERSION: u32 = 2;
/// `statfs` magic of bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A cgroup path as one bpffs file name: `%`, `/` and `.` percent-encoded
/// (bpffs refuses names with a dot, EPERM: they are reserved,
/// kernel/bpf/inode.c, bpf_lookup).
pub fn escape_cgroup(rel: &str) -> String {
    rel.replace('%', "%25")
        .replace('/', "%2F")
        .replace('.', "%2E")
}

pub fn unescape_cgroup(name: &str) -> String {
    name.replace("%2E", ".")
        .replace("%2F", "/")
        .replace("%25", "%")
}

#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The maps of this build's layout.
    pub fn maps(&self) -> PathBuf {
        self.layout_dir(LAYOUT_VERSION)
    }
    /// Where the maps of layout `version` are pinned.
    pub fn layout_dir(&self, version: u32) -> PathBuf {
        if version == LEGACY_LAYOUT {
            self.root.join("maps")
        } else {
            self.root.join(format!("layout-{version}"))
        }
    }
    /// The map layouts pinned here (those whose directory exists), oldest first.
    pub fn pinned_layouts(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name == "maps" {
                    return Some(LEGACY_LAYOUT);
                }
                name.strip_prefix("layout-")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links().join(ifname)
    }
    /// The cgroup hooks' links, one directory per cgroup.
    pub fn cgroup_links(&self) -> PathBuf {
        self.root.join("cgroups")
    }
    /// The links of cgroup `rel` (relative to the cgroup2 mount).
    pub fn cgroup_link_dir(&self, rel: &str) -> PathBuf {
        self.cgroup_links().join(escape_cgroup(rel))
    }
    pub fn cgroup_link(&self, rel: &str, hook: &str) -> PathBuf {
        self.cgroup_link_dir(rel).join(hook)
    }
    /// The cgroups that have pinned links (relative paths).
    pub fn pinned_cgroups(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cgroup_links())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| unescape_cgroup(&n))
            .collect();
        v.sort();
        v
    }
    /// Whether a filter has been loaded here (its maps are pinned).
    pub fn is_loaded(&self) -> bool {
        self.map(egress_ebpf_common::maps::COUNTERS).exists()
    }
    /// Interface names that have a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_round_trip() {
        for rel in [
            "docker",
            "system.slice/docker-ab.scope",
            "a%2Fb/c",
            "%",
            "a%2E.",
        ] {
            let e = escape_cgroup(rel);
            assert!(!e.contains('/') && !e.contains('.'), "{e}");
            assert_eq!(unescape_cgroup(&e), rel);
        }
    }
}
