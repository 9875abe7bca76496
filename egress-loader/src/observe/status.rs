//! What is enforced right now, read from the kernel (pins and link queries),
//! not from any file a loader wrote.

use egress_ebpf_common::config::{PolicyConfig, SCOPE_PER_SOURCE};
use serde::Serialize;

use crate::{
    error::Error,
    kernel::{attach, maps::PolicyMaps, netlink, pins::PinDir, system::PinDirLock},
    observe::counters::rule_descriptions,
    policy::{apply::read_config, values::Period},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub loader_running: bool,
    pub dry_run: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: PolicyStatus,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: Option<u32>,
    pub attached: bool,
    pub attach_type: &'static str,
    pub program_id: Option<u32>,
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

pub fn read(pins: &PinDir) -> Result<Status, Error> {
    if !pins.is_loaded() {
        return Err(Error::NotLoaded(pins.root().to_path_buf()));
    }
    // Links first, policy second: the loader writes the policy before it
    // attaches, so a link seen attached here always comes with its policy.
    let all = attach::interfaces();
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
        });
    }
    // Legacy filters carry no pin: ask netlink about every interface.
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        for (name, index) in &all {
            let ours = rt
                .block_on(netlink::legacy_ingress_filters(*index))
                .into_iter()
                .find(|f| f.program_name == egress_ebpf_common::maps::PROGRAM);
            if let Some(f) = ours {
                interfaces.push(InterfaceStatus {
                    name: name.clone(),
                    ifindex: Some(*index),
                    attached: true,
                    attach_type: "netlink",
                    program_id: Some(f.program_id),
                });
            }
        }
    }
    let maps = PolicyMaps::open(pins)?;
    let config = read_config(&maps.active_config, &maps.policy_config)?;
    let blocked = rule_descriptions(&maps)?
        .into_iter()
        .map(|(rule_id, destination)| BlockedStatus {
            rule_id,
            destination,
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
        scope: if config.scope == SCOPE_PER_SOURCE {
            "per-source"
        } else {
            "global"
        },
        emission_interval_ms: config.emission_ns as f64 / 1e6,
    };
    Ok(Status {
        pin_dir: pins.root().display().to_string(),
        loader_running: PinDirLock::is_held(pins.root()),
        dry_run: config.dry_run != 0,
        interfaces,
        policy: PolicyStatus { blocked, smtp },
    })
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
            "  {:<16} {:<26} {} {}",
            i.name, state, i.attach_type, prog
        );
    }
    let _ = writeln!(t, "blocked destinations:");
    for b in &s.policy.blocked {
        let _ = writeln!(t, "  rule {:<4} {}", b.rule_id, b.destination);
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
