//! Keeping the tunnel program on every decapsulating device of this
//! namespace (endpoint::tunnel finds them by link kind): attach to a new
//! one, forget a vanished one, detach from all when `attach.tunnels` is
//! turned off.

use log::{error, info};

use crate::{
    daemon::filter::Filter,
    endpoint::tunnel::{self, Layer, Tunnel},
    kernel::{
        attach::{self, AttachOutcome},
        object,
    },
};

impl Filter {
    /// The tunnels the policy wants judged now (none with `tunnels =
    /// false`); `None` when the links cannot be listed: then nothing is
    /// attached, forgotten or released on their account this time (a
    /// failed dump must not detach a tunnel).
    pub(super) fn wanted_tunnels(&self) -> Option<Vec<Tunnel>> {
        if !self.policy.tunnels {
            return Some(Vec::new());
        }
        match tunnel::inventory() {
            Ok(t) => Some(t),
            Err(e) => {
                error!("tunnels: listing the links: {e}");
                None
            }
        }
    }

    /// Attaches to new tunnels, forgets vanished ones (`tunnels`: this
    /// reconcile's inventory, [`Filter::wanted_tunnels`]).
    pub(super) fn reconcile_tunnels(&mut self, tunnels: &[Tunnel]) {
        for t in tunnels {
            if self.tunnels.get(&t.name) == Some(&t.ifindex) {
                continue;
            }
            let prog = match object::tunnel_classifier(&mut self.ebpf, t.layer == Layer::Ip) {
                Ok(p) => p,
                Err(e) => {
                    error!("{e}");
                    return;
                }
            };
            match attach::attach(prog, &self.pins, &t.name, self.mode) {
                Ok(AttachOutcome::Attached) => info!(
                    "{} (ifindex {}, {} tunnel, {}): attached to ingress [{}]",
                    t.name,
                    t.ifindex,
                    t.kind,
                    match t.layer {
                        Layer::Ethernet => "Ethernet",
                        Layer::Ip => "IP",
                    },
                    self.mode.resolve().name()
                ),
                Ok(AttachOutcome::Adopted) => info!(
                    "{} (ifindex {}, {} tunnel): adopted the existing attachment",
                    t.name, t.ifindex, t.kind
                ),
                Err(e) => {
                    // Retried on the next scan; the device may be going away.
                    error!("{}: {e}", t.name);
                    continue;
                }
            }
            self.tunnels.insert(t.name.clone(), t.ifindex);
        }
        let gone: Vec<String> = self
            .tunnels
            .keys()
            .filter(|n| !tunnels.iter().any(|t| &t.name == *n))
            .cloned()
            .collect();
        for name in gone {
            self.tunnels.remove(&name);
            if attach::interfaces().iter().any(|(n, _)| *n == name) {
                // Still there, no longer wanted (`tunnels = false`).
                let _ = attach::detach(&self.pins, &name);
                info!("{name}: tunnels are no longer judged; detached");
            } else {
                let path = self.pins.link(&name);
                if path.exists() {
                    let _ = std::fs::remove_file(&path);
                }
                info!("{name}: tunnel gone; forgot its link");
            }
        }
    }
}
