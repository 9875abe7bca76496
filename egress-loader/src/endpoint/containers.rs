//! The running containers as coverage needs them: how each is networked
//! (network mode, networks), which process and cgroup it is, and whether it
//! may open packet sockets. One list and one inspect per container, on
//! demand (`status`, `verify`) or when the engine reports a change (`run`).

use bollard::{
    Docker,
    models::{ContainerInspectResponse, SystemInfoCgroupDriverEnum},
    query_parameters::ListContainersOptionsBuilder,
};
use serde::Serialize;

use crate::{endpoint::engine::EngineError, kernel::cgroup::CgroupFs};

/// Docker's short container id, as `docker ps` shows it.
const SHORT_ID: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    /// The short id (12 characters).
    pub id: String,
    pub image: String,
    /// `HostConfig.NetworkMode`: `host`, `none`, `container:<id>`, `bridge`,
    /// or a network's name.
    pub network_mode: String,
    /// The networks it is attached to, by name.
    pub networks: Vec<String>,
    #[serde(skip)]
    pub pid: Option<u32>,
    /// Its cgroup below the cgroup2 mount, when its process is visible here.
    pub cgroup: Option<String>,
    /// It holds CAP_NET_RAW (Docker grants it unless dropped): it can open
    /// packet sockets, which no hook in the host's namespace judges.
    pub net_raw: bool,
}

impl ContainerInfo {
    pub fn from_inspect(i: &ContainerInspectResponse) -> Self {
        let hc = i.host_config.as_ref();
        let caps = |l: Option<&Vec<String>>| {
            l.map(|v| {
                v.iter()
                    .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        };
        let dropped = caps(hc.and_then(|h| h.cap_drop.as_ref()));
        let privileged = hc.and_then(|h| h.privileged).unwrap_or(false);
        let net_raw = privileged || !dropped.iter().any(|c| c == "NET_RAW" || c == "ALL");
        let pid = i
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|&p| p > 0)
            .map(|p| p as u32);
        let mut networks: Vec<String> = i
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        networks.sort();
        ContainerInfo {
            name: i
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            id: i
                .id
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(SHORT_ID)
                .collect(),
            image: i
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            network_mode: hc.and_then(|h| h.network_mode.clone()).unwrap_or_default(),
            networks,
            pid,
            // Relative to this process's cgroup namespace: in a namespace of
            // its own, another's cgroup reads `../../docker/<id>`, which
            // names nothing below the mount; unknown rather than wrong.
            cgroup: pid
                .and_then(CgroupFs::of_pid)
                .filter(|p| !p.split('/').any(|c| c == "..")),
            net_raw,
        }
    }

    /// In the host's network namespace.
    pub fn is_host_network(&self) -> bool {
        self.network_mode == "host"
    }
}

/// Every running container, inspected.
pub async fn list(docker: &Docker) -> Result<Vec<ContainerInfo>, EngineError> {
    let summaries = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
        .await
        .map_err(EngineError::ListContainers)?;
    let mut out = Vec::new();
    for s in summaries {
        let Some(id) = s.id.as_deref() else { continue };
        let info = match docker.inspect_container(id, None).await {
            Ok(i) => ContainerInfo::from_inspect(&i),
            // Gone between the list and the inspect.
            Err(e) => {
                log::debug!("inspecting container {id}: {e}");
                continue;
            }
        };
        if info.pid.is_some() && info.cgroup.is_none() {
            // Its process is not visible: exited since (not a container to
            // report), or in another PID namespace (reported: its cgroup
            // cannot be checked).
            let running = docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|i| i.state.and_then(|s| s.running))
                .unwrap_or(false);
            if !running {
                continue;
            }
        }
        out.push(info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The engine's cgroup driver (`cgroupfs`, `systemd`), if it says.
pub async fn cgroup_driver(docker: &Docker) -> Option<&'static str> {
    match docker.info().await.ok()?.cgroup_driver? {
        SystemInfoCgroupDriverEnum::CGROUPFS => Some("cgroupfs"),
        SystemInfoCgroupDriverEnum::SYSTEMD => Some("systemd"),
        _ => None,
    }
}

/// The 64-hex container id in a cgroup's name: `<id>` (cgroupfs driver),
/// `docker-<id>.scope` (systemd driver), `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`.
pub fn id_in_cgroup(rel: &str) -> Option<&str> {
    let last = rel.rsplit('/').next()?;
    let last = last.strip_suffix(".scope").unwrap_or(last);
    let id = last.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, HostConfig};

    #[test]
    fn ids_in_cgroup_names() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for rel in [
            format!("docker/{id}"),
            format!("system.slice/docker-{id}.scope"),
            format!("kubepods.slice/kubepods-besteffort.slice/x/cri-containerd-{id}.scope"),
            format!("egress-e2e-x/{id}"),
        ] {
            assert_eq!(id_in_cgroup(&rel), Some(id), "{rel}");
        }
        assert_eq!(id_in_cgroup("system.slice/ssh.service"), None);
        assert_eq!(id_in_cgroup("docker"), None);
    }

    #[test]
    fn capabilities_and_modes() {
        let mut i = ContainerInspectResponse {
            name: Some("/hn".into()),
            id: Some("0123456789abcdef".into()),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                pid: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = ContainerInfo::from_inspect(&i);
        assert_eq!((c.name.as_str(), c.id.as_str()), ("hn", "0123456789ab"));
        assert!(c.is_host_network() && c.net_raw && c.pid.is_none());
        i.host_config.as_mut().unwrap().cap_drop = Some(vec!["NET_RAW".into()]);
        assert!(!ContainerInfo::from_inspect(&i).net_raw);
        i.host_config.as_mut().unwrap().cap_drop = Some(vec!["all".into()]);
        assert!(!ContainerInfo::from_inspect(&i).net_raw);
        i.host_config.as_mut().unwrap().privileged = Some(true);
        assert!(ContainerInfo::from_inspect(&i).net_raw);
    }
}
