//! `verify`: proves, on this host, that each attached bridge really filters.
//!
//! For each bridge it plugs a throwaway network namespace into the bridge
//! (a veth whose bridge end is a port of the bridge, with an unused address
//! of the bridge's subnet on the other end), sends from there a TCP SYN to
//! the metadata address and a few SYNs to an SMTP port of a documentation
//! address, and reads the bridge's own counters (`IFACE_SLOTS`/`IFACE_COUNTERS`) before
//! and after.
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

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use aya::maps::lpm_trie::Key;
use egress_ebpf_common::{
    counters::{CounterId, IfaceCounters},
    rules::{DestPort, PROTO_TCP},
};
use futures::TryStreamExt;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{
        BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute,
        LinkFlags, LinkInfo,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute},
};
use nix::sched::CloneFlags;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{
    attach, config::pattern_matches, counters::read_interface, error::Error, maps::PolicyMaps,
    pins::PinDir, policy::read_config, status,
};

/// The instance metadata address every cloud uses (README: defaults).
pub const METADATA_PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80);
/// TEST-NET-1 (RFC 5737): never routed on the internet; TTL 1 keeps the
/// probes on this host anyway.
pub const SMTP_PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
/// How long a probe waits for an answer: below Linux's initial SYN
/// retransmission timeout (1 s), so each probe is exactly one SYN.
pub const PROBE_WAIT: Duration = Duration::from_millis(900);
/// How long the probe's link gets to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the bridge gets to forward on the probe's port: two default STP
/// forward delays (15 s each) and some margin; immediate without STP.
const PORT_FORWARDING_TIMEOUT: Duration = Duration::from_secs(35);

pub struct VerifyOptions {
    pub pins: PinDir,
    /// Interfaces to verify (names or patterns); empty: every attached one.
    pub patterns: Vec<String>,
    /// SMTP SYNs per bridge. Each is charged to the SMTP bucket (the whole
    /// host's with `scope = "global"`).
    pub smtp_syns: u32,
}

/// What became of one SYN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Answer {
    /// Nothing came back before [`PROBE_WAIT`]: dropped.
    None,
    /// Something came back (a connection, a reset, an ICMP error): the
    /// packet got past the bridge's ingress.
    Answered(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct MetadataProbe {
    pub target: SocketAddrV4,
    pub answer: Answer,
    /// `metadata_blocked` on this interface, after minus before.
    pub metadata_blocked: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmtpProbe {
    pub target: SocketAddrV4,
    pub sent: u32,
    /// SYNs that got an answer (time exceeded: they passed the filter).
    pub answered: u32,
    pub smtp_allowed: u64,
    pub smtp_limited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BridgeReport {
    pub interface: String,
    pub ifindex: Option<u32>,
    pub attached: bool,
    /// "tcx" or "netlink" when attached.
    pub attach_type: Option<&'static str>,
    pub program_id: Option<u32>,
    /// The bridge's IPv4 address and prefix ("172.17.0.1/16").
    pub bridge_address: Option<String>,
    pub probe_address: Option<Ipv4Addr>,
    pub metadata: Option<MetadataProbe>,
    pub smtp: Option<SmtpProbe>,
    /// Packets this interface's ingress counted during the probes.
    pub packets_seen: u64,
    /// Why it failed; empty: it passed.
    pub problems: Vec<String>,
}

impl BridgeReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pin_dir: String,
    pub dry_run: bool,
    pub bridges: Vec<BridgeReport>,
    /// Problems not tied to one bridge (a pattern matching nothing...).
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && !self.bridges.is_empty()
            && self.bridges.iter().all(|b| b.passed())
    }

    pub fn failed_bridges(&self) -> Vec<&str> {
        self.bridges
            .iter()
            .filter(|b| !b.passed())
            .map(|b| b.interface.as_str())
            .collect()
    }

    /// The per-bridge PASS/FAIL report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "verify: egress filter at {} ({}); probes carry TTL 1 and never leave this host",
            self.pin_dir,
            if self.dry_run {
                "DRY-RUN: nothing is dropped"
            } else {
                "enforcing"
            }
        );
        for b in &self.bridges {
            let mut facts = Vec::new();
            if let Some(i) = b.ifindex {
                facts.push(format!("ifindex {i}"));
            }
            if let Some(a) = &b.bridge_address {
                facts.push(format!("bridge {a}"));
            }
            if let Some(p) = b.probe_address {
                facts.push(format!("probe {p}"));
            }
            facts.push(match (b.attached, b.attach_type, b.program_id) {
                (true, Some(t), Some(p)) => format!("{t} prog {p}"),
                (true, _, _) => "attached".into(),
                (false, _, _) => "NOT attached".into(),
            });
            let _ = writeln!(
                t,
                "{}  {}  ({})",
                if b.passed() { "PASS" } else { "FAIL" },
                b.interface,
                facts.join(", ")
            );
            if let Some(m) = &b.metadata {
                let _ = writeln!(
                    t,
                    "      metadata  TCP SYN to {}: {}; metadata_blocked +{}",
                    m.target,
                    match &m.answer {
                        Answer::None => "no answer (dropped)".to_owned(),
                        Answer::Answered(how) => format!("GOT THROUGH ({how})"),
                    },
                    m.metadata_blocked
                );
            }
            if let Some(s) = &b.smtp {
                let _ = writeln!(
                    t,
                    "      smtp      {} TCP SYN(s) to {}: smtp_allowed +{}, smtp_limited +{}; {} answered by the host (past the filter), {} not answered",
                    s.sent,
                    s.target,
                    s.smtp_allowed,
                    s.smtp_limited,
                    s.answered,
                    s.sent - s.answered
                );
            }
            if b.metadata.is_some() {
                let _ = writeln!(
                    t,
                    "      counted   {} packet(s) on {}'s ingress during the probes",
                    b.packets_seen, b.interface
                );
            }
            for p in &b.problems {
                let _ = writeln!(t, "      problem   {p}");
            }
        }
        for p in &self.problems {
            let _ = writeln!(t, "problem: {p}");
        }
        let failed = self.failed_bridges();
        if self.passed() {
            let _ = writeln!(t, "verify: all {} bridge(s) filter", self.bridges.len());
        } else if !failed.is_empty() {
            let _ = writeln!(
                t,
                "verify: {} of {} bridge(s) FAILED: {}",
                failed.len(),
                self.bridges.len(),
                failed.join(", ")
            );
        } else {
            let _ = writeln!(t, "verify: FAILED");
        }
        t
    }
}

