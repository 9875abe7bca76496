//! Which hook filters each running container's egress, or why none does
//! (`status`, `verify`, `egress_uncovered_containers`, the daemon's
//! warnings). "No silent gaps": a container the filter cannot see is named
//! with the reason.
//!
//! | container | filtered by |
//! |---|---|
//! | on a bridge network | its host-side veth's program if one is attached (`links/<veth>`), else the bridge's |
//! | `--network host` | the cgroup hooks, if its cgroup is at or below an attached cgroup |
//! | `--network container:X` | whatever filters X (one network namespace) |
//! | `--network none` | nothing to filter |
//! | macvlan, ipvlan, other drivers | UNCOVERED |
//!
//! A covered container may still have a door its hooks do not watch (a
//! [`Gap`]): it is PARTLY COVERED, never plainly covered
//! (`egress_partly_covered_containers{reason}`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{
    endpoint::{cgroup::is_under, containers::ContainerInfo, networks::Network},
    kernel::cgroup::CgroupAttachment,
};

/// What filters a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// The tc classifier on the bridge its network is.
    Bridge,
    /// The program on its host-side veth.
    Veth,
    /// The cgroup hooks (host network).
    Cgroup,
    /// No network at all: nothing leaves it.
    None,
    Uncovered,
}

impl HookKind {
    pub const fn name(self) -> &'static str {
        match self {
            HookKind::Bridge => "bridge",
            HookKind::Veth => "veth",
            HookKind::Cgroup => "cgroup",
            HookKind::None => "none",
            HookKind::Uncovered => "UNCOVERED",
        }
    }
}

/// A door a covered container's hooks leave open: the container is PARTLY
/// COVERED (`status`, `verify`, `egress_partly_covered_containers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gap {
    /// Host network with CAP_NET_RAW and no BPF LSM program to refuse
    /// AF_PACKET sockets: raw frames pass every cgroup hook.
    AfPacket,
}

impl Gap {
    /// Every gap, in the order `/metrics` lists them.
    pub const ALL: [Gap; 1] = [Gap::AfPacket];

    /// The `reason` label and the JSON spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Gap::AfPacket => "af_packet",
        }
    }
}

/// The gaps of container `c` given its hook; `netns_of` is the container
/// whose network namespace it is in (itself, or X for `container:X`).
fn gaps(c: &ContainerInfo, netns_of: &ContainerInfo, hook: HookKind) -> Vec<Gap> {
    let mut out = Vec::new();
    // No BPF LSM program is loaded (daemon/cgroups.rs says so at start):
    // AF_PACKET sockets are never refused. The capability is c's own.
    if hook == HookKind::Cgroup && netns_of.is_host_network() && c.net_raw {
        out.push(Gap::AfPacket);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerCoverage {
    pub name: String,
    pub id: String,
    pub network_mode: String,
    pub networks: Vec<String>,
    pub hook: HookKind,
    /// The interfaces (bridge, veth) or cgroups whose hooks judge it.
    pub via: Vec<String>,
    /// Why it is UNCOVERED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What of its traffic the hooks do not see, though they filter it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<String>,
    /// Doors its hook leaves open: PARTLY COVERED when not empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partly_covered: Vec<Gap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkCoverage {
    pub name: String,
    pub driver: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The filter runs on its bridge (bridge driver), or it is not a
    /// network packets cross (`host`, `none`).
    pub covered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the kernel has attached, as coverage needs it.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    /// Interfaces with a live attachment (TCX link or legacy filter).
    pub interfaces: BTreeSet<String>,
    pub cgroups: Vec<CgroupAttachment>,
    /// Why the cgroup hooks cannot run here at all (no cgroup2, refused by
    /// the kernel), if they cannot.
    pub cgroup_problem: Option<String>,
    /// The cgroup hooks that are not loaded (refused by this kernel), with
    /// what that leaves unjudged.
    pub cgroup_caveats: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub containers: Vec<ContainerCoverage>,
    pub networks: Vec<NetworkCoverage>,
    /// Running containers no hook filters.
    pub uncovered_containers: usize,
    pub uncovered_networks: usize,
    /// Running containers filtered, but with a door open ([`Gap`]).
    pub partly_covered_containers: usize,
}

impl Coverage {
    /// For each [`Gap`], how many running containers it leaves partly
    /// covered (0 included, so a gauge falls back to 0).
    pub fn partly_covered_by_gap(&self) -> Vec<(Gap, usize)> {
        Gap::ALL
            .iter()
            .map(|g| {
                let n = self
                    .containers
                    .iter()
                    .filter(|c| c.partly_covered.contains(g))
                    .count();
                (*g, n)
            })
            .collect()
    }
}

/// The latest coverage, as `run` follows it (for `/metrics`).
pub type SharedCoverage = std::sync::Arc<std::sync::RwLock<Option<Coverage>>>;

/// The host-side ends of a container's interfaces: for each interface in its
/// network namespace, the peer ifindex (`iflink`) named in ours. Read through
/// the container's own /sys (`/proc/PID/root/sys`, which shows its
/// namespace); empty when that is not readable.
pub fn host_peers(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/root/sys/class/net");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        if name == "lo" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("iflink")) else {
            continue;
        };
        let Ok(peer) = text.trim().parse::<u32>() else {
            continue;
        };
        if let Ok(n) = nix::net::if_::if_indextoname(peer) {
            out.push(n.to_string_lossy().into_owned());
        }
    }
    out
}

