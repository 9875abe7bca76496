//! Container identity from the Docker Engine API: which container holds a
//! source address, so a drop event can name it.
//!
//! A background task keeps an address -> container map current: the
//! container list when it connects, then the engine's event stream
//! (container start/die/destroy/rename, network connect/disconnect). The
//! event path only takes a read lock on that map, never waits for the
//! engine. With no engine reachable, lookups find nothing (events carry
//! addresses only), which is said once in the log, and the task keeps
//! trying with a backoff.
//!
//! A source address is what the container put in the packet: one with
//! CAP_NET_RAW can use another container's address (docs/threat-model.md),
//! so the name is the owner of that address, not proof of the sender.
//!
//! The same task keeps the running containers by id, with their labels and
//! network namespace (the sandbox key, or `/proc/PID/ns/net`): the endpoint
//! layer finds the container behind each veth by that namespace, which the
//! container cannot forge, and applies the exceptions its labels select.
//! `changed()` wakes the daemon when the set changes (a start, a stop).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bollard::{
    API_DEFAULT_VERSION, Docker,
    models::{ContainerStateStatusEnum, EndpointSettings, EventMessage, EventMessageTypeEnum},
    query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder},
};
use futures::StreamExt;
use log::{debug, info, warn};

use crate::{
    endpoint::identity::{Container, Identity},
    error::ConfigError,
};

/// A running container as the engine describes it: what the endpoint layer
/// needs to find its veth and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// Short id (12 hex digits, as `docker ps`).
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// Its network namespace: the sandbox key, else `/proc/PID/ns/net`.
    pub netns: Option<PathBuf>,
}

/// Container inspections in flight at once when the engine's list is read
/// (the engine serves them in parallel; a bound keeps a host with
/// thousands of containers from opening as many connections).
const CONCURRENT_INSPECTIONS: usize = 16;

/// Where Docker listens unless `DOCKER_HOST` or `--docker-host` says otherwise.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Bound on one Engine API request (not on the event stream).
const REQUEST_TIMEOUT_SECS: u64 = 10;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Docker's short container id, as `docker ps` shows it.
const SHORT_ID: usize = 12;

/// What failed in talking to a Docker engine. It reaches users as a line of
/// the log, the reason `status` gives for the engine (`engine_error`), or the
/// problem of `explain --from`, so each says its step and the engine's
/// words.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{} does not exist", .0.display())]
    NoSocket(PathBuf),
    /// The client could not be made, or the API version not agreed.
    #[error("{0}")]
    Connect(bollard::errors::Error),
    #[error("listing containers: {0}")]
    ListContainers(bollard::errors::Error),
    #[error("listing networks: {0}")]
    ListNetworks(bollard::errors::Error),
    #[error("container {name:?}: {cause}")]
    Inspect {
        name: String,
        cause: bollard::errors::Error,
    },
    #[error("event stream: {0}")]
    EventStream(bollard::errors::Error),
    #[error("the engine closed the event stream")]
    StreamClosed,
}

/// A `--docker-host` or `DOCKER_HOST` that names no local engine socket:
/// the flag's is a [`ConfigError`], the environment's a warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerHostError {
    #[error(
        "{url:?}: only unix:// Docker hosts are supported (the engine's local socket), not {scheme}://"
    )]
    NotUnix { url: String, scheme: String },
    #[error("{0:?}: expected unix:///absolute/path/to/docker.sock")]
    NotAbsolute(String),
}

/// A Docker engine's unix socket, and where its path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub socket: PathBuf,
    /// `--docker-host`, `DOCKER_HOST` or `default`, for messages.
    pub source: &'static str,
}

impl DockerEndpoint {
    /// `unix:///path/docker.sock` (or a plain absolute path). Other schemes
    /// (tcp://, ssh://) are refused: only the local engine's socket is used.
    pub fn parse(url: &str, source: &'static str) -> Result<Self, DockerHostError> {
        let path = match url.split_once("://") {
            Some(("unix", path)) => path,
            Some((scheme, _)) => {
                return Err(DockerHostError::NotUnix {
                    url: url.into(),
                    scheme: scheme.into(),
                });
            }
            None => url,
        };
        if !path.starts_with('/') {
            return Err(DockerHostError::NotAbsolute(url.into()));
        }
        Ok(Self {
            socket: PathBuf::from(path),
            source,
        })
    }