/// Which interfaces to probe: every attached one, or every one matching
/// `patterns` (attached or not: an unfiltered bridge is a failure).
fn targets(
    patterns: &[String],
    present: &[(String, u32)],
    status: &status::Status,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if patterns.is_empty() {
        for i in status.interfaces.iter().filter(|i| i.attached) {
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
        for n in matched {
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
            .is_some()
    });
    Ok(Plan {
        dry_run: config.dry_run != 0,
        smtp_port,
        metadata_blocked,
    })
}

pub fn verify(opts: &VerifyOptions) -> Result<Report, Error> {
    let status = status::read(&opts.pins)?;
    let plan = plan(&opts.pins)?;
    let present = attach::interfaces();
    let mut problems = Vec::new();
    if !plan.metadata_blocked {
        problems.push(format!(
            "the policy does not block TCP to {METADATA_PROBE}: the metadata probe cannot show a drop"
        ));
    }
    let names = targets(&opts.patterns, &present, &status, &mut problems);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
                    report.problems.push(e);
                }
            }
        }
        bridges.push(report);
    }
    Ok(Report {
        pin_dir: opts.pins.root().display().to_string(),
        dry_run: plan.dry_run,
        bridges,
        problems,
    })
}

/// The bridge's IPv4 address, every local IPv4 address of the host, and
/// the addresses its neighbour table knows on the bridge.
struct BridgeNet {
    address: Ipv4Addr,
    prefix: u8,
    taken: Vec<Ipv4Addr>,
}

async fn bridge_net(handle: &Handle, index: u32) -> Result<BridgeNet, String> {
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("reading the link: {e}"))?
        .ok_or("the interface is gone")?;
    let is_bridge = link.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
    });
    if !is_bridge {
        return Err("not a bridge: verify plugs its probe into a bridge".into());
    }
    let mut own = None;
    let mut taken = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| format!("reading addresses: {e}"))?
    {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(a))
            | AddressAttribute::Address(IpAddr::V4(a)) = attr
            {
                taken.push(*a);
                if msg.header.index == index && own.is_none() {
                    own = Some((*a, msg.header.prefix_len));
                }
            }
        }
    }
    let (address, prefix) = own.ok_or("no IPv4 address on the bridge: nowhere to route a probe")?;
    let mut neigh = handle
        .neighbours()
        .get()
        .set_address_family(netlink_packet_route::AddressFamily::Inet)
        .execute();
    while let Some(msg) = neigh
        .try_next()
        .await
        .map_err(|e| format!("reading the neighbour table: {e}"))?
    {
        if msg.header.ifindex != index {
            continue;
        }
        for attr in &msg.attributes {
            if let NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) = attr {
                taken.push(*a);
            }
        }
    }
    Ok(BridgeNet {
        address,
        prefix,
        taken,
    })
}

