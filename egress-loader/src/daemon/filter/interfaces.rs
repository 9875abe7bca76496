//! Keeping the attachments in line with the interfaces that exist and the
//! patterns that name them: attach to a new match, forget a vanished one,
//! detach from one the policy no longer names.

use std::collections::BTreeSet;

use log::{error, info};

use crate::{
    daemon::filter::Filter,
    kernel::{
        attach::{self, AttachOutcome},
        object,
    },
    policy::glob::pattern_matches,
};

impl Filter {
    /// A pattern names it, or it is one of the engine's bridge networks.
    pub(super) fn wants(&self, ifname: &str) -> bool {
        self.policy
            .interfaces
            .iter()
            .any(|p| pattern_matches(p, ifname))
            || (self.policy.docker_networks && self.coverage.bridges.contains(ifname))
    }

    /// Attaches to new matching interfaces and tunnels, forgets vanished
    /// ones.
    pub fn reconcile(&mut self) {
        let present = attach::interfaces();
        let listed = self.wanted_tunnels();
        let tunnels = listed.as_deref().unwrap_or_default();
        for (name, index) in &present {
            if !self.wants(name) || self.attached.get(name) == Some(index) {
                continue;
            }
            // A pattern that names a tunnel (`--iface 'flannel*'`): its
            // inner packets need the tunnel program, which knows its layer.
            if tunnels.iter().any(|t| t.name == *name) {
                continue;
            }
            let prog = match object::classifier(&mut self.ebpf) {
                Ok(p) => p,
                Err(e) => {
                    error!("{e}");
                    return;
                }
            };
            match attach::attach(prog, &self.pins, name, self.mode) {
                Ok(AttachOutcome::Attached) => info!(
                    "{name} (ifindex {index}): attached to ingress [{}]",
                    self.mode.resolve().name()
                ),
                Ok(AttachOutcome::Adopted) => info!(
                    "{name} (ifindex {index}): adopted the existing attachment, now running this program"
                ),
                Err(e) => {
                    // Retried on the next scan; the interface may be going away.
                    error!("{name}: {e}");
                    continue;
                }
            }
            self.attached.insert(name.clone(), *index);
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| {
                !present.iter().any(|(p, _)| p == *n) || tunnels.iter().any(|t| &t.name == *n)
            })
            .cloned()
            .collect();
        for name in gone {
            self.attached.remove(&name);
            let path = self.pins.link(&name);
            if path.exists() {
                let _ = std::fs::remove_file(&path);
            }
            info!("{name}: interface gone; forgot its link");
        }
        {
            let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
            published.clear();
            published.extend(self.attached.iter().map(|(n, i)| (n.clone(), *i)));
        }
        // The bridges first: an endpoint hands its packets to its bridge.
        self.reconcile_endpoints();
        if let Some(tunnels) = &listed {
            self.reconcile_tunnels(tunnels);
        }
        {
            let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
            published.extend(self.tunnels.iter().map(|(n, i)| (n.clone(), *i)));
        }
        self.publish_attached();
    }

    /// Pinned links of interfaces that no longer exist or no longer match.
    pub fn release_unwanted_pins(&mut self) {
        let present = attach::interfaces();
        let endpoints = self.endpoint_veth_names();
        let Some(tunnels) = self.wanted_tunnels() else {
            // Which pins are tunnels' is unknown: release nothing now.
            return;
        };
        let tunnels: Vec<String> = tunnels.into_iter().map(|t| t.name).collect();
        for name in self.pins.pinned_links() {
            let exists = present.iter().any(|(n, _)| *n == name);
            // Until the engine answers, a bridge it may name keeps its link.
            let engine_may_name = self.policy.docker_networks && !self.coverage.settled;
            let wanted = self.wants(&name) || endpoints.contains(&name) || tunnels.contains(&name);
            if exists && (wanted || engine_may_name) {
                continue;
            }
            match attach::detach(&self.pins, &name) {
                Ok(_) if exists => info!(
                    "{name}: no longer matches {:?}; detached",
                    self.policy.interfaces
                ),
                Ok(_) => info!("{name}: interface gone; released its stale link"),
                Err(e) => error!("{name}: {e}"),
            }
        }
    }

    /// The engine's networks changed: its bridges are followed, and once
    /// it answered (`connected`) what it does not name is released.
    pub fn networks_changed(&mut self, bridges: BTreeSet<String>, connected: bool) {
        self.coverage.bridges = bridges;
        if connected && !self.coverage.settled {
            self.coverage.settled = true;
            self.release_unwanted_pins();
        }
        self.reconcile();
    }
}
