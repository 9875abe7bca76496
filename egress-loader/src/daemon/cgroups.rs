//! Keeping the cgroup hooks attached where containers run: each target of
//! `attach.cgroups` resolved (`auto` from the engine), literal paths created
//! when missing (so the engine's next container is judged from its first
//! syscall), patterns followed as cgroups appear (inotify on their parent,
//! and the rescan), links released when their cgroup goes.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use egress_ebpf_common::hook::Hook;
use log::{error, info, warn};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{
    endpoint::{
        cgroup::{EngineCgroups, HostTree, Target, expand, find_host_tree, resolve},
        coverage::Attached,
    },
    kernel::{
        cgroup::{self as kcgroup, CgroupFs, Outcome},
        maps,
        pins::PinDir,
    },
    policy::cgroups::CgroupSpec,
};

/// The cgroup hooks' state in `run`.
pub struct CgroupHooks {
    /// The host's cgroup2 tree, as this process sees it.
    tree: HostTree,
    fs: Option<CgroupFs>,
    /// Why the hooks cannot run here, if they cannot (no cgroup2, no netns
    /// cookie, every program refused).
    problem: Option<String>,
    /// Hooks the kernel refused, with its reason.
    refused: Vec<(Hook, kcgroup::HookLoadError)>,
    /// The targets in force, and the cgroups attached (path -> cgroup id).
    targets: Vec<Target>,
    attached: BTreeMap<String, u64>,
    /// Paths that could not be created (said once).
    failed: Vec<String>,
    watcher: Option<RecommendedWatcher>,
    watched: Vec<PathBuf>,
}