    /// The engine a subcommand asks (`run`, `status`, `verify`, `explain`):
    /// none with `--no-docker`, else as [`Self::resolve`] picks it from
    /// `--docker-host` and the environment's `DOCKER_HOST`.
    pub fn from_flags(
        docker_host: Option<&str>,
        no_docker: bool,
    ) -> Result<Option<Self>, ConfigError> {
        if no_docker {
            return Ok(None);
        }
        let env = std::env::var("DOCKER_HOST").ok();
        Self::resolve(docker_host, env.as_deref())
    }

    /// `--docker-host` (an error if invalid), else `DOCKER_HOST` (ignored
    /// with a warning if it is not a unix socket), else
    /// [`DEFAULT_DOCKER_SOCKET`].
    pub fn resolve(flag: Option<&str>, env: Option<&str>) -> Result<Option<Self>, ConfigError> {
        if let Some(url) = flag {
            return Self::parse(url, "--docker-host")
                .map(Some)
                .map_err(|e| ConfigError::new("--docker-host", e));
        }
        match env.filter(|v| !v.is_empty()) {
            Some(url) => match Self::parse(url, "DOCKER_HOST") {
                Ok(e) => Ok(Some(e)),
                Err(e) => {
                    warn!("DOCKER_HOST: {e}; drop events will carry addresses only");
                    Ok(None)
                }
            },
            None => Ok(Some(Self {
                socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
                source: "default",
            })),
        }
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A client of this engine, with the API version negotiated.
    pub async fn connect(&self) -> Result<Docker, EngineError> {
        if !self.socket.exists() {
            return Err(EngineError::NoSocket(self.socket.clone()));
        }
        let path = self.socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(EngineError::Connect)?;
        // Older engines refuse a newer API version than theirs.
        docker
            .negotiate_version()
            .await
            .map_err(EngineError::Connect)
    }
}

/// The `since` of an event subscription made right after a list: a second
/// before now, so that nothing between the list and the subscription is
/// missed (both followers re-read what an event names, so one applied
/// twice is harmless).
pub fn events_since_now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0)
        .to_string()
}

/// Follows the engine's events of these `types` and `actions` from `since`,
/// each handed to `apply` in order, until the stream fails or the engine
/// closes it; returns what ended it.
pub async fn follow_events<F, Fut>(
    docker: &Docker,
    since: &str,
    types: &[&str],
    actions: &[&str],
    mut apply: F,
) -> EngineError
where
    F: FnMut(EventMessage) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let filters: HashMap<&str, Vec<&str>> =
        HashMap::from([("type", types.to_vec()), ("event", actions.to_vec())]);
    let mut events = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(since)
            .filters(&filters)
            .build(),
    ));
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => apply(e).await,
            Err(e) => return EngineError::EventStream(e),
        }
    }
    EngineError::StreamClosed
}