/// An address of the bridge's subnet for the probe: from the top down
/// (Docker hands out addresses from the bottom), skipping every address the
/// host holds or has seen on the bridge.
pub fn pick_probe_address(bridge: Ipv4Addr, prefix: u8, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    if prefix > 30 {
        return None;
    }
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(bridge) & mask;
    let broadcast = net | !mask;
    (net + 1..broadcast)
        .rev()
        .take(256)
        .map(Ipv4Addr::from)
        .find(|a| *a != bridge && !taken.contains(a))
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
) -> Result<(), String> {
    let _runtime = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
    rt.spawn(conn);
    let net = rt.block_on(bridge_net(&handle, index))?;
    report.bridge_address = Some(format!("{}/{}", net.address, net.prefix));
    let probe = pick_probe_address(net.address, net.prefix, &net.taken)
        .ok_or("no free address for the probe in the bridge's subnet")?;
    report.probe_address = Some(probe);
    let smtp_target = plan
        .smtp_port
        .map(|p| SocketAddrV4::new(SMTP_PROBE_ADDR, p));
    let veth = format!("egv{:x}x{n}", std::process::id());
    let before = read_interface(&opts.pins, index).map_err(|e| e.to_string())?;
    let run = ProbeRun {
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
            .unwrap_or_else(|_| Err("the probe thread panicked".into()))
    })?;
    let after = read_interface(&opts.pins, index).map_err(|e| e.to_string())?;
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
    Ok(())
}

struct ProbeRun {
    bridge_index: u32,
    veth: String,
    gateway: Ipv4Addr,
    probe: Ipv4Addr,
    prefix: u8,
    smtp: Option<(SocketAddrV4, u32)>,
}

struct Answers {
    metadata: Answer,
    smtp: Vec<Answer>,
}