impl CgroupHooks {
    /// Loads the cgroup programs and writes the host's netns cookie. Never
    /// fails: what is missing is said and kept in `problem`/`refused`.
    pub fn start(
        ebpf: &mut aya::Ebpf,
        pins: &PinDir,
        wanted: bool,
        changes: mpsc::UnboundedSender<()>,
    ) -> Self {
        let tree = find_host_tree();
        let mut s = CgroupHooks {
            fs: tree.fs().cloned(),
            tree,
            problem: None,
            refused: Vec::new(),
            targets: Vec::new(),
            attached: BTreeMap::new(),
            failed: Vec::new(),
            watcher: None,
            watched: Vec::new(),
        };
        if !wanted {
            s.problem =
                Some("the cgroup hooks are turned off (attach.cgroups = [\"none\"])".into());
            return s;
        }
        if let Some(p) = s.tree.problem() {
            warn!("{p}");
            s.problem = Some(p);
            return s;
        }
        match kcgroup::host_netns_cookie() {
            Ok(cookie) => {
                if let Err(e) = maps::host_netns_cookie(pins).and_then(|mut m| {
                    m.set(0, cookie, 0)
                        .map_err(|e| crate::error::Error::map("HOST_NETNS_COOKIE", e))
                }) {
                    s.problem = Some(format!("writing the host's netns cookie: {e}"));
                }
            }
            Err(e) => {
                s.problem = Some(format!(
                    "this kernel does not give the network namespace cookie (SO_NETNS_COOKIE, \
                     Linux 5.14): {e}; the cgroup hooks cannot tell host-network containers \
                     from bridged ones, so they are not attached"
                ));
            }
        }
        if let Some(p) = &s.problem {
            warn!("{p}");
            return s;
        }
        for (hook, result) in kcgroup::load_programs(ebpf) {
            if let Err(e) = result {
                warn!("{}: the kernel refused it ({e})", hook.name());
                s.refused.push((hook, e));
            }
        }
        if kcgroup::loaded_hooks(ebpf).is_empty() {
            s.problem = Some("the kernel refused every cgroup program".into());
        }
        // Once, at start: the door the hooks leave open (README, "Raw
        // frames and the BPF LSM").
        info!(
            "cgroup hooks: AF_PACKET sockets are not refused (no BPF LSM program:              none could be loaded and tested where the filter is built); a              host-network container holding CAP_NET_RAW can send raw frames, and              status and verify say so for each"
        );
        s.watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(e) = res
                && matches!(e.kind, EventKind::Create(_) | EventKind::Remove(_))
            {
                let _ = changes.send(());
            }
        })
        .map_err(|e| {
            warn!("cannot watch cgroup directories ({e}); new cgroups are found by the rescan")
        })
        .ok();
        s
    }

    /// What the kernel refused, as coverage reports it.
    pub fn caveats(&self) -> Vec<String> {
        self.refused
            .iter()
            .map(|(h, _)| match h {
                Hook::CgroupSkb => {
                    "raw and ICMP sockets not judged: this kernel refused cgroup_skb/egress \
                     (bpf_get_netns_cookie there needs Linux 6.15); UDP is judged at sendto() \
                     by cgroup/sendmsg4/6 instead"
                        .to_owned()
                }
                h => format!("{} not judged: the kernel refused it", h.name()),
            })
            .collect()
    }

    /// Attaches to the cgroups the targets name now, forgets the ones gone,
    /// detaches from the ones no longer named. `settled`: the targets are
    /// final (the engine answered, or none is asked), so a pinned link of a
    /// cgroup that is not a target is released; until then a previous run's
    /// links stay in force.
    pub fn reconcile(
        &mut self,
        ebpf: &mut aya::Ebpf,
        pins: &PinDir,
        specs: &[CgroupSpec],
        engine: Option<&EngineCgroups>,
        settled: bool,
    ) {
        let Some(fs) = self.fs.clone() else { return };
        if self.problem.is_some() {
            return;
        }
        let targets = resolve(specs, &fs, engine);
        for t in &targets {
            if !self.targets.contains(t) {
                info!("cgroup hooks: target {} ({})", t.spec, t.origin);
            }
        }
        self.targets = targets;
        let mut wanted: Vec<String> = Vec::new();
        let mut parents: Vec<PathBuf> = Vec::new();
        for t in &self.targets {
            if let CgroupSpec::Path(p) = &t.spec
                && t.create
                && fs.id(p).is_none()
                && !self.failed.contains(p)
            {
                match std::fs::create_dir_all(fs.path(p)) {
                    Ok(()) => warn!(
                        "cgroup /{p} did not exist: created it, so that the containers the \
                         engine puts there are judged from their first syscall (if no engine \
                         uses it, check attach.cgroups for a typo)"
                    ),
                    Err(e) => {
                        error!("cgroup /{p} does not exist and cannot be created: {e}");
                        self.failed.push(p.clone());
                    }
                }
            }
            if let CgroupSpec::Pattern { parent, .. } = &t.spec {
                parents.push(fs.path(parent));
            }
            wanted.extend(expand(&fs, &t.spec));
        }
        self.rewatch(parents);
        wanted.sort();
        wanted.dedup();
        // First what went away or was replaced (a recreated cgroup has a
        // new id; its old links are defunct).
        let stale: Vec<String> = self
            .attached
            .iter()
            .filter(|(r, id)| !wanted.contains(r) || fs.id(r) != Some(**id))
            .map(|(r, _)| r.clone())
            .collect();
        for rel in stale {
            self.attached.remove(&rel);
            if wanted.contains(&rel) {
                continue; // replaced: attached afresh below
            }
            let exists = fs.id(&rel).is_some();
            match kcgroup::detach(pins, &rel) {
                Ok(_) if exists => info!("cgroup /{rel}: no longer a target; detached"),
                Ok(_) => info!("cgroup /{rel}: gone; released its links"),
                Err(e) => error!("cgroup /{rel}: {e}"),
            }
        }
        if settled {
            for rel in pins.pinned_cgroups() {
                if wanted.contains(&rel) {
                    continue;
                }
                let exists = fs.id(&rel).is_some();
                match kcgroup::detach(pins, &rel) {
                    Ok(_) if exists => info!("cgroup /{rel}: not a target any more; detached"),
                    Ok(_) => info!("cgroup /{rel}: gone; released its stale links"),
                    Err(e) => error!("cgroup /{rel}: {e}"),
                }
            }
        }
        for rel in &wanted {
            let Some(id) = fs.id(rel) else { continue };
            if self.attached.get(rel) == Some(&id) {
                continue;
            }
            match kcgroup::attach(ebpf, pins, &fs, rel) {
                Ok(done) => {
                    let adopted = done.iter().filter(|(_, o)| *o == Outcome::Adopted).count();
                    info!(
                        "cgroup /{rel}: {} hook(s) {}",
                        done.len(),
                        if adopted == done.len() && adopted > 0 {
                            "adopted (now running this program)"
                        } else {
                            "attached"
                        }
                    );
                    self.attached.insert(rel.clone(), id);
                }
                // Retried on the next scan; the cgroup may be going away.
                Err(e) => error!("cgroup /{rel}: {e}"),
            }
        }
    }

    fn rewatch(&mut self, mut dirs: Vec<PathBuf>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        dirs.sort();
        dirs.dedup();
        for d in self.watched.clone() {
            if !dirs.contains(&d) {
                let _ = w.unwatch(&d);
                self.watched.retain(|x| *x != d);
            }
        }
        for d in dirs {
            if !self.watched.contains(&d) && w.watch(&d, RecursiveMode::NonRecursive).is_ok() {
                self.watched.push(d);
            }
        }
    }

    /// The attached cgroups' paths: where a hook's cgroup id is found.
    pub fn roots(&self) -> Vec<String> {
        self.attached.keys().cloned().collect()
    }

    /// How many cgroups the hooks are attached to.
    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// The host's cgroup2 tree, as this process sees it.
    pub fn tree(&self) -> &HostTree {
        &self.tree
    }

    /// The cgroup2 mount; `None`: no cgroup2 here.
    pub fn fs(&self) -> Option<&CgroupFs> {
        self.fs.as_ref()
    }

    /// Publishes what is attached, for coverage.
    pub fn publish(&self, pins: &PinDir, interfaces: Vec<String>, out: &Arc<RwLock<Attached>>) {
        let a = Attached {
            interfaces: interfaces.into_iter().collect(),
            cgroups: kcgroup::attachments(pins, self.fs.as_ref()),
            cgroup_problem: self.problem.clone(),
            cgroup_caveats: self.caveats(),
        };
        *out.write().unwrap_or_else(|e| e.into_inner()) = a;
    }
}