/// Containers by address, kept current from a Docker engine.
#[derive(Debug)]
pub struct DockerIdentity {
    endpoint: DockerEndpoint,
    by_address: RwLock<HashMap<IpAddr, Container>>,
    running: RwLock<HashMap<String, RunningContainer>>,
    connected: AtomicBool,
    /// The engine's container list was read at least once by this process.
    listed: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Identity for DockerIdentity {
    fn lookup(&self, addr: IpAddr) -> Option<Container> {
        let map = self.by_address.read().unwrap_or_else(|e| e.into_inner());
        map.get(&addr).cloned()
    }
}

impl DockerIdentity {
    pub fn new(endpoint: DockerEndpoint) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            by_address: RwLock::new(HashMap::new()),
            running: RwLock::new(HashMap::new()),
            connected: AtomicBool::new(false),
            listed: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Whether this process has read the engine's container list (while it
    /// reconnects, the last known containers stay).
    pub fn has_listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// The running containers, by short id.
    pub fn running(&self) -> HashMap<String, RunningContainer> {
        self.running
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves when the running containers changed (cancel-safe).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn endpoint(&self) -> &DockerEndpoint {
        &self.endpoint
    }

    /// Whether the engine answered and its event stream is being followed.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Addresses currently mapped to a container.
    pub fn known_addresses(&self) -> usize {
        self.by_address
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Follows the engine for as long as the runtime runs (call from
    /// inside a tokio runtime).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().watch())
    }

    async fn watch(self: Arc<Self>) {
        let mut backoff = MIN_BACKOFF;
        let mut said_unreachable = false;
        loop {
            let (was_connected, error) = self.session().await;
            self.connected.store(false, Ordering::Relaxed);
            if was_connected {
                // Addresses stay mapped while we reconnect; the next session
                // replaces the map with the engine's list.
                warn!(
                    "Docker engine at {}: {error}; reconnecting (events keep the last known containers meanwhile)",
                    self.endpoint.url()
                );
                backoff = MIN_BACKOFF;
                said_unreachable = true;
            } else if !said_unreachable {
                warn!(
                    "no Docker engine at {} ({}): {error}; drop events carry addresses only until one answers (retrying in the background)",
                    self.endpoint.url(),
                    self.endpoint.source
                );
                said_unreachable = true;
            } else {
                debug!("Docker engine at {}: {error}", self.endpoint.url());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: list, then follow events until something fails.
    /// Returns whether the engine had answered, and what ended it.
    async fn session(&self) -> (bool, EngineError) {
        let docker = match self.connect().await {
            Ok(d) => d,
            Err(e) => return (false, e),
        };
        let since = events_since_now();
        let list = match docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
            .await
        {
            Ok(l) => l,
            Err(e) => return (false, EngineError::ListContainers(e)),
        };
        let mut map = HashMap::new();
        for c in &list {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let id = c.id.as_deref().unwrap_or_default();
            let image = c.image.clone().unwrap_or_default();
            if let Some(networks) = c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
            {
                insert_endpoints(&mut map, &name, id, &image, networks);
            }
        }
        // The inspections run a few at a time: one after the other, a
        // hundred containers kept the endpoints waiting for their
        // exceptions for about a second (docs/design.md, Endpoints).
        // Owned ids and engine handles: the task's future must be Send.
        let ids: Vec<String> = list.iter().filter_map(|c| c.id.clone()).collect();
        let inspected: Vec<_> = futures::stream::iter(ids)
            .map(|id| {
                let docker = docker.clone();
                async move {
                    let result = docker.inspect_container(&id, None).await;
                    (id, result)
                }
            })
            .buffer_unordered(CONCURRENT_INSPECTIONS)
            .collect()
            .await;
        let mut running = HashMap::new();
        for (id, result) in inspected {
            let id = id.as_str();
            match result {
                Ok(i) => {
                    if let Some(r) = running_container(id, &i) {
                        running.insert(r.id.clone(), r);
                    }
                }
                Err(e) => debug!("inspecting container {}: {e}", short(id)),
            }
        }
        let (containers, addresses) = (list.len(), map.len());
        *self.by_address.write().unwrap_or_else(|e| e.into_inner()) = map;
        *self.running.write().unwrap_or_else(|e| e.into_inner()) = running;
        self.connected.store(true, Ordering::Relaxed);
        self.listed.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        info!(
            "Docker engine at {}: drop events name the container ({containers} running, {addresses} addresses)",
            self.endpoint.url()
        );
        let ended = follow_events(
            &docker,
            &since,
            &["container", "network"],
            &["start", "die", "destroy", "rename", "connect", "disconnect"],
            |e| {
                let docker = &docker;
                async move { self.apply(docker, &e).await }
            },
        )
        .await;
        (true, ended)
    }

    async fn connect(&self) -> Result<Docker, EngineError> {
        self.endpoint.connect().await
    }

    async fn apply(&self, docker: &Docker, e: &EventMessage) {
        let Some(actor) = &e.actor else { return };
        let action = e.action.as_deref().unwrap_or_default();
        // Container events name the container; network events name the
        // network and carry the container in their attributes.
        let container = match e.typ {
            Some(EventMessageTypeEnum::CONTAINER) => actor.id.clone(),
            Some(EventMessageTypeEnum::NETWORK) => actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("container").cloned()),
            _ => None,
        };
        let Some(id) = container else { return };
        debug!("Docker event: {action} {}", short(&id));
        match action {
            "die" | "destroy" => self.forget(&id),
            _ => self.refresh(docker, &id).await,
        }
    }

    fn forget(&self, id: &str) {
        let id = short(id);
        self.by_address
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| c.id != id);
        let gone = self
            .running
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .is_some();
        if gone {
            self.changed.notify_one();
        }
    }

    /// Re-reads one container: its addresses replace what was known of it.
    async fn refresh(&self, docker: &Docker, id: &str) {
        let inspect = match docker.inspect_container(id, None).await {
            Ok(i) => i,
            Err(e) => {
                debug!("inspecting container {}: {e}", short(id));
                self.forget(id);
                return;
            }
        };
        let mut fresh = HashMap::new();
        // A container holds its addresses from its network connect (which
        // comes just before its start event) until it stops.
        let stopped = inspect
            .state
            .as_ref()
            .and_then(|s| s.status)
            .is_some_and(|s| {
                matches!(
                    s,
                    ContainerStateStatusEnum::EXITED
                        | ContainerStateStatusEnum::DEAD
                        | ContainerStateStatusEnum::REMOVING
                )
            });
        if !stopped {
            let name = inspect
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/');
            let image = inspect
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            if let Some(networks) = inspect
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
            {
                insert_endpoints(&mut fresh, name, id, &image, networks);
            }
        }
        let sid = short(id);
        {
            let mut map = self.by_address.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, c| c.id != sid);
            map.extend(fresh);
        }
        let now = if stopped {
            None
        } else {
            running_container(id, &inspect)
        };
        let mut running = self.running.write().unwrap_or_else(|e| e.into_inner());
        let before = running.get(&sid).cloned();
        match &now {
            Some(r) => running.insert(sid, r.clone()),
            None => running.remove(&sid),
        };
        drop(running);
        if before != now {
            self.changed.notify_one();
        }
    }
}

/// A running container from its inspection; `None` if it is not running.
fn running_container(
    id: &str,
    inspect: &bollard::models::ContainerInspectResponse,
) -> Option<RunningContainer> {
    let state = inspect.state.as_ref()?;
    if state.running != Some(true) {
        return None;
    }
    let netns = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.sandbox_key.clone())
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            state
                .pid
                .filter(|p| *p > 0)
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/net")))
        });
    Some(RunningContainer {
        id: short(id),
        name: inspect
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: inspect
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        labels: inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default(),
        netns,
    })
}

