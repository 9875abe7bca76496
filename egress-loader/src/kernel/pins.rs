//! Where everything lives on bpffs; nothing else spells a path.
//!
//! ```text
//! <pin dir>/maps/<MAP NAME>    every map (policy, counters, buckets)
//! <pin dir>/links/<ifname>     one TCX link per filtered interface
//! ```

use std::path::{Path, PathBuf};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress";
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `statfs` magic of bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

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
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
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
