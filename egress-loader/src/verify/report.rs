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
            if let Some(e) = &b.endpoint {
                let answer = match &e.answer {
                    Answer::None => "no answer (dropped)".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