fn network_coverage(n: &Network, attached: &Attached) -> NetworkCoverage {
    let (covered, reason) = match (&n.interface, n.uncovered()) {
        (Some(i), _) if attached.interfaces.contains(i) => (true, None),
        (Some(i), _) => (
            false,
            Some(format!(
                "bridge {i} of network {} is not filtered (not attached)",
                n.name
            )),
        ),
        (None, Some(why)) => (false, Some(why)),
        (None, None) if n.driver == "overlay" => {
            if attached.interfaces.contains("docker_gwbridge") {
                (true, None)
            } else {
                (
                    false,
                    Some(format!(
                        "overlay network {}: off-host traffic leaves through docker_gwbridge, \
                         which is not filtered",
                        n.name
                    )),
                )
            }
        }
        (None, None) => (true, None),
    };
    NetworkCoverage {
        name: n.name.clone(),
        driver: n.driver.clone(),
        interface: n.interface.clone(),
        covered,
        reason,
    }
}

fn host_network(
    c: &ContainerInfo,
    attached: &Attached,
) -> (HookKind, Vec<String>, Option<String>, Vec<String>) {
    if let Some(p) = &attached.cgroup_problem {
        return (
            HookKind::Uncovered,
            vec![],
            Some(format!("host network: {p}")),
            vec![],
        );
    }
    let Some(cg) = &c.cgroup else {
        return (
            HookKind::Uncovered,
            vec![],
            Some(
                "host network: its cgroup is not visible from here (the loader needs the \
                 host's cgroup namespace and PID namespace)"
                    .into(),
            ),
            vec![],
        );
    };
    let under: Vec<&CgroupAttachment> = attached
        .cgroups
        .iter()
        .filter(|a| is_under(cg, &a.cgroup) && a.judges_sockets())
        .collect();
    if under.is_empty() {
        return (
            HookKind::Uncovered,
            vec![],
            Some(format!(
                "host network: its cgroup /{cg} is not at or below a cgroup the hooks are \
                 attached to (attach.cgroups, --cgroup)"
            )),
            vec![],
        );
    }
    let mut caveats = attached.cgroup_caveats.clone();
    if !under
        .iter()
        .any(|a| a.live.contains(&egress_ebpf_common::hook::Hook::CgroupSkb))
        && attached.cgroup_caveats.is_empty()
    {
        caveats.push("raw and ICMP sockets not judged (no cgroup_skb/egress link)".into());
    }
    if c.net_raw {
        caveats.push(
            "holds CAP_NET_RAW: packet (AF_PACKET) sockets bypass the cgroup hooks \
             (--cap-drop NET_RAW closes it)"
                .into(),
        );
    }
    (
        HookKind::Cgroup,
        under.iter().map(|a| format!("/{}", a.cgroup)).collect(),
        None,
        caveats,
    )
}

fn bridged(
    c: &ContainerInfo,
    networks: &[NetworkCoverage],
    attached: &Attached,
    peers: &[String],
) -> (HookKind, Vec<String>, Option<String>, Vec<String>) {
    let veths: Vec<String> = peers
        .iter()
        .filter(|p| attached.interfaces.contains(*p))
        .filter(|p| !networks.iter().any(|n| n.interface.as_deref() == Some(p)))
        .cloned()
        .collect();
    let mut kinds = BTreeSet::new();
    let mut via = Vec::new();
    for name in &c.networks {
        let Some(n) = networks.iter().find(|n| n.name == *name) else {
            return (
                HookKind::Uncovered,
                vec![],
                Some(format!("network {name} is not in the engine's list")),
                vec![],
            );
        };
        if !n.covered {
            if !veths.is_empty() && n.interface.is_some() {
                // Its veth is filtered even though the bridge is not.
                kinds.insert(HookKind::Veth);
                continue;
            }
            return (HookKind::Uncovered, vec![], n.reason.clone(), vec![]);
        }
        match &n.interface {
            Some(_) if !veths.is_empty() => {
                kinds.insert(HookKind::Veth);
            }
            Some(i) => {
                kinds.insert(HookKind::Bridge);
                via.push(i.clone());
            }
            None if n.driver == "overlay" => {
                kinds.insert(HookKind::Bridge);
                via.push("docker_gwbridge".into());
            }
            None => {}
        }
    }
    if kinds.contains(&HookKind::Veth) {
        via.extend(veths);
    }
    via.sort();
    via.dedup();
    // A per-container program judges before the bridge does.
    let hook = if kinds.contains(&HookKind::Veth) {
        HookKind::Veth
    } else if kinds.contains(&HookKind::Bridge) {
        HookKind::Bridge
    } else {
        HookKind::None
    };
    (hook, via, None, vec![])
}