fn short(id: &str) -> String {
    id.chars().take(SHORT_ID).collect()
}

/// One entry per address of each network the container is on.
fn insert_endpoints(
    map: &mut HashMap<IpAddr, Container>,
    name: &str,
    id: &str,
    image: &str,
    networks: &HashMap<String, EndpointSettings>,
) {
    for (network, ep) in networks {
        for addr in [&ep.ip_address, &ep.global_ipv6_address]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<IpAddr>().ok())
        {
            map.insert(
                addr,
                Container {
                    name: name.to_owned(),
                    id: short(id),
                    image: image.to_owned(),
                    network: network.clone(),
                },
            );
        }
    }
}

/// The addresses of the container `name` (or id) on every network it is
/// on, asked of the engine once (for `explain --from CONTAINER`).
pub async fn container_addresses(
    endpoint: &DockerEndpoint,
    name: &str,
) -> Result<Vec<(IpAddr, String)>, EngineError> {
    let identity = DockerIdentity::new(endpoint.clone());
    let docker = identity.connect().await?;
    let inspect = docker
        .inspect_container(name, None)
        .await
        .map_err(|cause| EngineError::Inspect {
            name: name.into(),
            cause,
        })?;
    let mut map = HashMap::new();
    if let Some(networks) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    {
        insert_endpoints(
            &mut map,
            name,
            inspect.id.as_deref().unwrap_or(name),
            "",
            networks,
        );
    }
    let mut out: Vec<(IpAddr, String)> = map.into_iter().map(|(a, c)| (a, c.network)).collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = DockerEndpoint::parse("unix:///run/d.sock", "DOCKER_HOST").unwrap();
        assert_eq!(e.socket, PathBuf::from("/run/d.sock"));
        assert_eq!(e.url(), "unix:///run/d.sock");
        assert_eq!(
            DockerEndpoint::parse("/run/d.sock", "--docker-host")
                .unwrap()
                .socket,
            PathBuf::from("/run/d.sock")
        );
        assert!(DockerEndpoint::parse("tcp://127.0.0.1:2375", "x").is_err());
        assert!(DockerEndpoint::parse("unix://relative.sock", "x").is_err());
    }

    /// Each refusal prints what the `String` it replaced printed.
    #[test]
    fn docker_host_errors_print_the_old_messages() {
        let e = DockerEndpoint::parse("tcp://127.0.0.1:2375", "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"tcp://127.0.0.1:2375\": only unix:// Docker hosts are supported (the engine's \
             local socket), not tcp://"
        );
        let e = DockerEndpoint::parse("unix://relative.sock", "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"unix://relative.sock\": expected unix:///absolute/path/to/docker.sock"
        );
        assert_eq!(
            DockerEndpoint::resolve(Some("ssh://h"), None)
                .unwrap_err()
                .to_string(),
            "--docker-host: \"ssh://h\": only unix:// Docker hosts are supported (the engine's \
             local socket), not ssh://"
        );
    }

    #[test]
    fn resolution_order() {
        let flag = DockerEndpoint::resolve(Some("unix:///a.sock"), Some("unix:///b.sock"));
        assert_eq!(flag.unwrap().unwrap().socket, PathBuf::from("/a.sock"));
        let env = DockerEndpoint::resolve(None, Some("unix:///b.sock"));
        assert_eq!(env.unwrap().unwrap().source, "DOCKER_HOST");
        // A remote DOCKER_HOST does not stop the filter: addresses only.
        assert_eq!(
            DockerEndpoint::resolve(None, Some("tcp://h:2375")).unwrap(),
            None
        );
        // A bad flag is refused.
        assert!(DockerEndpoint::resolve(Some("tcp://h:2375"), None).is_err());
        let default = DockerEndpoint::resolve(None, Some("")).unwrap().unwrap();
        assert_eq!(default.socket, PathBuf::from(DEFAULT_DOCKER_SOCKET));
        // --no-docker: no engine, whatever --docker-host says; else the
        // flag wins over any DOCKER_HOST.
        assert_eq!(
            DockerEndpoint::from_flags(Some("tcp://h:2375"), true),
            Ok(None)
        );
        let flag = DockerEndpoint::from_flags(Some("unix:///a.sock"), false);
        assert_eq!(flag.unwrap().unwrap().source, "--docker-host");
    }

    #[test]
    fn endpoints_map_every_address() {
        let mut networks = HashMap::new();
        networks.insert(
            "bridge".to_owned(),
            EndpointSettings {
                ip_address: Some("172.17.0.2".into()),
                global_ipv6_address: Some("fd00:dead::2".into()),
                ..Default::default()
            },
        );
        networks.insert(
            "host".to_owned(),
            EndpointSettings {
                ip_address: Some(String::new()),
                ..Default::default()
            },
        );
        let mut map = HashMap::new();
        insert_endpoints(
            &mut map,
            "web",
            "0123456789abcdef0123",
            "busybox:latest",
            &networks,
        );
        assert_eq!(map.len(), 2);
        let c = &map[&"172.17.0.2".parse::<IpAddr>().unwrap()];
        assert_eq!(c.id, "0123456789ab");
        assert_eq!(c.network, "bridge");
        assert_eq!(c.name, "web");
        assert!(map.contains_key(&"fd00:dead::2".parse::<IpAddr>().unwrap()));
    }
}