fn ns_err(what: &str) -> impl FnOnce(nix::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl ProbeRun {
    /// On a thread of its own: its network namespace changes.
    fn run(&self) -> Result<Answers, String> {
        let host_ns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening this thread's network namespace: {e}"))?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(ns_err("creating the probe's network namespace"))?;
        let probe_ns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening the probe's network namespace: {e}"))?;
        // Interfaces created here get no IPv6 (no router solicitations or
        // MLD reports on the bridge while it is probed).
        for key in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = rt.enter();
        let (conn, probe_nl, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        rt.spawn(conn);
        nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET)
            .map_err(ns_err("returning to the host's network namespace"))?;
        let (conn, host_nl, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        rt.spawn(conn);
        // One request creates both ends: the bridge port here, its peer in
        // the probe's namespace. Either both exist or neither.
        let peer = LinkUnspec::new_with_name("eth0")
            .setns_by_fd(probe_ns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new(&self.veth, "eth0")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(self.bridge_index)
            .up()
            .build();
        rt.block_on(host_nl.link().add(veth).execute())
            .map_err(|e| format!("creating veth {} on the bridge: {e}", self.veth))?;
        nix::sched::setns(&probe_ns, CloneFlags::CLONE_NEWNET)
            .map_err(ns_err("entering the probe's network namespace"))?;
        let result = rt
            .block_on(self.configure(&probe_nl, &host_nl))
            .and_then(|()| {
                let metadata = send_syns(METADATA_PROBE, 1, PROBE_WAIT)
                    .map_err(|e| format!("metadata probe: {e}"))?
                    .remove(0);
                let smtp = match self.smtp {
                    Some((target, count)) => send_syns(target, count as usize, PROBE_WAIT)
                        .map_err(|e| format!("SMTP probe: {e}"))?,
                    None => Vec::new(),
                };
                Ok(Answers { metadata, smtp })
            });
        // Leave the namespace and delete the bridge end now; the namespace
        // itself goes when this thread and the runtime's sockets are gone.
        let back = nix::sched::setns(&host_ns, CloneFlags::CLONE_NEWNET);
        let deleted = rt.block_on(async {
            let link = host_nl
                .link()
                .get()
                .match_name(self.veth.clone())
                .execute()
                .try_next()
                .await;
            match link {
                Ok(Some(l)) => host_nl.link().del(l.header.index).execute().await,
                _ => Ok(()),
            }
        });
        if let Err(e) = deleted {
            log::warn!(
                "deleting veth {}: {e} (it goes with the probe's namespace)",
                self.veth
            );
        }
        drop(runtime);
        drop(rt);
        back.map_err(ns_err("returning to the host's network namespace"))?;
        result
    }

    /// Inside the probe's namespace: address, link up, default route via
    /// the bridge; then waits until the bridge forwards on the new port.
    async fn configure(&self, nl: &Handle, host: &Handle) -> Result<(), String> {
        let link = nl
            .link()
            .get()
            .match_name("eth0".to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| format!("probe link: {e}"))?
            .ok_or("probe link missing")?;
        let index = link.header.index;
        nl.address()
            .add(index, IpAddr::V4(self.probe), self.prefix)
            .execute()
            .await
            .map_err(|e| format!("adding {}/{}: {e}", self.probe, self.prefix))?;
        nl.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| format!("probe link up: {e}"))?;
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        loop {
            let l = nl
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_next()
                .await
                .map_err(|e| format!("probe link: {e}"))?;
            if l.is_some_and(|l| l.header.flags.contains(LinkFlags::LowerUp)) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the probe's link did not come up within {LINK_UP_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nl.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(self.gateway)
                    .output_interface(index)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("default route via {}: {e}", self.gateway))?;
        // The bridge enables a port when the link watcher reports its
        // carrier, some time after the link is up; until then it drops
        // the probe's frames. With STP that takes two forward delays.
        let deadline = Instant::now() + PORT_FORWARDING_TIMEOUT;
        loop {
            let port = host
                .link()
                .get()
                .match_name(self.veth.clone())
                .execute()
                .try_next()
                .await
                .map_err(|e| format!("bridge port {}: {e}", self.veth))?;
            if port.is_some_and(|l| is_forwarding(&l.attributes)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the bridge does not forward on the probe's port {} after {PORT_FORWARDING_TIMEOUT:?}",
                    self.veth
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn is_forwarding(attributes: &[LinkAttribute]) -> bool {
    attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => port
                .iter()
                .any(|p| matches!(p, InfoBridgePort::State(BridgePortState::Forwarding))),
            _ => false,
        }),
        _ => false,
    })
}

/// `count` TCP connection attempts to `dest` with TTL 1, at once; waits up
/// to `wait` for each to be answered.
pub fn send_syns(dest: SocketAddrV4, count: usize, wait: Duration) -> std::io::Result<Vec<Answer>> {
    let addr = SockAddr::from(SocketAddr::V4(dest));
    let mut sockets = Vec::with_capacity(count);
    let mut answers: Vec<Option<Answer>> = vec![None; count];
    for slot in answers.iter_mut() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_ttl_v4(1)?;
        s.set_nonblocking(true)?;
        match s.connect(&addr) {
            Ok(()) => *slot = Some(Answer::Answered("connected".into())),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        sockets.push(s);
    }
    let deadline = Instant::now() + wait;
    loop {
        let pending: Vec<usize> = (0..count).filter(|i| answers[*i].is_none()).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|i| libc::pollfd {
                fd: sockets[*i].as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (k, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let i = pending[k];
            answers[i] = Some(match sockets[i].take_error()? {
                None => Answer::Answered("connected".into()),
                Some(e) => Answer::Answered(describe(&e)),
            });
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or(Answer::None))
        .collect())
}

fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // What a TTL-1 SYN gets back from the host's forwarding path.
        Some(libc::EHOSTUNREACH) => "the host answered: time exceeded or host unreachable".into(),
        Some(libc::ENETUNREACH) => "the host answered: network unreachable".into(),
        Some(libc::ECONNREFUSED) => "refused: a reset came back".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_address_from_the_top_of_the_subnet() {
        let br = Ipv4Addr::new(172, 17, 0, 1);
        assert_eq!(
            pick_probe_address(br, 16, &[]),
            Some(Ipv4Addr::new(172, 17, 255, 254))
        );
        let taken = [Ipv4Addr::new(172, 17, 255, 254)];
        assert_eq!(
            pick_probe_address(br, 16, &taken),
            Some(Ipv4Addr::new(172, 17, 255, 253))
        );
        // A /30 has two hosts: the bridge and one more.
        let br = Ipv4Addr::new(10, 9, 0, 1);
        assert_eq!(
            pick_probe_address(br, 30, &[]),
            Some(Ipv4Addr::new(10, 9, 0, 2))
        );
        assert_eq!(
            pick_probe_address(br, 30, &[Ipv4Addr::new(10, 9, 0, 2)]),
            None
        );
        assert_eq!(pick_probe_address(br, 31, &[]), None);
    }

    #[test]
    fn report_fails_without_bridges() {
        let r = Report {
            pin_dir: "/p".into(),
            dry_run: false,
            bridges: Vec::new(),
            problems: vec!["the filter is attached to no interface".into()],
        };
        assert!(!r.passed());
        assert!(r.render().contains("FAILED"), "{}", r.render());
    }
}
