//! The engine's networks, and which of them the filter can see.
//!
//! Every network of Docker's `bridge` driver is a bridge on this host, named
//! by its `com.docker.network.bridge.name` option (compose files set it with
//! `driver_opts`) or `br-` and the first 12 characters of its id: the daemon
//! attaches to each, whatever the configured patterns say. A background task
//! lists them when the engine answers and follows the engine's network
//! create/destroy events (and container start/die, which change coverage),
//! so a new network is attached within a second of `docker network create`.
//!
//! Other drivers: `macvlan` and `ipvlan` containers send through a parent
//! NIC, not through any bridge or host-side veth, so the filter does not see
//! them (docs/threat-model.md); the loader says so for each such network
//! ([`Network::uncovered`]), and `status`, `verify` and `/metrics` name the
//! containers on it. `host` and `none` are not networks a packet crosses
//! (the cgroup hooks judge host-network containers).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bollard::{
    Docker,
    models::{EventMessage, EventMessageTypeEnum},
};
use log::{debug, info, warn};
use serde::Serialize;
use tokio::sync::watch;

use crate::endpoint::engine::{DockerEndpoint, EngineError, events_since_now, follow_events};

/// The option naming a bridge network's interface.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Docker's short id, as it names a bridge without the option.
const SHORT_ID: usize = 12;

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One engine network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The bridge interface, for the `bridge` driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The parent NIC of a `macvlan`/`ipvlan` network, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The interface of a `bridge` network: its `com.docker.network.bridge.name`
/// option, else `br-` and the first 12 characters of its id (libnetwork's
/// bridge driver).
pub fn bridge_interface(id: &str, options: Option<&HashMap<String, String>>) -> String {
    match options
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .filter(|n| !n.is_empty())
    {
        Some(name) => name.clone(),
        None => format!("br-{}", id.chars().take(SHORT_ID).collect::<String>()),
    }
}

impl Network {
    pub fn from_engine(n: &bollard::models::Network) -> Self {
        let id = n.id.clone().unwrap_or_default();
        let driver = n.driver.clone().unwrap_or_default();
        let interface = (driver == "bridge").then(|| bridge_interface(&id, n.options.as_ref()));
        let parent = n
            .options
            .as_ref()
            .and_then(|o| o.get("parent"))
            .filter(|p| !p.is_empty())
            .cloned();
        Network {
            name: n.name.clone().unwrap_or_default(),
            id,
            driver,
            interface,
            parent,
        }
    }

    /// Why containers on this network are not filtered, or `None` when
    /// they are (a bridge the daemon attaches to) or when it is not a
    /// network packets cross (`host`, `none`: see the cgroup hooks).
    pub fn uncovered(&self) -> Option<String> {
        match self.driver.as_str() {
            "bridge" | "host" | "null" => None,
            "macvlan" | "ipvlan" => Some(format!(
                "{} network {}: its containers send through {} directly, past every bridge \
                 and veth the filter is attached to (docs/threat-model.md)",
                self.driver,
                self.name,
                match &self.parent {
                    Some(p) => format!("the parent interface {p}"),
                    None => "a parent interface".to_owned(),
                }
            )),
            // Swarm overlay: off-host traffic leaves through the
            // docker_gwbridge bridge network, which is attached as a bridge.
            "overlay" => None,
            other => Some(format!(
                "network {} uses the {other:?} driver, whose traffic the filter does not see",
                self.name
            )),
        }
    }
}

