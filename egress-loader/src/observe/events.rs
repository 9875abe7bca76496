//! Drop events: read from the classifier's ring buffer by `run`, decoded
//! into JSON lines (time, verdict, rule, addresses, ports, interface and,
//! where known, the container), written to stdout and published on a unix
//! socket that `egress-loader events` follows from another process.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use egress_ebpf_common::{
    counters::CounterId,
    events::{DropEvent, EVENT_DRY_RUN, FAMILY_V4},
    hook::Hook,
    rules::{NO_RULE, PROTO_TCP, PROTO_UDP},
};
use serde::Serialize;
use tokio::{io::AsyncWriteExt, io::unix::AsyncFd, net::UnixListener, sync::broadcast};

use crate::{
    endpoint::{
        cgroup::CgroupNames,
        identity::{Container, Identity},
    },
    error::Error,
    kernel::{clock::monotonic_ns, maps, pins::PinDir},
    observe::endpoints::{EndpointInfo, EndpointLookup},
};

pub const DEFAULT_SOCKET: &str = "/run/egress-filter/events.sock";

#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub time: String,
    pub verdict: &'static str,
    /// "drop", "reject", or "none (dry-run)" when nothing was dropped.
    pub action: &'static str,
    /// For a reject: what became of the reply (`sent`, `suppressed` over
    /// the reply budget, `refused`, `unanswerable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u16>,
    pub protocol: String,
    pub src: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    pub dst: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The interface whose hook dropped it (the sender's veth, or the
    /// bridge); none for the cgroup hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Which hook decided: "tc" (the bridge), "veth", or a cgroup hook
    /// ("cgroup/connect4"...).
    pub hook: &'static str,
    /// The sender's cgroup (cgroup hooks), below the cgroup2 mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The endpoint that sent it (its veth, and its container when the
    /// engine named it): who really sent the packet, whatever `src` says.
    /// Absent when the bridge judged it (its veth not attached yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointInfo>,
    /// The sender: for the cgroup hooks the container of its cgroup (which a
    /// container cannot change); else the endpoint's container, else (the
    /// bridge judged) the container that holds `src`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// How `container` was found: `veth` (the kernel's word) or `source
    /// address` (the packet's, forgeable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identified_by: Option<&'static str>,
    /// The container that holds `src`, when it is not the sender (a packet
    /// with a forged source address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_owner: Option<Container>,
}

fn addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        255 => "unknown".into(),
        n => n.to_string(),
    }
}

/// What decoding needs besides the raw event.
pub struct Decoder {
    pub interfaces: HashMap<u32, String>,
    pub rules: crate::observe::counters::RuleDescriptions,
    pub identity: Arc<dyn Identity>,
    /// The endpoint entries (`None`: not readable; events name no endpoint).
    pub endpoints: Option<EndpointLookup>,
    /// Cgroup ids the run loop resolved (`CgroupNames::resolve`) before
    /// decoding.
    pub cgroups: Arc<CgroupNames>,
}

