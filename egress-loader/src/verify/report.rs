//! The verify report: per bridge, what each probe got and what the
//! counters said, PASS/FAIL, as text or JSON.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

/// What became of one SYN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Answer {
    /// Nothing came back before [`PROBE_WAIT`](crate::verify::probe::PROBE_WAIT): dropped.
    None,
    /// A reset came back: the filter rejected it at the bridge (a TTL-1
    /// SYN that passed would get "time exceeded" from the host instead).
    Rejected,
    /// Something else came back (a connection, an ICMP error): the packet
    /// got past the bridge's ingress.
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

/// The per-endpoint path: a probe port that the running loader attaches
/// the endpoint program to, like a container's veth.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointProbe {
    /// The probe port's name.
    pub port: String,
    /// Whether the loader attached the endpoint program to it in time.
    pub attached: bool,
    /// Whether it had to (other ports of the bridge are endpoints).
    pub expected: bool,
    pub answer: Answer,
    /// `metadata_blocked` on that endpoint, after minus before.
    pub metadata_blocked: u64,
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
    /// The per-endpoint path's probe.
    pub endpoint: Option<EndpointProbe>,
    /// Why it failed; empty: it passed.
    pub problems: Vec<String>,
}

impl BridgeReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A decapsulating device (vxlan, tun...), and what the test run of the
/// program in its attachment got (verify::tunnel_probe).
#[derive(Debug, Clone, Serialize)]
pub struct TunnelReport {
    pub interface: String,
    pub ifindex: u32,
    /// Its link kind (`vxlan`, `tun`...).
    pub kind: String,
    /// What it hands up: `ethernet` or `ip`.
    pub layer: &'static str,
    pub attached: bool,
    pub program_id: Option<u32>,
    /// Whether the program dropped the inner SYN to the metadata address;
    /// `None`: not run.
    pub dropped: Option<bool>,
    /// `metadata_blocked` on the device, after minus before.
    pub metadata_blocked: u64,
    pub problems: Vec<String>,
}

/// One cgroup the cgroup hooks are attached to, and what its probe got.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupReport {
    /// Below the cgroup2 mount, with a leading `/`.
    pub cgroup: String,
    /// The hooks whose links are live.
    pub hooks: Vec<&'static str>,
    pub program_ids: Vec<u32>,
    /// What the probe's connect() to the metadata address got; `None`: not
    /// probed (see `note`).
    pub connect: Option<String>,
    /// `metadata_blocked` of `cgroup/connect4`, after minus before.
    pub metadata_blocked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pin_dir: String,
    pub dry_run: bool,
    pub bridges: Vec<BridgeReport>,
    /// The decapsulating devices, probed.
    pub tunnels: Vec<TunnelReport>,
    /// The cgroups the cgroup hooks are attached to, probed.
    pub cgroups: Vec<CgroupReport>,
    /// Containers and networks no hook sees (with an engine): each a FAIL.
    pub uncovered: Vec<String>,
    /// Facts that are not failures (no engine asked, no cgroup2...).
    pub notes: Vec<String>,
    /// Problems not tied to one bridge (a pattern matching nothing...).
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self.uncovered.is_empty()
            && !(self.bridges.is_empty() && self.tunnels.is_empty())
            && self.bridges.iter().all(|b| b.passed())
            && self.tunnels.iter().all(|t| t.problems.is_empty())
            && self.cgroups.iter().all(|c| c.problems.is_empty())
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
                        Answer::Rejected => "refused (rejected by the filter)".to_owned(),
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
            if let Some(e) = &b.endpoint {
                let answer = match &e.answer {
                    Answer::None => "no answer (dropped)".to_owned(),
                    Answer::Rejected => "refused (rejected by the filter)".to_owned(),
                    Answer::Answered(how) => format!("GOT THROUGH ({how})"),
                };
                let _ = if e.attached {
                    writeln!(
                        t,
                        "      endpoint  port {} (endpoint program attached): TCP SYN to the metadata address: {answer}; metadata_blocked +{} on the endpoint",
                        e.port, e.metadata_blocked
                    )
                } else {
                    writeln!(
                        t,
                        "      endpoint  port {} NOT attached within 3 s{}: {answer} (judged by the bridge)",
                        e.port,
                        if e.expected {
                            ""
                        } else {
                            " (no endpoints on this bridge: attach.endpoints = false, or no container)"
                        }
                    )
                };
            }
            for p in &b.problems {
                let _ = writeln!(t, "      problem   {p}");
            }
        }
        for u in &self.tunnels {
            let _ = writeln!(
                t,
                "{}  {}  ({} tunnel, ifindex {}, {})",
                if u.problems.is_empty() {
                    "PASS"
                } else {
                    "FAIL"
                },
                u.interface,
                u.kind,
                u.ifindex,
                match u.program_id {
                    Some(p) if u.attached => format!("prog {p}"),
                    _ => "NOT attached".into(),
                }
            );
            if let Some(dropped) = u.dropped {
                let _ = writeln!(
                    t,
                    "      metadata  inner TCP SYN to 169.254.169.254:80 ({}) run as on {}: {}; metadata_blocked +{}",
                    u.layer,
                    u.interface,
                    if dropped { "dropped" } else { "PASSED" },
                    u.metadata_blocked
                );
            }
            for p in &u.problems {
                let _ = writeln!(t, "      problem   {p}");
            }
        }
        for c in &self.cgroups {
            let mut facts = vec![c.hooks.join(" ")];
            if !c.program_ids.is_empty() {
                let ids: Vec<String> = c.program_ids.iter().map(u32::to_string).collect();
                facts.push(format!("prog {}", ids.join(",")));
            }
            let _ = writeln!(
                t,
                "{}  cgroup {}  ({})",
                if c.problems.is_empty() {
                    "PASS"
                } else {
                    "FAIL"
                },
                c.cgroup,
                facts.join(", ")
            );
            if let Some(how) = &c.connect {
                let _ = writeln!(
                    t,
                    "      metadata  connect() to 169.254.169.254:80 from a new cgroup below it: {how}; metadata_blocked +{} on cgroup/connect4",
                    c.metadata_blocked
                );
            }
            if let Some(n) = &c.note {
                let _ = writeln!(t, "      note      {n}");
            }
            for p in &c.problems {
                let _ = writeln!(t, "      problem   {p}");
            }
        }
        for u in &self.uncovered {
            let _ = writeln!(t, "FAIL  {u}");
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        for p in &self.problems {
            let _ = writeln!(t, "problem: {p}");
        }
        let failed = self.failed_bridges();
        if self.passed() {
            let mut what = vec![format!("{} bridge(s)", self.bridges.len())];
            if !self.tunnels.is_empty() {
                what.push(format!("{} tunnel(s)", self.tunnels.len()));
            }
            if !self.cgroups.is_empty() {
                what.push(format!("{} cgroup(s)", self.cgroups.len()));
            }
            let last = what.pop().unwrap_or_default();
            let what = if what.is_empty() {
                last
            } else {
                format!("{} and {last}", what.join(", "))
            };
            let _ = writeln!(t, "verify: all {what} filter");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fails_without_bridges() {
        let r = Report {
            pin_dir: "/p".into(),
            dry_run: false,
            bridges: Vec::new(),
            tunnels: Vec::new(),
            cgroups: Vec::new(),
            uncovered: Vec::new(),
            notes: Vec::new(),
            problems: vec!["the filter is attached to no interface".into()],
        };
        assert!(!r.passed());
        assert!(r.render().contains("FAILED"), "{}", r.render());
    }
}