/// Lists the engine's networks.
pub async fn list(docker: &Docker) -> Result<Vec<Network>, EngineError> {
    let mut v: Vec<Network> = docker
        .list_networks(None)
        .await
        .map_err(EngineError::ListNetworks)?
        .iter()
        .map(Network::from_engine)
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// The engine's networks, kept current from its events.
#[derive(Debug)]
pub struct NetworkWatch {
    endpoint: DockerEndpoint,
    networks: RwLock<BTreeMap<String, Network>>,
    connected: AtomicBool,
    /// A generation, one more on every change of the networks, on container
    /// start/die and on connecting: each subscriber sees every change.
    changes: watch::Sender<u64>,
}

impl NetworkWatch {
    pub fn new(endpoint: DockerEndpoint) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            networks: RwLock::new(BTreeMap::new()),
            connected: AtomicBool::new(false),
            changes: watch::Sender::new(0),
        })
    }

    pub fn endpoint(&self) -> &DockerEndpoint {
        &self.endpoint
    }

    /// Whether the engine answered and its events are followed.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The networks last seen (kept while the engine is away).
    pub fn networks(&self) -> Vec<Network> {
        self.networks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The interfaces of the `bridge` networks.
    pub fn bridge_interfaces(&self) -> BTreeSet<String> {
        self.networks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|n| n.interface.clone())
            .collect()
    }

    /// Changes: a network created or destroyed, a container started or
    /// stopped, the engine connecting.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Follows the engine for as long as the runtime runs.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().watch())
    }

    async fn watch(self: Arc<Self>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let (was_connected, error) = self.session().await;
            self.connected.store(false, Ordering::Relaxed);
            if was_connected {
                warn!(
                    "Docker engine at {}: {error}; its networks as last seen stay attached while reconnecting",
                    self.endpoint.url()
                );
                backoff = MIN_BACKOFF;
            } else {
                debug!(
                    "networks: Docker engine at {}: {error}",
                    self.endpoint.url()
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Replaces the known networks with the engine's list; warns about each
    /// network not seen before that the filter cannot see.
    async fn refresh(&self, docker: &Docker) -> Result<(), EngineError> {
        let fresh = list(docker).await?;
        let mut map = self.networks.write().unwrap_or_else(|e| e.into_inner());
        for n in &fresh {
            if !map.contains_key(&n.id)
                && let Some(why) = n.uncovered()
            {
                warn!("UNCOVERED: {why}");
            }
        }
        *map = fresh.into_iter().map(|n| (n.id.clone(), n)).collect();
        Ok(())
    }

    async fn session(&self) -> (bool, EngineError) {
        let docker = match self.endpoint.connect().await {
            Ok(d) => d,
            Err(e) => return (false, e),
        };
        let since = events_since_now();
        if let Err(e) = self.refresh(&docker).await {
            return (false, e);
        }
        self.connected.store(true, Ordering::Relaxed);
        let bridges = self.bridge_interfaces();
        info!(
            "Docker engine at {}: following its networks ({} bridge(s): {})",
            self.endpoint.url(),
            bridges.len(),
            bridges.into_iter().collect::<Vec<_>>().join(", ")
        );
        self.bump();
        let ended = follow_events(
            &docker,
            &since,
            &["network", "container"],
            &["create", "destroy", "start", "die"],
            |e| {
                let docker = &docker;
                async move { self.apply(docker, &e).await }
            },
        )
        .await;
        (true, ended)
    }

    async fn apply(&self, docker: &Docker, e: &EventMessage) {
        if e.typ == Some(EventMessageTypeEnum::NETWORK) {
            debug!(
                "Docker network event: {}",
                e.action.as_deref().unwrap_or_default()
            );
            if let Err(err) = self.refresh(docker).await {
                warn!("Docker engine at {}: {err}", self.endpoint.url());
            }
        }
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(driver: &str, options: &[(&str, &str)]) -> bollard::models::Network {
        bollard::models::Network {
            id: Some("0123456789abcdef0123456789abcdef".into()),
            name: Some("n".into()),
            driver: Some(driver.into()),
            options: Some(
                options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn bridge_networks_name_their_interface() {
        let plain = Network::from_engine(&net("bridge", &[]));
        assert_eq!(plain.interface.as_deref(), Some("br-0123456789ab"));
        let named = Network::from_engine(&net("bridge", &[(BRIDGE_NAME_OPTION, "custom0")]));
        assert_eq!(named.interface.as_deref(), Some("custom0"));
        assert_eq!(named.uncovered(), None);
        // An empty option is the default name.
        let empty = Network::from_engine(&net("bridge", &[(BRIDGE_NAME_OPTION, "")]));
        assert_eq!(empty.interface.as_deref(), Some("br-0123456789ab"));
    }

    #[test]
    fn what_the_filter_cannot_see_is_named() {
        let mv = Network::from_engine(&net("macvlan", &[("parent", "eth0")]));
        assert_eq!(mv.interface, None);
        let why = mv.uncovered().unwrap();
        assert!(why.contains("macvlan") && why.contains("eth0"), "{why}");
        assert!(
            Network::from_engine(&net("ipvlan", &[]))
                .uncovered()
                .is_some()
        );
        assert!(
            Network::from_engine(&net("weave", &[]))
                .uncovered()
                .unwrap()
                .contains("weave")
        );
        for covered in ["host", "null", "overlay"] {
            assert_eq!(Network::from_engine(&net(covered, &[])).uncovered(), None);
        }
    }
}
