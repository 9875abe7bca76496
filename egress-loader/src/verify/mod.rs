//! `verify`: proves, on this host, that each attached bridge really filters.
//!
//! For each bridge it plugs a throwaway network namespace into the bridge
//! (a veth whose bridge end is a port of the bridge, with an unused address
//! of the bridge's subnet on the other end), sends from there a TCP SYN to
//! the metadata address and a few SYNs to an SMTP port of a documentation
//! address, and reads the bridge's own counters (`IFACE_SLOTS`/`IFACE_COUNTERS`) before
//! and after. That port is named so that the loader leaves it to the
//! bridge program (the backstop). Then it plugs in a second port, which the
//! running loader attaches the endpoint program to like a container's veth,
//! and checks that a metadata SYN from there is dropped and counted on
//! that endpoint (the per-endpoint path).
//!
//! Each decapsulating device (vxlan, tun...: endpoint::tunnel) must run the
//! tunnel program; the program in its attachment is run by the kernel on an
//! inner SYN to the metadata address as if on that device
//! (`tunnel_probe`), and must drop it and count it there.
//!
//! The probes carry TTL 1: the classifier sees them on the bridge's ingress
//! like any container packet, but the host never forwards them (it answers
//! "time exceeded" instead), so nothing a probe sends can leave the host,
//! whether the filter works or not. That answer is also the evidence: a
//! probe the filter dropped gets none.
//!
//! The namespace is anonymous and held only by the probing thread: the
//! kernel deletes it, and the veth pair with it, when that thread ends,
//! even if the process is killed; the bridge end is also deleted explicitly.
//!
//! ```text
//! report        the per-bridge PASS/FAIL report
//! probe         TTL-1 SYNs and their answers
//! cgroup_probe  a connect() from a new cgroup below each attached cgroup
//! tunnel_probe  the tunnel program, test-run as on each decapsulating device
//! netns    the probe's namespace, veth, address and route
//! netlink  the bridge's subnet, the addresses in use, port state
//! error    why a bridge's probe could not run, step by step
//! ```

pub mod cgroup_probe;
mod error;
mod netlink;
mod netns;
pub mod probe;
pub mod report;
pub mod tunnel_probe;

use std::{collections::HashMap, net::SocketAddrV4};

use aya::maps::lpm_trie::Key;
use egress_ebpf_common::{
    counters::{CounterId, IfaceCounters},
    rules::{DestPort, PROTO_TCP},
};

use crate::{
    endpoint::{
        containers::id_in_cgroup,
        coverage::HookKind,
        engine::DockerEndpoint,
        tunnel::{self, Layer, Tunnel},
        veth::{self, VERIFY_BACKSTOP_PREFIX},
    },
    error::Error,
    kernel::{attach, maps::PolicyMaps, pins::PinDir},
    observe::{
        counters::{read_hooks, read_interface},
        status,
    },
    policy::{apply::read_config, glob::pattern_matches},
    verify::{
        error::BridgeProbeError,
        netlink::{bridge_net, pick_probe_address},
        netns::ProbeRun,
        probe::{METADATA_PROBE, SMTP_PROBE_ADDR},
        report::{
            Answer, BridgeReport, CgroupReport, EndpointProbe, MetadataProbe, Report, SmtpProbe,
            TunnelReport,
        },
    },
};

pub struct VerifyOptions {
    pub pins: PinDir,
    /// Interfaces to verify (names or patterns); empty: every attached one.
    pub patterns: Vec<String>,
    /// SMTP SYNs per bridge. Each is charged to the SMTP bucket (the whole
    /// host's with `scope = "global"`).
    pub smtp_syns: u32,
    /// The engine whose containers and networks must all be covered.
    pub engine: Option<DockerEndpoint>,
}

