//! What is enforced right now, read from the kernel (pins and link queries).
//! Only where the policy came from (which file, which version) is not in
//! the kernel: that comes from the running loader's state file
//! (`config_record`), checked against the file as it is now.

use egress_ebpf_common::config::{PolicyConfig, SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE};
use serde::Serialize;

use crate::{
    endpoint::{
        containers,
        coverage::{self, Attached, ContainerCoverage, HookKind, NetworkCoverage},
        engine::{DockerEndpoint, EngineError},
        networks,
    },
    error::Error,
    kernel::{
        attach,
        cgroup::{CgroupAttachment, attachments},
        maps::PolicyMaps,
        netlink,
        pins::PinDir,
        system::PinDirLock,
    },
    observe::{
        config_record::{ConfigRecord, read_state},
        counters::rule_texts,
    },
    policy::{apply::read_config, build::sha256_hex, values::Period},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub loader_running: bool,
    pub dry_run: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: PolicyStatus,
    /// Where the policy came from; `None` when no state file of this
    /// filter's loader is readable here (no loader, another mount
    /// namespace, `--state-file none`).
    pub config: Option<ConfigStatus>,
    /// Which hook filters each running container (docs/observability.md,
    /// Coverage).
    pub coverage: CoverageStatus,
}

/// The cgroup hooks' attachments and, with an engine, every running
/// container and the hook that filters it.
#[derive(Debug, Serialize)]
pub struct CoverageStatus {
    /// The cgroup2 mount; `None` on a cgroup v1-only host.
    pub cgroup2: Option<String>,
    /// Why host-network containers cannot be covered on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_problem: Option<String>,
    pub cgroups: Vec<CgroupAttachment>,
    /// The engine asked (`None`: none, `--no-docker`).
    pub engine: Option<String>,
    /// Why it could not be asked; then `containers` and `networks` are empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    pub containers: Vec<ContainerCoverage>,
    pub networks: Vec<NetworkCoverage>,
    pub uncovered_containers: usize,
    /// Filtered, with a door open (`partly_covered` on each).
    pub partly_covered_containers: usize,
}

/// What the kernel has attached, as coverage reads it.
pub fn attached(interfaces: &[InterfaceStatus], pins: &PinDir) -> Attached {
    let tree = crate::endpoint::cgroup::find_host_tree();
    let fs = tree.fs();
    Attached {
        interfaces: interfaces
            .iter()
            .filter(|i| i.attached)
            .map(|i| i.name.clone())
            .collect(),
        cgroups: attachments(pins, fs),
        cgroup_problem: tree.problem(),
        cgroup_caveats: Vec::new(),
    }
}

/// Coverage as the kernel and the engine say it now.
pub fn coverage(
    interfaces: &[InterfaceStatus],
    pins: &PinDir,
    engine: Option<&DockerEndpoint>,
) -> CoverageStatus {
    let att = attached(interfaces, pins);
    let mut out = CoverageStatus {
        cgroup2: crate::endpoint::cgroup::find_host_tree()
            .fs()
            .map(|f| f.mount().display().to_string()),
        cgroup_problem: att.cgroup_problem.clone(),
        cgroups: att.cgroups.clone(),
        engine: engine.map(DockerEndpoint::url),
        engine_error: None,
        containers: Vec::new(),
        networks: Vec::new(),
        uncovered_containers: 0,
        partly_covered_containers: 0,
    };
    let Some(endpoint) = engine else {
        return out;
    };
    // What went wrong is kept as the reason `status` shows.
    let asked = match crate::kernel::runtime::current_thread() {
        Ok(rt) => rt
            .block_on(async {
                let docker = endpoint.connect().await?;
                let nets = networks::list(&docker).await?;
                let list = containers::list(&docker).await?;
                Ok::<_, EngineError>((nets, list))
            })
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match asked {
        Ok((nets, list)) => {
            let c = coverage::compute(&list, &nets, &att, |c| {
                c.pid.map(coverage::host_peers).unwrap_or_default()
            });
            out.uncovered_containers = c.uncovered_containers;
            out.partly_covered_containers = c.partly_covered_containers;
            out.containers = c.containers;
            out.networks = c.networks;
        }
        Err(e) => out.engine_error = Some(e),
    }
    out
}

#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    #[serde(flatten)]
    pub record: ConfigRecord,
    /// SHA-256 of the file as it is now (`None`: no file, or unreadable:
    /// see `file_error`).
    pub file_sha256_now: Option<String>,
    pub file_error: Option<String>,
}

