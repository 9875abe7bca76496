//! Keeping the endpoints in line with the veths of the filtered bridges:
//! entry first, then the program (daemon::endpoints, which holds their
//! state, says why and how).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use egress_ebpf_common::endpoint::Endpoint;
use log::{debug, error, info, warn};

use crate::{
    daemon::{
        endpoints::{Endpoints, Kept, desired, policy_tag},
        filter::Filter,
    },
    endpoint::veth::{self, Veth},
    error::Error,
    kernel::{
        attach::{self, AttachOutcome},
        object,
    },
};

impl Filter {
    /// Names of the veths that are endpoints now (ports of filtered
    /// bridges): their pinned links are the endpoint layer's, not stale
    /// bridge links.
    pub(super) fn endpoint_veth_names(&self) -> Vec<String> {
        if !self.policy.endpoints {
            return Vec::new();
        }
        let bridges: HashMap<String, u32> = attach::interfaces()
            .into_iter()
            .filter(|(n, _)| self.wants(n))
            .collect();
        veth::inventory(&bridges)
            .map(|v| v.into_iter().map(|v| v.name).collect())
            .unwrap_or_default()
    }

    /// Attaches to the veths of the filtered bridges, updates their
    /// entries, forgets the veths that went away.
    pub fn reconcile_endpoints(&mut self) {
        let Some(mut eps) = self.endpoints.take() else {
            return;
        };
        if let Err(e) = self.reconcile_endpoints_with(&mut eps) {
            error!("endpoints: {e}");
        }
        self.endpoints = Some(eps);
    }

    fn reconcile_endpoints_with(&mut self, eps: &mut Endpoints) -> Result<(), Error> {
        let t0 = Instant::now();
        let veths = if self.policy.endpoints {
            veth::inventory(&self.attached)?
        } else {
            Vec::new()
        };
        self.forget_gone_endpoints(eps, &veths);
        let listed = t0.elapsed();
        let tag = policy_tag(&self.policy);
        let wanted: Vec<i32> = veths.iter().filter_map(|v| v.peer_netnsid).collect();
        let containers = eps.containers_by_netns(&wanted);
        let identified = t0.elapsed();
        let (mut entries, mut attaching, mut attached) = (Duration::ZERO, Duration::ZERO, 0usize);
        if containers.is_none() {
            self.say_exceptions_closed(eps);
        }
        for v in &veths {
            let container = containers
                .as_ref()
                .and_then(|m| v.peer_netnsid.and_then(|n| m.get(&n)));
            let (mut entry, mut rules) = desired(v, container, &self.policy);
            let mut k = eps.kept.remove(&v.ifindex).unwrap_or(Kept {
                entry: Endpoint::empty(),
                overflow: false,
                rules: BTreeSet::new(),
                attached: false,
                name: None,
            });
            k.name = Some(v.name.clone());
            let pinned_by_this_policy = k.entry.id == v.ifindex && k.entry._pad == tag;
            if containers.is_none() && eps.engine.is_some() && pinned_by_this_policy {
                // The engine has not answered yet: what this policy pinned
                // for this veth (its container's exceptions) stays.
                entry = k.entry;
                rules = k.rules.clone();
            }
            let t = Instant::now();
            let result = (|| -> Result<(), Error> {
                if k.entry
                    != (Endpoint {
                        slot: k.entry.slot,
                        ..entry
                    })
                    || k.entry.id != v.ifindex
                {
                    eps.write_entry(v.ifindex, &mut k, entry)?;
                }
                let have = k.rules.clone();
                eps.sync_exceptions(v.ifindex, &have, &rules)?;
                k.rules = rules;
                Ok(())
            })();
            if let Err(e) = result {
                error!("{} (ifindex {}): writing its entry: {e}", v.name, v.ifindex);
            }
            entries += t.elapsed();
            if !k.attached {
                let t = Instant::now();
                let r = self.attach_endpoint(v);
                attaching += t.elapsed();
                match r {
                    Ok(()) => {
                        k.attached = true;
                        attached += 1;
                    }
                    // Retried on the next scan; the bridge judges meanwhile.
                    Err(e) => error!("{}: {e}", v.name),
                }
            }
            eps.kept.insert(v.ifindex, k);
        }
        if attached > 0 {
            info!(
                "endpoints: {attached} attached in {:?} (veths listed {:?}, containers {:?}, entries {:?}, attach and pin {:?})",
                t0.elapsed(),
                listed,
                identified - listed,
                entries,
                attaching
            );
        }
        Ok(())
    }

    /// Gone (or no longer a port of a filtered bridge): detach, forget.
    fn forget_gone_endpoints(&self, eps: &mut Endpoints, veths: &[Veth]) {
        let live: HashMap<u32, &Veth> = veths.iter().map(|v| (v.ifindex, v)).collect();
        let gone: Vec<u32> = eps
            .kept
            .keys()
            .filter(|id| !live.contains_key(id))
            .copied()
            .collect();
        let removed = !gone.is_empty();
        for id in gone {
            let Some(k) = eps.kept.remove(&id) else {
                continue;
            };
            if let Some(name) = attach::interfaces()
                .into_iter()
                .find(|(_, i)| *i == id)
                .map(|(n, _)| n)
            {
                // Still there, no longer wanted: remove our program from it.
                let _ = attach::detach(&self.pins, &name);
                info!("{name} (ifindex {id}): no longer an endpoint; detached");
            } else {
                // The veth is gone and its link with it: release the pin
                // (a new veth of the same name is attached only after this,
                // so the pin is still the gone one's).
                if let Some(name) = &k.name {
                    let path = self.pins.link(name);
                    if path.exists() {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                debug!("endpoint ifindex {id}: veth gone; forgot it");
            }
            eps.forget(id, &k);
        }
        if removed {
            eps.sweep_buckets();
        }
    }

    /// Says once that the exceptions stay closed until an engine lists the
    /// containers (or for good, without an engine).
    fn say_exceptions_closed(&self, eps: &mut Endpoints) {
        if !self.policy.exceptions.is_empty() && !eps.said_closed {
            eps.said_closed = true;
            match &eps.engine {
                None => warn!(
                    "{} exception(s) configured, but no container engine to ask: without one \
                     they cannot apply and stay closed",
                    self.policy.exceptions.len()
                ),
                Some(d) => info!(
                    "{} exception(s) wait for the Docker engine at {} (closed until it lists the containers; \
                     entries pinned by this policy stay as they were)",
                    self.policy.exceptions.len(),
                    d.endpoint().url()
                ),
            }
        }
    }

    fn attach_endpoint(&mut self, v: &Veth) -> Result<(), Error> {
        let prog = object::endpoint_classifier(&mut self.ebpf)?;
        match attach::attach(prog, &self.pins, &v.name, self.mode)? {
            AttachOutcome::Attached => info!(
                "{} (ifindex {}, port of {}): endpoint attached [{}]",
                v.name,
                v.ifindex,
                v.bridge,
                self.mode.resolve().name()
            ),
            AttachOutcome::Adopted => debug!(
                "{} (ifindex {}): adopted the endpoint attachment",
                v.name, v.ifindex
            ),
        }
        Ok(())
    }
}
