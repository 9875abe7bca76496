//! Where host-network containers live in the cgroup tree, and which
//! container a cgroup is (docs/design.md, Cgroup hooks).
//!
//! The cgroup hooks are attached to the cgroups under which the engine
//! creates containers: a program attached to a parent is inherited by the
//! cgroups created below it afterwards, so each container is judged from its
//! first syscall. `auto` asks the engine and the host:
//!
//! - the parent of every container's cgroup (running at some point while
//!   `run` runs: a parent stays a target when its containers stop), except
//!   the root and
//!   `system.slice` (the systemd driver's scopes sit beside host services
//!   there: each `docker-<id>.scope` is attached as it appears instead, which
//!   is not race-free);
//! - with no container yet, the engine's driver default: `/docker` for the
//!   `cgroupfs` driver (created if missing, so the first container is covered
//!   too), the `docker-*.scope` pattern in `system.slice` for `systemd`;
//! - `kubepods.slice` and `kubepods` when they exist (Kubernetes), engine or
//!   not (`kubepods` names them alone, and requires one).
//!
//! Which tree: the mount of the cgroup2 hierarchy's root, found through
//! `/proc/self/mountinfo` ([`find_host_tree`]). In a container with its own
//! cgroup namespace (a pod's default) `/sys/fs/cgroup` is the container's
//! own cgroup, where no `kubepods` exists: the DaemonSet mounts the node's
//! tree over it (a hostPath volume), and a loader that sees only a
//! namespace's tree says so instead of attaching nowhere.
//!
//! Without an engine, `auto` finds only the Kubernetes cgroups: attach the
//! engine's cgroup by name (`--cgroup /docker`) to be in force before the
//! engine starts (docs/deployment.md, The boot window).

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::RwLock,
};

use serde::Serialize;

use crate::{
    endpoint::{
        containers::{self, ContainerInfo},
        engine::DockerEndpoint,
        identity::Container,
    },
    error::MissingCgroup,
    kernel::cgroup::{CgroupFs, unescape_octal},
    policy::cgroups::CgroupSpec,
};

pub use crate::policy::cgroups::KUBEPODS;
/// The systemd driver's container scopes.
pub const SYSTEMD_SLICE: &str = "system.slice";
pub const SYSTEMD_SCOPES: &str = "docker-*.scope";

/// What this process sees of the cgroup2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTree {
    /// The hierarchy's root is mounted here: every cgroup of the host.
    Found(CgroupFs),
    /// cgroup2 is mounted, but none of these mounts is the hierarchy's
    /// root: this process's own cgroup namespace (a container's
    /// `/sys/fs/cgroup`), or a bind of one cgroup.
    SubtreeOnly(Vec<PathBuf>),
    /// No cgroup2 at all: a cgroup v1-only host.
    NotMounted,
}

impl HostTree {
    pub fn fs(&self) -> Option<&CgroupFs> {
        match self {
            HostTree::Found(fs) => Some(fs),
            _ => None,
        }
    }