/// Which interfaces to probe: every attached one, or every one matching
/// `patterns` (attached or not: an unfiltered bridge is a failure).
fn targets(
    patterns: &[String],
    present: &[(String, u32)],
    tunnels: &[Tunnel],
    status: &status::Status,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if patterns.is_empty() {
        // The bridges: an endpoint (a container's veth) is probed through
        // its bridge's endpoint probe.
        for i in status
            .interfaces
            .iter()
            .filter(|i| i.attached && i.role == "bridge")
        {
            if !out.contains(&i.name) {
                out.push(i.name.clone());
            }
        }
        if out.is_empty() {
            problems
                .push("the filter is attached to no interface (see `egress-loader status`)".into());
        }
        return out;
    }
    for p in patterns {
        let matched: Vec<&String> = present
            .iter()
            .map(|(n, _)| n)
            .filter(|n| pattern_matches(p, n))
            .collect();
        if matched.is_empty() {
            problems.push(format!("no interface matches {p:?}"));
        }
        // A tunnel is probed as one (probe_tunnels), not as a bridge.
        for n in matched
            .into_iter()
            .filter(|n| !tunnels.iter().any(|t| &t.name == *n))
        {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// What the policy in the maps says about the probes.
struct Plan {
    dry_run: bool,
    smtp_port: Option<u16>,
    metadata_blocked: bool,
}

fn plan(pins: &PinDir) -> Result<Plan, Error> {
    let maps = PolicyMaps::open(pins)?;
    let config = read_config(&maps.active_config, &maps.policy_config)?;
    let n = (config.smtp_port_count as usize).min(config.smtp_ports.len());
    let ports = &config.smtp_ports[..n];
    let smtp_port = if ports.contains(&25) {
        Some(25)
    } else {
        ports.first().copied()
    };
    let key = Key::new(32, METADATA_PROBE.ip().octets());
    let metadata_blocked = maps.blocked_v4.get(&key, 0).is_ok_and(|rule| {
        rule.matching_rule(PROTO_TCP, DestPort::known(METADATA_PROBE.port()))
            .is_hit()
    });
    Ok(Plan {
        dry_run: config.dry_run != 0,
        smtp_port,
        metadata_blocked,
    })
}

pub fn verify(opts: &VerifyOptions) -> Result<Report, Error> {
    let status = status::read_with_engine(&opts.pins, None, opts.engine.as_ref())?;
    let plan = plan(&opts.pins)?;
    let present = attach::interfaces();
    let mut problems = Vec::new();
    if !plan.metadata_blocked {
        problems.push(format!(
            "the policy does not block TCP to {METADATA_PROBE}: the metadata probe cannot show a drop"
        ));
    }
    let tunnels: Vec<Tunnel> = tunnel::inventory()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            opts.patterns.is_empty() || opts.patterns.iter().any(|p| pattern_matches(p, &t.name))
        })
        .collect();
    let names = targets(&opts.patterns, &present, &tunnels, &status, &mut problems);
    let rt = crate::kernel::runtime::current_thread()?;
    let mut bridges = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let ifindex = present.iter().find(|(p, _)| p == name).map(|(_, i)| *i);
        let att = status
            .interfaces
            .iter()
            .find(|i| &i.name == name && i.attached);
        let mut report = BridgeReport {
            interface: name.clone(),
            ifindex,
            attached: att.is_some(),
            attach_type: att.map(|a| a.attach_type),
            program_id: att.and_then(|a| a.program_id),
            bridge_address: None,
            probe_address: None,
            metadata: None,
            smtp: None,
            packets_seen: 0,
            endpoint: None,
            problems: Vec::new(),
        };
        if !report.attached {
            report
                .problems
                .push(format!("the filter is not attached to {name}"));
        }
        match ifindex {
            None => report.problems.push(format!("{name} does not exist")),
            Some(index) => {
                if let Err(e) = probe_bridge(&rt, opts, &plan, index, n, &mut report) {
                    report.problems.push(e.to_string());
                }
            }
        }
        bridges.push(report);
    }
    let (uncovered, notes) = coverage_lines(&status.coverage);
    Ok(Report {
        pin_dir: opts.pins.root().display().to_string(),
        dry_run: plan.dry_run,
        bridges,
        tunnels: probe_tunnels(&opts.pins, &tunnels, &status, &plan),
        cgroups: probe_cgroups(&opts.pins, &status.coverage, &plan),
        uncovered,
        notes,
        problems,
    })
}

