//! Following coverage while `run` runs: on every change the engine reports
//! (a network created or destroyed, a container started or stopped) and
//! every few seconds, the running containers are listed and each one's hook
//! worked out (`endpoint::coverage`). A container no hook filters is said in
//! the log when it appears; the count is `/metrics`'
//! `egress_uncovered_containers`. The same listing gives the engine's
//! cgroups to `auto` (`endpoint::cgroup`).

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use log::{debug, warn};
use tokio::sync::watch;

use crate::endpoint::{
    cgroup::EngineCgroups,
    containers,
    coverage::{self, Attached, HookKind, SharedCoverage},
    networks::NetworkWatch,
};

/// How often coverage is recomputed without a change from the engine (what
/// the daemon attaches changes too).
const REFRESH: Duration = Duration::from_secs(5);

/// How long after new cgroup targets coverage is judged again.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs for as long as the runtime runs.
pub fn spawn(
    networks: Arc<NetworkWatch>,
    attached: Arc<RwLock<Attached>>,
    latest: SharedCoverage,
    engine_cgroups: watch::Sender<Option<EngineCgroups>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = networks.subscribe();
        let mut warned: BTreeSet<String> = BTreeSet::new();
        let mut wait = REFRESH;
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            wait = REFRESH;
            if !networks.is_connected() {
                continue;
            }
            let docker = match networks.endpoint().connect().await {
                Ok(d) => d,
                Err(e) => {
                    debug!("coverage: {e}");
                    continue;
                }
            };
            let driver = containers::cgroup_driver(&docker).await;
            let list = match containers::list(&docker).await {
                Ok(l) => l,
                Err(e) => {
                    debug!("coverage: {e}");
                    continue;
                }
            };
            let new_targets = engine_cgroups.send_if_modified(|old| {
                let fresh = EngineCgroups::from_containers(driver, &list);
                let merged = match old {
                    Some(o) => o.merge(fresh),
                    None => fresh,
                };
                let changed = old.as_ref() != Some(&merged);
                *old = Some(merged);
                changed
            });
            if new_targets {
                // The daemon is attaching to the cgroups these containers
                // name: what is attached now is not yet what will be. Judge
                // (and warn) once it has had the time.
                wait = SETTLE;
                continue;
            }
            let snapshot = attached.read().unwrap_or_else(|e| e.into_inner()).clone();
            let cov = coverage::compute(&list, &networks.networks(), &snapshot, |c| {
                c.pid.map(coverage::host_peers).unwrap_or_default()
            });
            for c in &cov.containers {
                if c.hook == HookKind::Uncovered && warned.insert(c.id.clone()) {
                    warn!(
                        "UNCOVERED container {} ({}): {}",
                        c.name,
                        c.id,
                        c.reason.as_deref().unwrap_or("no hook filters it")
                    );
                }
            }
            warned.retain(|id| {
                cov.containers
                    .iter()
                    .any(|c| c.id == *id && c.hook == HookKind::Uncovered)
            });
            *latest.write().unwrap_or_else(|e| e.into_inner()) = Some(cov);
        }
    })
}