    /// Why the hooks cannot attach, when they cannot.
    pub fn problem(&self) -> Option<String> {
        match self {
            HostTree::Found(_) => None,
            HostTree::NotMounted => Some(
                "no cgroup2 file system is mounted (a cgroup v1-only host): the cgroup hooks \
                 cannot run, host-network containers are not covered"
                    .into(),
            ),
            HostTree::SubtreeOnly(mounts) => Some(format!(
                "the cgroup2 file system mounted at {} is not the host's tree but one \
                 cgroup of it (this container's own cgroup namespace, or a bind of a \
                 sub-cgroup): the cgroup hooks cannot reach the cgroups containers and pods \
                 are created under, so host-network containers are not covered. Mount the \
                 host's /sys/fs/cgroup into the loader's container (Kubernetes: a hostPath \
                 volume at /sys/fs/cgroup, as deploy/kubernetes/daemonset.yaml has; Docker: \
                 --cgroupns host, or -v /sys/fs/cgroup:/sys/fs/cgroup)",
                mounts
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The mount of the cgroup2 hierarchy's root that this process sees.
///
/// mountinfo's root field is relative to the reader's cgroup namespace: in
/// a container with its own namespace the host's tree, bind-mounted in,
/// shows as `/../../..` and the container's own cgroup as `/`. So the field
/// does not say which mount is the host's; the directory does: the root
/// cgroup is the only one without `cgroup.events` (`CFTYPE_NOT_ON_ROOT`,
/// kernel/cgroup/cgroup.c, since Linux 4.5).
pub fn find_host_tree() -> HostTree {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    host_tree_in(&info, is_hierarchy_root)
}

/// Whether the cgroup2 directory `dir` is the hierarchy's root.
pub fn is_hierarchy_root(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists() && !dir.join("cgroup.events").exists()
}

/// [`find_host_tree`] over a mountinfo text; `is_root` tells whether a
/// mount point shows the hierarchy's root.
pub fn host_tree_in(mountinfo: &str, is_root: impl Fn(&Path) -> bool) -> HostTree {
    let mut mounts: Vec<PathBuf> = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let Some(mountpoint) = left.split_whitespace().nth(4) else {
            continue;
        };
        let m = PathBuf::from(unescape_octal(mountpoint));
        if !mounts.contains(&m) {
            mounts.push(m);
        }
    }
    // A later mount on the same point hides an earlier one: the directory
    // decides, whichever line it came from.
    match mounts.iter().find(|m| is_root(m)) {
        Some(m) => HostTree::Found(CgroupFs::at(m.clone())),
        None if mounts.is_empty() => HostTree::NotMounted,
        None => HostTree::SubtreeOnly(mounts),
    }
}

/// Why `run` cannot do what `specs` ask of this tree: `kubepods` names a
/// cgroup that must exist (the kubelet creates it before any pod, the
/// DaemonSet's included), so its absence is a mistake to report, not a
/// target to wait for. A v1-only host is not one: the bridge filter runs
/// there and says host-network containers are not covered.
pub fn missing_required(specs: &[CgroupSpec], tree: &HostTree) -> Option<MissingCgroup> {
    if !specs.contains(&CgroupSpec::Kubepods) {
        return None;
    }
    match tree {
        HostTree::NotMounted => None,
        HostTree::SubtreeOnly(_) => Some(MissingCgroup::NotTheHostTree {
            problem: tree.problem().unwrap_or_default(),
        }),
        HostTree::Found(fs) if KUBEPODS.iter().all(|k| fs.id(k).is_none()) => {
            Some(MissingCgroup::Kubepods {
                tree: fs.mount().to_path_buf(),
            })
        }
        HostTree::Found(_) => None,
    }
}

/// One place the hooks attach, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub spec: CgroupSpec,
    /// "configured", or what `auto` found it from.
    pub origin: String,
    /// Created when missing, so a container the engine puts there later is
    /// judged from its first syscall (a literal path only).
    pub create: bool,
}

/// What the engine says of cgroups: its driver and the cgroups its
/// containers have run in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCgroups {
    pub driver: Option<&'static str>,
    /// Cgroups of containers seen (running at some point): `run` keeps
    /// adding, so a parent stays a target when its last container stops.
    pub container_cgroups: BTreeSet<String>,
}

impl EngineCgroups {
    pub fn from_containers(driver: Option<&'static str>, list: &[ContainerInfo]) -> Self {
        EngineCgroups {
            driver,
            container_cgroups: list.iter().filter_map(|c| c.cgroup.clone()).collect(),
        }
    }

    /// What `self` knew, and what `fresh` adds. Only the parent matters to
    /// the targets: one container per parent is kept.
    pub fn merge(&self, fresh: EngineCgroups) -> EngineCgroups {
        let mut all = self.container_cgroups.clone();
        for c in fresh.container_cgroups {
            if !all.iter().any(|k| parent_of(k) == parent_of(&c)) {
                all.insert(c);
            }
        }
        EngineCgroups {
            driver: fresh.driver.or(self.driver),
            container_cgroups: all,
        }
    }
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The targets `spec` stands for. `engine` is `None` without an engine.
pub fn resolve(specs: &[CgroupSpec], fs: &CgroupFs, engine: Option<&EngineCgroups>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut push = |t: Target| {
        if !out.iter().any(|o| o.spec == t.spec) {
            out.push(t);
        }
    };
    for spec in specs {
        if *spec == CgroupSpec::Kubepods {
            kubepods(fs, "kubepods", &mut push);
            continue;
        }
        if *spec != CgroupSpec::Auto {
            push(Target {
                spec: spec.clone(),
                origin: "configured".into(),
                create: matches!(spec, CgroupSpec::Path(_)),
            });
            continue;
        }
        let mut from_containers = false;
        if let Some(e) = engine {
            for cg in &e.container_cgroups {
                let parent = parent_of(cg);
                if parent.is_empty() {
                    // Never the root; coverage reports the container.
                    continue;
                }
                from_containers = true;
                if parent == SYSTEMD_SLICE {
                    push(systemd_scopes(
                        "auto: the engine's containers are scopes in system.slice",
                    ));
                } else {
                    push(Target {
                        spec: CgroupSpec::Path(parent.to_owned()),
                        origin: "auto: the parent of the engine's containers".into(),
                        create: false,
                    });
                }
            }
            if !from_containers {
                match e.driver {
                    Some("cgroupfs") => push(Target {
                        spec: CgroupSpec::Path("docker".into()),
                        origin: "auto: the engine's cgroupfs driver".into(),
                        create: true,
                    }),
                    Some("systemd") => push(systemd_scopes("auto: the engine's systemd driver")),
                    _ => {}
                }
            }
        }
        // No engine (yet): the engine's cgroups are not known, and a guess
        // (a /docker that exists) would not make the boot race-free either:
        // docs/deployment.md says which setups are.
        kubepods(fs, "auto", &mut push);
    }
    out
}

/// Kubernetes' pod cgroups that exist, as targets (never created).
fn kubepods(fs: &CgroupFs, why: &str, push: &mut impl FnMut(Target)) {
    for (k, driver) in KUBEPODS.into_iter().zip(["systemd", "cgroupfs"]) {
        if fs.id(k).is_some() {
            push(Target {
                spec: CgroupSpec::Path(k.into()),
                origin: format!("{why}: Kubernetes pods (the kubelet's {driver} cgroup driver)"),
                create: false,
            });
        }
    }
}

fn systemd_scopes(origin: &str) -> Target {
    Target {
        spec: CgroupSpec::Pattern {
            parent: SYSTEMD_SLICE.into(),
            name: SYSTEMD_SCOPES.into(),
        },
        origin: origin.into(),
        create: false,
    }
}

/// The cgroups a target names now: the path itself (if it exists), or the
/// children of the pattern's parent whose names match.
pub fn expand(fs: &CgroupFs, spec: &CgroupSpec) -> Vec<String> {
    match spec {
        CgroupSpec::Auto | CgroupSpec::Kubepods => Vec::new(),
        CgroupSpec::Path(p) => fs.id(p).map(|_| vec![p.clone()]).unwrap_or_default(),
        CgroupSpec::Pattern { parent, .. } => {
            let mut v: Vec<String> = std::fs::read_dir(fs.path(parent))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .map(|n| {
                    if parent.is_empty() {
                        n
                    } else {
                        format!("{parent}/{n}")
                    }
                })
                .filter(|rel| spec.matches(rel))
                .collect();
            v.sort();
            v
        }
    }
}

/// Whether cgroup `rel` is `root` or below it.
pub fn is_under(rel: &str, root: &str) -> bool {
    rel == root || rel.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// Finds the cgroup whose id is `id` at or below the cgroups `roots`
/// (a depth-first walk; the hooks only ever see cgroups below their own).
pub fn path_of_id(fs: &CgroupFs, roots: &[String], id: u64) -> Option<String> {
    fn walk(dir: &Path, rel: &str, id: u64, depth: usize) -> Option<String> {
        if std::fs::metadata(dir).ok()?.ino() == id {
            return Some(rel.to_owned());
        }
        if depth == 0 {
            return None;
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().into_string().ok()?;
            if let Some(found) = walk(&e.path(), &format!("{rel}/{name}"), id, depth - 1) {
                return Some(found);
            }
        }
        None
    }
    roots.iter().find_map(|r| walk(&fs.path(r), r, id, 6))
}

/// Who is behind a cgroup id seen in a drop event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupOwner {
    /// Below the cgroup2 mount; `None` when it is gone.
    pub cgroup: Option<String>,
    pub container: Option<Container>,
}

/// cgroup id -> its path and container, for drop events: the cgroup is
/// found below the attached cgroups, the container id read from its name
/// and its name asked of the engine. Remembered: cgroup ids are not reused
/// while the system runs.
#[derive(Debug, Default)]
pub struct CgroupNames {
    cache: RwLock<HashMap<u64, CgroupOwner>>,
}

const CACHE_LIMIT: usize = 4096;

impl CgroupNames {
    pub fn get(&self, id: u64) -> Option<CgroupOwner> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Looks `id` up (once per id): `roots` are the attached cgroups.
    pub async fn resolve(
        &self,
        id: u64,
        fs: &CgroupFs,
        roots: &[String],
        engine: Option<&DockerEndpoint>,
    ) -> CgroupOwner {
        if let Some(o) = self.get(id) {
            return o;
        }
        let cgroup = path_of_id(fs, roots, id);
        let mut container = None;
        if let (Some(rel), Some(endpoint)) = (&cgroup, engine)
            && let Some(cid) = containers::id_in_cgroup(rel)
            && let Ok(docker) = endpoint.connect().await
            && let Ok(i) = docker.inspect_container(cid, None).await
        {
            let info = ContainerInfo::from_inspect(&i);
            container = Some(Container {
                name: info.name,
                id: info.id,
                image: info.image,
                network: info.network_mode,
            });
        }
        let owner = CgroupOwner { cgroup, container };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        // A cgroup not found yet may be found later (a new root): keep
        // only what named something.
        if owner.cgroup.is_some() {
            cache.insert(id, owner.clone());
        }
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cgroups::parse_spec;

    fn fs() -> (std::path::PathBuf, CgroupFs) {
        // One tree per test: the tests run in parallel threads of one
        // process, and each removes its tree at the end.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("egress-cg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "docker/abc",
            "system.slice/docker-1.scope",
            "system.slice/docker-2.scope",
            "system.slice/ssh.service",
            "kubepods.slice",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        (dir.clone(), CgroupFs::at(dir))
    }

    #[test]
    fn auto_from_the_engine_and_the_host() {
        let (dir, fs) = fs();
        let auto = [CgroupSpec::Auto];
        // No engine: only Kubernetes' cgroups, which say what they are.
        let t = resolve(&auto, &fs, None);
        let specs: Vec<String> = t.iter().map(|t| t.spec.to_string()).collect();
        assert_eq!(specs, ["/kubepods.slice"]);
        // The engine's containers name their parent; the root never.
        let e = EngineCgroups {
            driver: Some("cgroupfs"),
            container_cgroups: ["egress-e2e-x/0123".into(), "loose".into()].into(),
        };
        let t = resolve(&auto, &fs, Some(&e));
        assert_eq!(t[0].spec, CgroupSpec::Path("egress-e2e-x".into()));
        assert!(
            !t.iter()
                .any(|t| t.spec == CgroupSpec::Path("docker".into()))
        );
        // No container yet: the driver's default, created for the first one.
        let e = EngineCgroups {
            driver: Some("cgroupfs"),
            container_cgroups: BTreeSet::new(),
        };
        let t = resolve(&auto, &fs, Some(&e));
        assert_eq!(t[0].spec, CgroupSpec::Path("docker".into()));
        assert!(t[0].create);
        // systemd: never system.slice itself.
        let e = EngineCgroups {
            driver: Some("systemd"),
            container_cgroups: ["system.slice/docker-1.scope".into()].into(),
        };
        let t = resolve(&auto, &fs, Some(&e));
        assert_eq!(t[0].spec.to_string(), "/system.slice/docker-*.scope");
        assert!(
            !t.iter()
                .any(|t| t.spec == CgroupSpec::Path("system.slice".into()))
        );
        // Once seen, a parent stays: no fallback to /docker when the last
        // container stops.
        let seen = EngineCgroups {
            driver: Some("cgroupfs"),
            container_cgroups: ["egress-e2e-x/0123".into()].into(),
        };
        let now = seen.merge(EngineCgroups {
            driver: Some("cgroupfs"),
            container_cgroups: BTreeSet::new(),
        });
        let t = resolve(&auto, &fs, Some(&now));
        assert_eq!(t[0].spec, CgroupSpec::Path("egress-e2e-x".into()));
        assert!(
            !t.iter()
                .any(|t| t.spec == CgroupSpec::Path("docker".into()))
        );
        // Configured entries are kept as they are, literal ones created.
        let t = resolve(&[parse_spec("/egress.slice").unwrap()], &fs, None);
        assert!(t[0].create && t[0].origin == "configured");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_host_tree_is_the_mount_of_the_root() {
        // In a cgroup namespace of its own (a pod): the host's tree, bound
        // in, reads `/../../..`; a fresh mount there reads `/` but is the
        // namespace's cgroup. The directory decides, not the field.
        let pod = "\
50 40 0:38 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw
61 50 0:38 /../../.. /host/cg\\040x rw - cgroup2 cgroup2 rw
";
        let host = Path::new("/host/cg x");
        assert_eq!(
            host_tree_in(pod, |d| d == host),
            HostTree::Found(CgroupFs::at(host))
        );
        let only_own = host_tree_in(pod, |_| false);
        assert_eq!(
            only_own,
            HostTree::SubtreeOnly(vec!["/sys/fs/cgroup".into(), host.into()])
        );
        let p = only_own.problem().unwrap();
        assert!(
            p.contains("not the host's tree") && p.contains("hostPath"),
            "{p}"
        );
        let v1 = "27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(host_tree_in(v1, |_| true), HostTree::NotMounted);
        assert!(HostTree::NotMounted.problem().unwrap().contains("v1-only"));
        // This process's own tree: found, whatever the test runs in.
        if let HostTree::Found(fs) = find_host_tree() {
            assert!(is_hierarchy_root(fs.mount()));
            assert!(fs.id("").is_some());
        }
    }

    #[test]
    fn kubepods_is_the_drivers_cgroup_and_required() {
        let (dir, fs) = fs();
        let k = [CgroupSpec::Kubepods];
        let tree = HostTree::Found(fs.clone());
        // The systemd driver's slice (the fixture has it).
        let t = resolve(&k, &fs, None);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].spec, CgroupSpec::Path("kubepods.slice".into()));
        assert!(!t[0].create && t[0].origin.contains("systemd"), "{t:?}");
        assert_eq!(missing_required(&k, &tree), None);
        // cgroupfs: /kubepods.
        std::fs::remove_dir(dir.join("kubepods.slice")).unwrap();
        std::fs::create_dir(dir.join("kubepods")).unwrap();
        let t = resolve(&k, &fs, None);
        assert_eq!(t[0].spec, CgroupSpec::Path("kubepods".into()));
        assert!(t[0].origin.contains("cgroupfs"), "{t:?}");
        // Neither: nothing to attach, and an error that says where it looked.
        std::fs::remove_dir(dir.join("kubepods")).unwrap();
        assert!(resolve(&k, &fs, None).is_empty());
        let e = missing_required(&k, &tree).unwrap().to_string();
        assert!(
            e.contains("/kubepods.slice") && e.contains(&dir.display().to_string()),
            "{e}"
        );
        // `auto` waits instead; a v1-only host runs the bridges.
        assert_eq!(missing_required(&[CgroupSpec::Auto], &tree), None);
        assert_eq!(missing_required(&k, &HostTree::NotMounted), None);
        let ns = HostTree::SubtreeOnly(vec!["/sys/fs/cgroup".into()]);
        assert!(
            missing_required(&k, &ns)
                .unwrap()
                .to_string()
                .contains("not the host's tree")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn patterns_expand_to_what_exists() {
        let (dir, fs) = fs();
        let scopes = parse_spec("/system.slice/docker-*.scope").unwrap();
        assert_eq!(
            expand(&fs, &scopes),
            ["system.slice/docker-1.scope", "system.slice/docker-2.scope"]
        );
        assert_eq!(expand(&fs, &CgroupSpec::Path("docker".into())), ["docker"]);
        assert!(expand(&fs, &CgroupSpec::Path("nope".into())).is_empty());
        let id = fs.id("docker/abc").unwrap();
        assert_eq!(
            path_of_id(&fs, &["docker".into()], id).as_deref(),
            Some("docker/abc")
        );
        assert_eq!(path_of_id(&fs, &["kubepods.slice".into()], id), None);
        assert!(is_under("docker/abc", "docker") && is_under("docker", "docker"));
        assert!(!is_under("dockerx/abc", "docker"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