/// The containers and networks no hook sees (FAIL each), and the facts
/// about coverage that are not failures.
fn coverage_lines(c: &status::CoverageStatus) -> (Vec<String>, Vec<String>) {
    let mut uncovered = Vec::new();
    let mut notes = Vec::new();
    for k in c
        .containers
        .iter()
        .filter(|k| k.hook == HookKind::Uncovered)
    {
        uncovered.push(format!(
            "container {} ({}): UNCOVERED: {}",
            k.name,
            k.id,
            k.reason.as_deref().unwrap_or("no hook filters it")
        ));
    }
    for n in c.networks.iter().filter(|n| !n.covered) {
        uncovered.push(format!(
            "network {} ({}): NOT COVERED: {}",
            n.name,
            n.driver,
            n.reason.as_deref().unwrap_or("not filtered")
        ));
    }
    for k in &c.containers {
        // Never plainly covered: the note says what its hook leaves open.
        let partly = if k.partly_covered.is_empty() {
            ""
        } else {
            "PARTLY COVERED: "
        };
        for cv in &k.caveats {
            notes.push(format!("container {}: {partly}{cv}", k.name));
        }
    }
    match (&c.engine, &c.engine_error) {
        (None, _) => notes.push("no engine asked (--no-docker): containers not checked".into()),
        (Some(url), Some(e)) => notes.push(format!(
            "the engine at {url} cannot be asked ({e}): containers not checked"
        )),
        _ => {}
    }
    if let Some(p) = &c.cgroup_problem {
        notes.push(format!("host-network containers are not covered: {p}"));
    }
    (uncovered, notes)
}

/// Each decapsulating device: attached, and its program drops an inner SYN
/// to the metadata address run as on that device (tunnel_probe). One
/// that is not attached is a FAIL: what it decapsulates reaches the host's
/// routing unjudged (`attach.tunnels = false` included: never silent).
fn probe_tunnels(
    pins: &PinDir,
    tunnels: &[Tunnel],
    status: &status::Status,
    plan: &Plan,
) -> Vec<TunnelReport> {
    let mut out = Vec::new();
    for t in tunnels {
        let att = status
            .interfaces
            .iter()
            .find(|i| i.name == t.name && i.attached && i.role == "tunnel");
        let mut r = TunnelReport {
            interface: t.name.clone(),
            ifindex: t.ifindex,
            kind: t.kind.clone(),
            layer: match t.layer {
                Layer::Ethernet => "ethernet",
                Layer::Ip => "ip",
            },
            attached: att.is_some(),
            program_id: att.and_then(|a| a.program_id),
            dropped: None,
            metadata_blocked: 0,
            problems: Vec::new(),
        };
        match r.program_id {
            None => r.problems.push(format!(
                "the tunnel program is not attached to {}: the packets it decapsulates are not judged",
                t.name
            )),
            Some(id) => match tunnel_probe::probe(pins, t, id) {
                Ok(o) => {
                    r.dropped = Some(o.dropped);
                    r.metadata_blocked = o.metadata_blocked;
                    if !o.dropped {
                        r.problems.push(format!(
                            "the inner SYN to the metadata address passed{}",
                            if plan.dry_run {
                                ": the filter is in dry-run"
                            } else {
                                ""
                            }
                        ));
                    }
                    if o.metadata_blocked == 0 {
                        r.problems
                            .push(format!("metadata_blocked did not move on {}", t.name));
                    }
                }
                Err(e) => r.problems.push(e.to_string()),
            },
        }
        out.push(r);
    }
    out
}