impl Decoder {
    pub fn decode(&self, e: &DropEvent) -> EventRecord {
        let verdict = CounterId::ALL
            .into_iter()
            .find(|c| *c as u8 == e.verdict)
            .map(CounterId::name)
            .unwrap_or("unknown");
        let src = addr(e.family, e.src);
        let ported = e.proto == PROTO_TCP || e.proto == PROTO_UDP;
        let hook = Hook::from_u8(e.hook).unwrap_or(Hook::Tc);
        let cg_owner = hook
            .is_cgroup()
            .then(|| self.cgroups.get(e.cgroup_id))
            .flatten();
        let endpoint = match (&self.endpoints, e.endpoint) {
            (Some(l), id) if id != 0 => Some(l.get(id, &self.interfaces).unwrap_or_else(|| {
                // Its entry is gone already (the veth went away).
                EndpointInfo {
                    veth: self
                        .interfaces
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| format!("ifindex {id}")),
                    ifindex: id,
                    container: None,
                    excepted: false,
                    smtp: "shared",
                }
            })),
            _ => None,
        };
        let owner = if hook.is_cgroup() {
            None
        } else {
            self.identity.lookup(src)
        };
        let (container, identified_by, source_owner) = match &endpoint {
            _ if hook.is_cgroup() => {
                let c = cg_owner.as_ref().and_then(|o| o.container.clone());
                let by = c.as_ref().map(|_| "cgroup");
                (c, by, None)
            }
            Some(ep) => match &ep.container {
                Some(c) => {
                    let same = owner.as_ref().is_some_and(|o| o.id == c.id);
                    let sender = match (&owner, same) {
                        (Some(o), true) => o.clone(),
                        _ => Container {
                            name: c.name.clone(),
                            id: c.id.clone(),
                            image: String::new(),
                            network: String::new(),
                        },
                    };
                    (Some(sender), Some("veth"), owner.filter(|_| !same))
                }
                // The veth is known, its container is not: the address's
                // owner is not evidence of the sender.
                None => (None, None, owner),
            },
            None => {
                let by = owner.as_ref().map(|_| "source address");
                (owner, by, None)
            }
        };
        EventRecord {
            time: humantime::format_rfc3339_millis(wall_clock(e.timestamp_ns)).to_string(),
            verdict,
            action: if e.flags & EVENT_DRY_RUN != 0 {
                "none (dry-run)"
            } else if e.flags & egress_ebpf_common::events::EVENT_REJECT != 0 {
                "reject"
            } else {
                "drop"
            },
            reply: egress_ebpf_common::events::reply_outcome(e.flags).map(|o| o.name()),
            rule: (e.rule_id != NO_RULE)
                .then(|| self.rules.get(e.rule_id).unwrap_or_default().to_string()),
            rule_id: (e.rule_id != NO_RULE).then_some(e.rule_id),
            protocol: protocol_name(e.proto),
            src,
            sport: (ported && e.sport != 0).then_some(e.sport),
            dst: addr(e.family, e.dst),
            dport: (ported && e.dport != 0).then_some(e.dport),
            interface: (!hook.is_cgroup()).then(|| {
                self.interfaces
                    .get(&e.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex {}", e.ifindex))
            }),
            hook: hook.name(),
            cgroup: match (&cg_owner, hook.is_cgroup()) {
                (Some(o), _) => o.cgroup.as_ref().map(|c| format!("/{c}")),
                (None, true) => Some(format!("cgroup id {}", e.cgroup_id)),
                (None, false) => None,
            },
            endpoint,
            container,
            identified_by,
            source_owner,
        }
    }
}

/// An event's stamp to wall-clock time. The classifier stamps events with
/// bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE), which trails
/// CLOCK_MONOTONIC by at most one tick: measured against CLOCK_MONOTONIC
/// here, an event shows at most one tick (1-10 ms, CONFIG_HZ) early.
fn wall_clock(mono_ns: u64) -> SystemTime {
    let now_mono = monotonic_ns();
    let now = SystemTime::now();
    if mono_ns <= now_mono {
        now - Duration::from_nanos(now_mono - mono_ns)
    } else {
        now
    }
}

/// The ring buffer, readable with tokio.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn open(pins: &PinDir) -> Result<Self, Error> {
        let ring: RingBuf<MapData> = maps::events(pins)?;
        // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd
        // owns the ring buffer, and it always reports that same fd.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        Ok(Self { ring })
    }

    /// Waits for events, then returns every one available.
    pub async fn next_batch(&mut self) -> Result<Vec<DropEvent>, Error> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut out = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<DropEvent>() {
                    // SAFETY: the kernel wrote a DropEvent; read_unaligned copes with any alignment.
                    out.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>())
                    });
                }
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// Fans JSON lines out to every `egress-loader events` client.
pub struct Publisher {
    tx: broadcast::Sender<Arc<str>>,
    path: Option<PathBuf>,
}

impl Publisher {
    /// Listens on `path` (created with mode 0600; the parent directory is
    /// created if needed). A path that cannot be used is reported and
    /// events still go to stdout.
    pub fn start(path: Option<&Path>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let Some(path) = path else {
            return Self { tx, path: None };
        };
        let listener = (|| -> std::io::Result<UnixListener> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(l)
        })();
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                log::warn!(
                    "events socket {}: {e}; drop events go to stdout only",
                    path.display()
                );
                return Self { tx, path: None };
            }
        };
        log::info!(
            "drop events: JSON lines on stdout and on {}",
            path.display()
        );
        let sender = tx.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut rx = sender.subscribe();
                tokio::spawn(async move {
                    loop {
                        let line = match rx.recv().await {
                            Ok(l) => l.to_string(),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                format!(
                                    "{{\"lagged\":{n},\"note\":\"this reader fell behind; {n} events skipped\"}}"
                                )
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        };
                        if stream
                            .write_all(format!("{line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            tx,
            path: Some(path.to_path_buf()),
        }
    }

    pub fn publish(&self, record: &EventRecord) {
        let line = serde_json::to_string(record).expect("serializable");
        println!("{line}");
        let _ = self.tx.send(Arc::from(line));
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}
