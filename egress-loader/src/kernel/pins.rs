//! Where everything lives on bpffs; nothing else spells a path.
//!
//! ```text
//! <pin dir>/layout-<N>/<MAP NAME>   every map (policy, counters, buckets), of map layout N
//! <pin dir>/links/<ifname>          one TCX link per filtered interface (the interface's name,
//!                                   `%` and `.` percent-encoded: `flannel.1` is `flannel%2E1`)
//! <pin dir>/cgroups/<cgroup>/<hook> one link per cgroup hook and cgroup (the cgroup's path
//!                                   below the cgroup2 mount, `%`, `/` and `.` percent-encoded)
//! <pin dir>/maps/<MAP NAME>         the maps of loaders before layouts were numbered (layout 1)
//! ```
//!
//! The maps are versioned and the links are not: a loader with a newer
//! layout creates its maps beside the old ones and swaps its program into
//! the same links (`kernel::layout`). A link pinned before names were
//! encoded is read back as it is: its name has no `.` (bpffs refused it)
//! and no `%` (the kernel refuses it in an interface's name), so it is its
//! own encoding.

use std::path::{Path, PathBuf};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress";
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// The layout of the loaders that pinned their maps in `<pin dir>/maps/`.
pub const LEGACY_LAYOUT: u32 = 1;
/// This build's map layout. Bumped by hand whenever the layout table
/// (`kernel::layout::table`) changes; a test fails until it is
/// (`kernel::layout`, `the_layout_table_has_its_version`).
pub const LAYOUT_VERSION: u32 = 3;
/// `statfs` magic of bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A name as one bpffs file name: `%`, `/` and `.` percent-encoded (`%25`,
/// `%2F`, `%2E`), every other character as it is. bpffs refuses a name with
/// a dot (EPERM: kernel/bpf/inode.c, bpf_lookup), and a cgroup's path has
/// slashes. Distinct names give distinct pin names ([`unescape_pin_name`]
/// reads each one back).
pub fn escape_pin_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