impl ConfigStatus {
    fn read(record: ConfigRecord) -> Self {
        let (now, err) = match &record.path {
            None => (None, None),
            Some(p) => match std::fs::read(p) {
                Ok(b) => (Some(sha256_hex(&b)), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        ConfigStatus {
            record,
            file_sha256_now: now,
            file_error: err,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: Option<u32>,
    pub attached: bool,
    pub attach_type: &'static str,
    pub program_id: Option<u32>,
    /// `bridge` (the bridges' program, the backstop), `endpoint` (a
    /// container's veth: its program and entry, daemon::endpoints) or
    /// `tunnel` (a decapsulating device: the inner packets it hands up).
    pub role: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub blocked: Vec<BlockedStatus>,
    pub smtp: SmtpStatus,
}

#[derive(Debug, Serialize)]
pub struct BlockedStatus {
    pub rule_id: u16,
    pub destination: String,
    /// "drop" or "reject".
    pub action: &'static str,
    /// Ports the rule leaves open ("udp/53").
    pub except: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SmtpStatus {
    pub ports: Vec<u16>,
    pub rate: String,
    pub burst: u64,
    pub scope: &'static str,
    pub emission_interval_ms: f64,
}

/// `N/unit` if the emission interval is an exact division of a unit.
fn rate_text(c: &PolicyConfig) -> String {
    if c.emission_ns == 0 {
        return "unset".into();
    }
    for p in [Period::Second, Period::Minute, Period::Hour, Period::Day] {
        let n = p.nanos() / c.emission_ns;
        if n >= 1 && p.nanos().div_ceil(n) == c.emission_ns {
            return format!("{n}/{}", p.name());
        }
    }
    format!("1 every {} ns", c.emission_ns)
}

/// What is enforced at `pins`; `state_file` is where the running loader
/// records its configuration (`None`: do not look). Coverage without an
/// engine: the interfaces and cgroups only.
pub fn read(pins: &PinDir, state_file: Option<&std::path::Path>) -> Result<Status, Error> {
    read_with_engine(pins, state_file, None)
}

/// [`read`], with every running container of `engine` and its hook.
pub fn read_with_engine(
    pins: &PinDir,
    state_file: Option<&std::path::Path>,
    engine: Option<&DockerEndpoint>,
) -> Result<Status, Error> {
    if !pins.is_loaded() {
        return Err(crate::kernel::maps::not_loaded(pins));
    }
    // Links first, policy second: the loader writes the policy before it
    // attaches, so a link seen attached here always comes with its policy.
    let all = attach::interfaces();
    // An endpoint's entry is written before its link: a link whose
    // interface has one is an endpoint's.
    let endpoints: Vec<u32> = crate::observe::endpoints::read(pins)
        .map(|v| v.into_iter().map(|(e, _)| e.ifindex).collect())
        .unwrap_or_default();
    // A decapsulating device (by its link kind) runs the tunnel program.
    let tunnels: Vec<u32> = crate::endpoint::tunnel::inventory()
        .map(|v| v.into_iter().map(|t| t.ifindex).collect())
        .unwrap_or_default();
    let role = |ifindex: Option<u32>| {
        if ifindex.is_some_and(|i| endpoints.contains(&i)) {
            "endpoint"
        } else if ifindex.is_some_and(|i| tunnels.contains(&i)) {
            "tunnel"
        } else {
            "bridge"
        }
    };
    let mut interfaces = Vec::new();
    for name in pins.pinned_links() {
        let ifindex = all.iter().find(|(n, _)| *n == name).map(|(_, i)| *i);
        let live = attach::live_pinned_link(pins, &name);
        interfaces.push(InterfaceStatus {
            attached: live.is_some(),
            program_id: live.map(|(_, id)| id),
            ifindex,
            name,
            attach_type: "tcx",
            role: role(ifindex),
        });
    }
    // Legacy filters carry no pin: ask netlink about every interface.
    if let Ok(rt) = crate::kernel::runtime::current_thread() {
        for (name, index) in &all {
            let ours = rt
                .block_on(netlink::legacy_ingress_filters(*index))
                .into_iter()
                .find(|f| {
                    use egress_ebpf_common::maps::{
                        ENDPOINT_PROGRAM, PROGRAM, TUNNEL_L3_PROGRAM, TUNNEL_PROGRAM,
                    };
                    [PROGRAM, ENDPOINT_PROGRAM, TUNNEL_PROGRAM, TUNNEL_L3_PROGRAM]
                        .contains(&f.program_name.as_str())
                });
            if let Some(f) = ours {
                use egress_ebpf_common::maps::{
                    ENDPOINT_PROGRAM, TUNNEL_L3_PROGRAM, TUNNEL_PROGRAM,
                };
                let p = f.program_name.as_str();
                interfaces.push(InterfaceStatus {
                    name: name.clone(),
                    ifindex: Some(*index),
                    attached: true,
                    attach_type: "netlink",
                    program_id: Some(f.program_id),
                    role: if p == ENDPOINT_PROGRAM {
                        "endpoint"
                    } else if p == TUNNEL_PROGRAM || p == TUNNEL_L3_PROGRAM {
                        "tunnel"
                    } else {
                        "bridge"
                    },
                });
            }
        }
    }
    let maps = PolicyMaps::open(pins)?;
    let config = read_config(&maps.active_config, &maps.policy_config)?;
    let blocked = rule_texts(&maps)?
        .into_iter()
        .map(|(rule_id, r)| BlockedStatus {
            rule_id,
            destination: r.destination,
            action: r.action,
            except: r.except,
        })
        .collect();
    let n = (config.smtp_port_count as usize).min(config.smtp_ports.len());
    let smtp = SmtpStatus {
        ports: config.smtp_ports[..n].to_vec(),
        rate: rate_text(&config),
        burst: config
            .burst_window_ns
            .checked_div(config.emission_ns)
            .unwrap_or(0),
        scope: match config.scope {
            SCOPE_PER_SOURCE => "per-source",
            SCOPE_PER_CONTAINER => "per-container",
            _ => "global",
        },
        emission_interval_ms: config.emission_ns as f64 / 1e6,
    };
    let coverage = coverage(&interfaces, pins, engine);
    Ok(Status {
        coverage,
        pin_dir: pins.root().display().to_string(),
        loader_running: PinDirLock::is_held(pins.root()),
        dry_run: config.dry_run != 0,
        interfaces,
        policy: PolicyStatus { blocked, smtp },
        config: state_file
            .and_then(|f| read_state(f, pins.root()))
            .map(ConfigStatus::read),
    })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn render_config(t: &mut String, c: &ConfigStatus) {
    use std::fmt::Write;
    let r = &c.record;
    let Some(path) = &r.path else {
        let _ = writeln!(
            t,
            "config:   defaults and flags, no file (generation {}, applied {})",
            r.generation,
            when(r.applied_at)
        );
        return;
    };
    let sha = r.sha256.as_deref().unwrap_or("?");
    let _ = writeln!(
        t,
        "config:   {path} sha256:{} (generation {}, applied {} on {}{})",
        short(sha),
        r.generation,
        when(r.applied_at),
        r.applied_by.name(),
        if r.follows_file {
            "; followed: edits apply on their own"
        } else {
            "; re-read on SIGHUP/reload"
        }
    );
    match (&c.file_sha256_now, &c.file_error) {
        (Some(now), _) if now == sha => {}
        (now, err) => {
            let what = match (now, err) {
                (Some(now), _) => format!("sha256:{}", short(now)),
                (None, Some(e)) => format!("unreadable ({e})"),
                (None, None) => "unreadable".into(),
            };
            let refused = r
                .last_refused
                .as_ref()
                .filter(|f| f.sha256.is_none() || f.sha256 == *now);
            match refused {
                Some(f) => {
                    let _ = writeln!(
                        t,
                        "          the file now is {what}: REFUSED {} ({}): {}; the version above stays in force",
                        when(f.at),
                        f.trigger.name(),
                        f.error
                    );
                }
                None => {
                    let _ = writeln!(
                        t,
                        "          the file now is {what}: not applied yet{}",
                        if r.follows_file {
                            " (a change is applied within a second)"
                        } else {
                            " (egress-loader reload applies it)"
                        }
                    );
                }
            }
        }
    }
}

pub fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "pin dir:  {}", s.pin_dir);
    let _ = writeln!(
        t,
        "loader:   {}",
        if s.loader_running {
            "running"
        } else {
            "not running (the pinned filter keeps enforcing)"
        }
    );
    let _ = writeln!(
        t,
        "mode:     {}",
        if s.dry_run {
            "dry-run (counting, dropping nothing)"
        } else {
            "enforcing"
        }
    );
    if let Some(c) = &s.config {
        render_config(&mut t, c);
    }
    let _ = writeln!(t, "interfaces:");
    if s.interfaces.is_empty() {
        let _ = writeln!(t, "  (none attached)");
    }
    for i in &s.interfaces {
        let state = if i.attached {
            "attached"
        } else {
            "NOT attached (stale pin)"
        };
        let prog = i
            .program_id
            .map(|p| format!("prog {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "  {:<16} {:<26} {} {} ({})",
            i.name, state, i.attach_type, prog, i.role
        );
    }
    render_coverage(&mut t, &s.coverage);
    let _ = writeln!(t, "blocked destinations:");
    for b in &s.policy.blocked {
        let except = if b.except.is_empty() {
            String::new()
        } else {
            format!(" except {}", b.except.join(","))
        };
        let _ = writeln!(
            t,
            "  rule {:<4} {:<6} {}{except}",
            b.rule_id, b.action, b.destination
        );
    }
    let p = &s.policy.smtp;
    let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        t,
        "rate-limited TCP connection attempts: ports {} at {} burst {} ({} scope)",
        ports.join(","),
        p.rate,
        p.burst,
        p.scope
    );
    t
}

fn render_coverage(t: &mut String, c: &CoverageStatus) {
    use std::fmt::Write;
    let _ = writeln!(
        t,
        "cgroup hooks (host-network containers){}:",
        match &c.cgroup2 {
            Some(m) => format!(", cgroup2 at {m}"),
            None => String::new(),
        }
    );
    if let Some(p) = &c.cgroup_problem {
        let _ = writeln!(t, "  NOT COVERED: {p}");
    } else if c.cgroups.is_empty() {
        let _ = writeln!(t, "  (none attached)");
    }
    for a in &c.cgroups {
        let live: Vec<&str> = a.live.iter().map(|h| h.name()).collect();
        let stale: Vec<&str> = a.stale.iter().map(|h| h.name()).collect();
        let progs: Vec<String> = a.program_ids.iter().map(u32::to_string).collect();
        let _ = writeln!(
            t,
            "  /{:<24} {}{}{}",
            a.cgroup,
            if live.is_empty() {
                "NOT attached (stale pins)".to_owned()
            } else {
                format!("attached: {}", live.join(" "))
            },
            if stale.is_empty() {
                String::new()
            } else {
                format!("; STALE: {}", stale.join(" "))
            },
            if progs.is_empty() {
                String::new()
            } else {
                format!(" (prog {})", progs.join(","))
            }
        );
    }
    match (&c.engine, &c.engine_error) {
        (None, _) => {
            let _ = writeln!(t, "containers: no engine asked (--no-docker)");
        }
        (Some(url), Some(e)) => {
            let _ = writeln!(t, "containers: the engine at {url} cannot be asked: {e}");
        }
        (Some(url), None) => {
            let partly = match c.partly_covered_containers {
                0 => String::new(),
                n => format!(", {n} PARTLY COVERED"),
            };
            let _ = writeln!(
                t,
                "containers (engine {url}): {} running, {} UNCOVERED{partly}",
                c.containers.len(),
                c.uncovered_containers
            );
            if !c.containers.is_empty() {
                let _ = writeln!(t, "  {:<20} {:<20} hook", "name", "networks");
            }
            for k in &c.containers {
                let networks = if k.networks.is_empty() {
                    k.network_mode.clone()
                } else {
                    k.networks.join(",")
                };
                let hook = match k.hook {
                    HookKind::Uncovered => format!(
                        "UNCOVERED: {}",
                        k.reason.as_deref().unwrap_or("no hook filters it")
                    ),
                    HookKind::None => "none (no network)".to_owned(),
                    h if k.via.is_empty() => h.name().to_owned(),
                    h => format!("{} ({})", h.name(), k.via.join(", ")),
                };
                let hook = if k.partly_covered.is_empty() {
                    hook
                } else {
                    let gaps: Vec<_> = k.partly_covered.iter().map(|g| g.name()).collect();
                    format!("{hook}: PARTLY COVERED ({})", gaps.join(", "))
                };
                let _ = writeln!(t, "  {:<20} {:<20} {hook}", k.name, networks);
                for cv in &k.caveats {
                    let _ = writeln!(t, "  {:<20} {:<20}   note: {cv}", "", "");
                }
            }
            for n in c.networks.iter().filter(|n| !n.covered) {
                let _ = writeln!(
                    t,
                    "  network {} ({}): NOT COVERED: {}",
                    n.name,
                    n.driver,
                    n.reason.as_deref().unwrap_or("not filtered")
                );
            }
        }
    }
}