/// The coverage of every container and network. `peers(c)` gives a
/// container's host-side interfaces ([`host_peers`] on a real host).
pub fn compute(
    containers: &[ContainerInfo],
    networks: &[Network],
    attached: &Attached,
    peers: impl Fn(&ContainerInfo) -> Vec<String>,
) -> Coverage {
    let nets: Vec<NetworkCoverage> = networks
        .iter()
        .filter(|n| n.driver != "host" && n.driver != "null")
        .map(|n| network_coverage(n, attached))
        .collect();
    let direct = |c: &ContainerInfo| {
        if c.is_host_network() {
            host_network(c, attached)
        } else if c.network_mode == "none" {
            (HookKind::None, vec![], None, vec![])
        } else {
            bridged(c, &nets, attached, &peers(c))
        }
    };
    let mut out = Vec::new();
    for c in containers {
        let mut netns_of = c;
        let (hook, via, reason, caveats) = match c.network_mode.strip_prefix("container:") {
            Some(other) => match containers
                .iter()
                .find(|o| other.starts_with(&o.id) || o.name == other)
            {
                Some(o) => {
                    netns_of = o;
                    let (h, v, r, cv) = direct(o);
                    (
                        h,
                        v,
                        r.map(|r| format!("shares {}'s network namespace: {r}", o.name)),
                        cv,
                    )
                }
                None => (
                    HookKind::Uncovered,
                    vec![],
                    Some(format!(
                        "shares the network namespace of {other}, which is not running here"
                    )),
                    vec![],
                ),
            },
            None => direct(c),
        };
        out.push(ContainerCoverage {
            name: c.name.clone(),
            id: c.id.clone(),
            network_mode: c.network_mode.clone(),
            networks: c.networks.clone(),
            hook,
            via,
            reason,
            caveats,
            partly_covered: gaps(c, netns_of, hook),
        });
    }
    Coverage {
        uncovered_containers: out.iter().filter(|c| c.hook == HookKind::Uncovered).count(),
        partly_covered_containers: out.iter().filter(|c| !c.partly_covered.is_empty()).count(),
        uncovered_networks: nets.iter().filter(|n| !n.covered).count(),
        containers: out,
        networks: nets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_ebpf_common::hook::Hook;

    fn container(name: &str, mode: &str, networks: &[&str]) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            id: format!("{name}0000000000")[..12].to_owned(),
            image: "busybox".into(),
            network_mode: mode.into(),
            networks: networks.iter().map(|s| s.to_string()).collect(),
            pid: Some(1),
            cgroup: Some(format!("docker/{name}")),
            net_raw: false,
        }
    }

    fn network(name: &str, driver: &str, interface: Option<&str>) -> Network {
        Network {
            id: format!("{name}-id"),
            name: name.into(),
            driver: driver.into(),
            interface: interface.map(str::to_owned),
            parent: None,
        }
    }

    fn attached() -> Attached {
        Attached {
            interfaces: ["docker0".to_string(), "custom0".into()].into(),
            cgroups: vec![CgroupAttachment {
                cgroup: "docker".into(),
                live: Hook::CGROUP.to_vec(),
                stale: vec![],
                program_ids: vec![7],
            }],
            cgroup_problem: None,
            cgroup_caveats: vec![],
        }
    }

    #[test]
    fn every_kind_of_container() {
        let networks = [
            network("bridge", "bridge", Some("docker0")),
            network("custom", "bridge", Some("custom0")),
            network("late", "bridge", Some("br-0123456789ab")),
            network("mv", "macvlan", None),
            network("host", "host", None),
            network("none", "null", None),
        ];
        let mut hn = container("hn", "host", &["host"]);
        hn.net_raw = true;
        let mut stray = container("stray", "host", &["host"]);
        stray.cgroup = Some("elsewhere/stray".into());
        let containers = [
            container("web", "bridge", &["bridge"]),
            container("cu", "custom", &["custom"]),
            container("lt", "late", &["late"]),
            container("mac", "mv", &["mv"]),
            hn,
            stray,
            container("iso", "none", &["none"]),
            container("side", "container:web0000000000ffff", &[]),
            container("veth", "bridge", &["bridge"]),
        ];
        let c = compute(&containers, &networks, &attached(), |c| {
            if c.name == "veth" {
                vec!["vethabc".into()]
            } else {
                vec![]
            }
        });
        let get = |n: &str| c.containers.iter().find(|c| c.name == n).unwrap();
        assert_eq!(
            (get("web").hook, get("web").via.clone()),
            (HookKind::Bridge, vec!["docker0".into()])
        );
        assert_eq!(get("cu").via, ["custom0"]);
        assert_eq!(get("lt").hook, HookKind::Uncovered);
        assert!(
            get("lt")
                .reason
                .as_deref()
                .unwrap()
                .contains("br-0123456789ab")
        );
        assert_eq!(get("mac").hook, HookKind::Uncovered);
        assert!(get("mac").reason.as_deref().unwrap().contains("macvlan"));
        assert_eq!(
            (get("hn").hook, get("hn").via.clone()),
            (HookKind::Cgroup, vec!["/docker".into()])
        );
        assert!(get("hn").caveats.iter().any(|c| c.contains("AF_PACKET")));
        assert_eq!(get("stray").hook, HookKind::Uncovered);
        assert!(
            get("stray")
                .reason
                .as_deref()
                .unwrap()
                .contains("/elsewhere/stray")
        );
        assert_eq!(get("iso").hook, HookKind::None);
        assert_eq!(get("side").hook, HookKind::Bridge);
        // No veth program attached: the bridge; with one, the veth.
        assert_eq!(get("veth").hook, HookKind::Bridge);
        let mut with_veth = attached();
        with_veth.interfaces.insert("vethabc".into());
        let c2 = compute(&containers, &networks, &with_veth, |c| {
            if c.name == "veth" {
                vec!["vethabc".into()]
            } else {
                vec![]
            }
        });
        let v = c2.containers.iter().find(|c| c.name == "veth").unwrap();
        assert_eq!(
            (v.hook, v.via.clone()),
            (HookKind::Veth, vec!["vethabc".into()])
        );
        assert_eq!(c.uncovered_containers, 3);
        // Networks: late (not attached) and mv; host and none are not listed.
        assert_eq!(c.uncovered_networks, 2);
        assert_eq!(c.networks.len(), 4);
    }

    /// CAP_NET_RAW on the host network: covered by the cgroup hooks, but
    /// never plainly (AF_PACKET); without it, or on a bridge, no gap.
    #[test]
    fn host_network_with_net_raw_is_partly_covered() {
        let mut raw = container("raw", "host", &["host"]);
        raw.net_raw = true;
        let noraw = container("noraw", "host", &["host"]);
        let mut bridged = container("web", "bridge", &["bridge"]);
        bridged.net_raw = true;
        let mut side = container("side", "container:raw", &[]);
        side.net_raw = true;
        let mut stray = container("stray", "host", &["host"]);
        stray.net_raw = true;
        stray.cgroup = Some("elsewhere/stray".into());
        let networks = [network("bridge", "bridge", Some("docker0"))];
        let c = compute(
            &[raw, noraw, bridged, side, stray],
            &networks,
            &attached(),
            |_| vec![],
        );
        let get = |n: &str| c.containers.iter().find(|c| c.name == n).unwrap();
        assert_eq!(get("raw").partly_covered, [Gap::AfPacket]);
        assert_eq!(get("side").partly_covered, [Gap::AfPacket]);
        assert!(get("noraw").partly_covered.is_empty());
        assert!(get("web").partly_covered.is_empty());
        // UNCOVERED says more than partly covered.
        assert_eq!(get("stray").hook, HookKind::Uncovered);
        assert!(get("stray").partly_covered.is_empty());
        assert_eq!(c.partly_covered_containers, 2);
        assert_eq!(c.partly_covered_by_gap(), [(Gap::AfPacket, 2)]);
        let j = serde_json::to_value(get("raw")).unwrap();
        assert_eq!(j["partly_covered"], serde_json::json!(["af_packet"]));
        // Without any: every gap is listed, at 0.
        let none = compute(
            &[container("nn", "host", &["host"])],
            &networks,
            &attached(),
            |_| vec![],
        );
        assert_eq!(none.partly_covered_by_gap(), [(Gap::AfPacket, 0)]);
    }

    #[test]
    fn without_cgroup2_host_network_is_uncovered() {
        let mut a = attached();
        a.cgroups.clear();
        a.cgroup_problem = Some("no cgroup2 file system is mounted".into());
        let c = compute(&[container("hn", "host", &["host"])], &[], &a, |_| vec![]);
        assert_eq!(c.containers[0].hook, HookKind::Uncovered);
        assert!(
            c.containers[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("cgroup2")
        );
    }
}