/// The name [`escape_pin_name`] made `pin` from. Any other `%` (one no
/// encoding of this module wrote) stays as it is.
pub fn unescape_pin_name(pin: &str) -> String {
    let mut out = String::with_capacity(pin.len());
    let mut rest = pin;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = &rest[at..];
        let decoded = match code.get(..3) {
            Some("%25") => Some('%'),
            Some("%2F") => Some('/'),
            Some("%2E") => Some('.'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &code[3..];
            }
            None => {
                out.push('%');
                rest = &code[1..];
            }
        }
    }
    out.push_str(rest);
    out
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
    /// The pinned link of interface `ifname`.
    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links().join(escape_pin_name(ifname))
    }
    /// The cgroup hooks' links, one directory per cgroup.
    pub fn cgroup_links(&self) -> PathBuf {
        self.root.join("cgroups")
    }
    /// The links of cgroup `rel` (relative to the cgroup2 mount).
    pub fn cgroup_link_dir(&self, rel: &str) -> PathBuf {
        self.cgroup_links().join(escape_pin_name(rel))
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
            .map(|n| unescape_pin_name(&n))
            .collect();
        v.sort();
        v
    }
    /// Whether a filter has been loaded here (its maps are pinned).
    pub fn is_loaded(&self) -> bool {
        self.map(egress_ebpf_common::maps::COUNTERS).exists()
    }
    /// Interface names that have a pinned link (the names, not the pins'
    /// file names).
    pub fn pinned_links(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| unescape_pin_name(&n))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Names the kernel accepts for an interface (no `/`, `:`, whitespace;
    /// `%` only here: the kernel refuses it) and cgroup paths.
    const NAMES: &[&str] = &[
        "docker0",
        "flannel.1",
        "dk.br0",
        "eth0.100",
        "vxlan.calico",
        "a.",
        ".a",
        "a..b",
        "%",
        "%%",
        "%2E",
        "%2e",
        "%25",
        "%252E",
        "%2F",
        "a%2",
        "a%2E.",
        "%.%",
        "system.slice/docker-ab.scope",
        "a%2Fb/c",
        "/",
        "é.ü",
    ];

    #[test]
    fn pin_names_round_trip_and_are_valid_on_bpffs() {
        for name in NAMES {
            let pin = escape_pin_name(name);
            assert!(
                !pin.is_empty() && !pin.contains(['.', '/']),
                "{name:?}: {pin:?}"
            );
            assert_eq!(unescape_pin_name(&pin), *name, "{pin:?}");
        }
        // IFNAMSIZ - 1 bytes, each one escaped, stays below NAME_MAX (255).
        assert_eq!(escape_pin_name(&".".repeat(15)).len(), 45);
    }

    #[test]
    fn distinct_names_have_distinct_pins() {
        let mut pins = HashSet::new();
        for name in NAMES {
            assert!(pins.insert(escape_pin_name(name)), "{name:?}");
        }
        // Every string of up to 4 characters over the characters the
        // encoding writes or reads.
        let alphabet = ['%', '2', '5', 'E', 'F', '.', '/', 'a'];
        let mut names = vec![String::new()];
        let mut pins = HashSet::new();
        for _ in 0..4 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            for name in &names {
                let pin = escape_pin_name(name);
                assert_eq!(unescape_pin_name(&pin), *name);
                assert!(pins.insert(pin), "{name:?}");
            }
        }
    }

    /// Links pinned before names were encoded are read back as they are:
    /// their names had no `.` (bpffs refused it) and no `%` (the kernel
    /// refuses it in an interface name).
    #[test]
    fn names_pinned_before_the_encoding_read_back_unchanged() {
        for old in [
            "docker0",
            "br-1a2b3c4d5e6f",
            "veth1a2b3c",
            "cali+x",
            "x@y#z",
            "é-ü",
        ] {
            assert_eq!(escape_pin_name(old), old);
            assert_eq!(unescape_pin_name(old), old);
        }
        let pins = PinDir::new("/p");
        assert_eq!(pins.link("docker0"), Path::new("/p/links/docker0"));
        assert_eq!(pins.link("flannel.1"), Path::new("/p/links/flannel%2E1"));
    }

    /// What lists pins gives back names, not file names (a plain directory
    /// stands in for bpffs).
    #[test]
    fn listed_pins_are_names() {
        let root = std::env::temp_dir().join(format!("egress-pins-test-{}", std::process::id()));
        let pins = PinDir::new(&root);
        for name in ["docker0", "flannel.1", "dk.br0"] {
            let path = pins.link(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        std::fs::create_dir_all(pins.cgroup_link_dir("system.slice/docker-ab.scope")).unwrap();
        let links = pins.pinned_links();
        let cgroups = pins.pinned_cgroups();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(links, ["dk.br0", "docker0", "flannel.1"]);
        assert_eq!(cgroups, ["system.slice/docker-ab.scope"]);
    }

    /// The cgroup pins keep the spelling they had (`%`, `/`, `.` encoded).
    #[test]
    fn cgroup_pins_keep_their_spelling() {
        assert_eq!(
            escape_pin_name("system.slice/docker-ab.scope"),
            "system%2Eslice%2Fdocker-ab%2Escope"
        );
        assert_eq!(escape_pin_name("a%2Fb/c"), "a%252Fb%2Fc");
        let pins = PinDir::new("/p");
        assert_eq!(
            pins.cgroup_link("docker/x.y", "connect4"),
            Path::new("/p/cgroups/docker%2Fx%2Ey/connect4")
        );
    }

    /// A `%` this module did not write stays as it is.
    #[test]
    fn unknown_percent_sequences_stay() {
        for pin in ["%", "a%", "%2", "%2e", "%41", "%%"] {
            assert_eq!(unescape_pin_name(pin), pin);
        }
        assert_eq!(unescape_pin_name("%%2E"), "%.");
    }
}