/// A connect() to the metadata address from a new cgroup below each cgroup
/// the hooks are attached to (not below a container's own cgroup).
fn probe_cgroups(pins: &PinDir, c: &status::CoverageStatus, plan: &Plan) -> Vec<CgroupReport> {
    let Some(fs) = crate::endpoint::cgroup::find_host_tree().fs().cloned() else {
        return Vec::new();
    };
    let blocked = || -> u64 {
        read_hooks(pins)
            .ok()
            .and_then(|h| {
                h.into_iter()
                    .find(|h| h.hook == egress_ebpf_common::hook::Hook::Connect4.name())
            })
            .map(|h| h.get(CounterId::MetadataBlocked).packets)
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for a in &c.cgroups {
        let mut r = CgroupReport {
            cgroup: format!("/{}", a.cgroup),
            hooks: a.live.iter().map(|h| h.name()).collect(),
            program_ids: a.program_ids.clone(),
            connect: None,
            metadata_blocked: 0,
            note: None,
            problems: Vec::new(),
        };
        if !a.stale.is_empty() {
            let stale: Vec<&str> = a.stale.iter().map(|h| h.name()).collect();
            r.problems
                .push(format!("links not attached: {}", stale.join(" ")));
        }
        if !a.judges_sockets() {
            r.problems
                .push("the hooks (connect4/6, cgroup_skb/egress) are not all attached".into());
        }
        if id_in_cgroup(&a.cgroup).is_some() {
            r.note = Some("not probed: a container's own cgroup".into());
            out.push(r);
            continue;
        }
        if !r.problems.is_empty() {
            out.push(r);
            continue;
        }
        let before = blocked();
        match cgroup_probe::probe(&fs, &a.cgroup) {
            Ok(o) => {
                r.metadata_blocked = blocked().saturating_sub(before);
                r.connect = Some(match o {
                    cgroup_probe::Outcome::Refused => "refused (EPERM)".into(),
                    cgroup_probe::Outcome::NotRefused => "NOT refused".into(),
                    cgroup_probe::Outcome::Failed(errno) => {
                        format!("failed: {}", std::io::Error::from_raw_os_error(errno))
                    }
                });
                if o != cgroup_probe::Outcome::Refused {
                    r.problems.push(format!(
                        "the connect() was not refused{}",
                        if plan.dry_run {
                            ": the filter is in dry-run"
                        } else {
                            ""
                        }
                    ));
                }
                if r.metadata_blocked == 0 {
                    r.problems
                        .push("metadata_blocked did not move on cgroup/connect4".into());
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
        out.push(r);
    }
    out
}

fn counters_delta(before: &IfaceCounters, after: &IfaceCounters, id: CounterId) -> u64 {
    let i = id as usize;
    after.by_verdict[i]
        .packets
        .saturating_sub(before.by_verdict[i].packets)
}

fn total_packets(c: &IfaceCounters) -> u64 {
    c.by_verdict.iter().map(|v| v.packets).sum()
}

fn probe_bridge(
    rt: &tokio::runtime::Runtime,
    opts: &VerifyOptions,
    plan: &Plan,
    index: u32,
    n: usize,
    report: &mut BridgeReport,
) -> Result<(), BridgeProbeError> {
    let _runtime = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().map_err(BridgeProbeError::Connection)?;
    rt.spawn(conn);
    let net = rt.block_on(bridge_net(&handle, index))?;
    report.bridge_address = Some(format!("{}/{}", net.address, net.prefix));
    let probe = pick_probe_address(net.address, net.prefix, &net.taken)
        .ok_or(BridgeProbeError::NoFreeAddress)?;
    report.probe_address = Some(probe);
    let smtp_target = plan
        .smtp_port
        .map(|p| SocketAddrV4::new(SMTP_PROBE_ADDR, p));
    // The backstop probe's port is one the loader leaves to the bridge
    // (endpoint::veth::VERIFY_BACKSTOP_PREFIX).
    let veth = format!("{VERIFY_BACKSTOP_PREFIX}{:x}x{n}", std::process::id());
    let before = read_interface(&opts.pins, index)?;
    let run = ProbeRun {
        endpoint: None,
        bridge_index: index,
        veth,
        gateway: net.address,
        probe,
        prefix: net.prefix,
        smtp: smtp_target.map(|t| (t, opts.smtp_syns)),
    };
    let answers = std::thread::scope(|s| {
        s.spawn(|| run.run())
            .join()
            .unwrap_or_else(|_| Err(BridgeProbeError::ThreadPanicked))
    })?;
    let after = read_interface(&opts.pins, index)?;
    report.packets_seen = total_packets(&after).saturating_sub(total_packets(&before));
    let blocked = counters_delta(&before, &after, CounterId::MetadataBlocked);
    report.metadata = Some(MetadataProbe {
        target: METADATA_PROBE,
        answer: answers.metadata.clone(),
        metadata_blocked: blocked,
    });
    if let Answer::Answered(how) = &answers.metadata {
        report.problems.push(format!(
            "the metadata probe got through ({how}){}",
            if plan.dry_run {
                ": the filter is in dry-run"
            } else {
                ""
            }
        ));
    }
    if blocked == 0 {
        report.problems.push(format!(
            "metadata_blocked did not move on {}",
            report.interface
        ));
    }
    if let Some(target) = smtp_target {
        let answered = answers
            .smtp
            .iter()
            .filter(|a| matches!(a, Answer::Answered(_)))
            .count() as u32;
        let allowed = counters_delta(&before, &after, CounterId::SmtpAllowed);
        let limited = counters_delta(&before, &after, CounterId::SmtpLimited);
        let sent = answers.smtp.len() as u32;
        if allowed + limited < u64::from(sent) {
            report.problems.push(format!(
                "only {} of {sent} SMTP connection attempts were counted",
                allowed + limited
            ));
        }
        // Only meaningful where the attempts were counted: an answered
        // attempt beyond those admitted means one over the rate passed.
        if limited > 0 && u64::from(answered) > allowed {
            report.problems.push(format!(
                "{} SMTP attempt(s) over the rate got through{}",
                u64::from(answered) - allowed,
                if plan.dry_run {
                    ": the filter is in dry-run"
                } else {
                    ""
                }
            ));
        }
        report.smtp = Some(SmtpProbe {
            target,
            sent,
            answered,
            smtp_allowed: allowed,
            smtp_limited: limited,
        });
    }
    probe_endpoint(opts, &net, probe, index, n, report)
}

/// The per-endpoint path: a second port, which the running loader attaches
/// the endpoint program to like any container's veth; one metadata SYN,
/// counted on that endpoint. Expected where this bridge has endpoints
/// already; elsewhere (`attach.endpoints = false`, or no container yet)
/// an unattached probe port is reported, not failed.
fn probe_endpoint(
    opts: &VerifyOptions,
    net: &netlink::BridgeNet,
    probe: std::net::Ipv4Addr,
    index: u32,
    n: usize,
    report: &mut BridgeReport,
) -> Result<(), BridgeProbeError> {
    let bridge = HashMap::from([(report.interface.clone(), index)]);
    let on_bridge = veth::inventory(&bridge).map_err(BridgeProbeError::ListVeths)?;
    let endpoints = crate::observe::endpoints::read(&opts.pins)?;
    let expected = on_bridge
        .iter()
        .any(|v| endpoints.iter().any(|(e, _)| e.ifindex == v.ifindex));
    let run = ProbeRun {
        endpoint: Some(opts.pins.clone()),
        bridge_index: index,
        veth: format!("egve{:x}x{n}", std::process::id()),
        gateway: net.address,
        probe,
        prefix: net.prefix,
        smtp: None,
    };
    let answers = std::thread::scope(|s| {
        s.spawn(|| run.run())
            .join()
            .unwrap_or_else(|_| Err(BridgeProbeError::ThreadPanicked))
    })?;
    let (attached, blocked) = answers.endpoint.unwrap_or((false, 0));
    if let Answer::Answered(how) = &answers.metadata {
        report.problems.push(format!(
            "the metadata probe through an endpoint port got through ({how})"
        ));
    }
    if attached && blocked == 0 {
        report
            .problems
            .push("metadata_blocked did not move on the endpoint probe's port".into());
    }
    if !attached && expected {
        report.problems.push(
            "the loader did not attach the endpoint program to the probe's port within 3 s \
             (other ports of this bridge have it)"
                .into(),
        );
    }
    report.endpoint = Some(EndpointProbe {
        port: run.veth.clone(),
        attached,
        expected,
        answer: answers.metadata,
        metadata_blocked: blocked,
    });
    Ok(())
}
