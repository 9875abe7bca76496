//! Reading the per-CPU counters from the pins (no daemon needed) and
//! presenting them like `iptables -L -v`.

use std::collections::BTreeMap;

use egress_ebpf_common::{
    counters::{Counter, CounterId},
    rules::{ANY_PORT, NO_RULE},
};
use serde::Serialize;

use crate::{error::Error, maps, pins::PinDir};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NamedCounter {
    pub name: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuleCounter {
    pub rule_id: u16,
    pub destination: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub counters: Vec<NamedCounter>,
    pub rules: Vec<RuleCounter>,
    pub dry_run: bool,
    /// Drop events not delivered: ring buffer full (lost) or over the budget (suppressed).
    pub events: crate::events::EventStats,
}

impl Snapshot {
    pub fn get(&self, id: CounterId) -> &NamedCounter {
        &self.counters[id as usize]
    }
}

fn sum(values: &aya::maps::PerCpuValues<Counter>) -> Counter {
    let mut total = Counter::default();
    for v in values.iter() {
        total.add(v);
    }
    total
}

pub fn read(pins: &PinDir) -> Result<Snapshot, Error> {
    let counters = maps::counters(pins)?;
    let mut out = Vec::new();
    for id in CounterId::ALL {
        let v = counters
            .get(&(id as u32), 0)
            .map_err(|e| Error::map("COUNTERS", e))?;
        let total = sum(&v);
        out.push(NamedCounter {
            name: id.name(),
            packets: total.packets,
            bytes: total.bytes,
        });
    }
    let policy = maps::PolicyMaps::open(pins)?;
    let config = crate::policy::read_config(&policy.active_config, &policy.policy_config)?;
    let mut rules = Vec::new();
    for (rule_id, destination) in rule_descriptions(&policy)? {
        let v = policy
            .rule_counters
            .get(&(rule_id as u32), 0)
            .map_err(|e| Error::map("RULE_COUNTERS", e))?;
        let total = sum(&v);
        rules.push(RuleCounter {
            rule_id,
            destination,
            packets: total.packets,
            bytes: total.bytes,
        });
    }
    let events = crate::events::read_stats(pins)?;
    Ok(Snapshot {
        counters: out,
        rules,
        dry_run: config.dry_run != 0,
        events,
    })
}

/// Rule id -> "cidr[:proto[/ports]]", reconstructed from the tries: a rule's
/// own CIDR is the shortest prefix whose entry names it.
pub fn rule_descriptions(policy: &maps::PolicyMaps) -> Result<BTreeMap<u16, String>, Error> {
    let mut entries: Vec<(u32, String, egress_ebpf_common::rules::BlockRule)> = Vec::new();
    for item in policy.blocked_v4.iter() {
        let (k, v) = item.map_err(|e| Error::map("BLOCKED_V4", e))?;
        entries.push((
            k.prefix_len(),
            std::net::Ipv4Addr::from(k.data()).to_string(),
            v,
        ));
    }
    for item in policy.blocked_v6.iter() {
        let (k, v) = item.map_err(|e| Error::map("BLOCKED_V6", e))?;
        entries.push((
            k.prefix_len(),
            std::net::Ipv6Addr::from(k.data()).to_string(),
            v,
        ));
    }
    entries.sort_by_key(|e| e.0);
    let mut out = BTreeMap::new();
    for (len, addr, v) in &entries {
        if v.all_rule_id != NO_RULE {
            out.entry(v.all_rule_id)
                .or_insert_with(|| format!("{addr}/{len}"));
        }
        let n = (v.match_count as usize).min(v.matches.len());
        let mut by_rule: BTreeMap<u16, Vec<(u8, u16)>> = BTreeMap::new();
        for m in &v.matches[..n] {
            by_rule
                .entry(m.rule_id)
                .or_default()
                .push((m.proto, m.port));
        }
        for (id, pp) in by_rule {
            out.entry(id).or_insert_with(|| {
                let proto = if pp[0].0 == 6 { "tcp" } else { "udp" };
                let ports: Vec<String> = pp
                    .iter()
                    .filter(|p| p.1 != ANY_PORT)
                    .map(|p| p.1.to_string())
                    .collect();
                if ports.is_empty() {
                    format!("{addr}/{len}:{proto}")
                } else {
                    format!("{addr}/{len}:{proto}/{}", ports.join(","))
                }
            });
        }
    }
    Ok(out)
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        n.to_string()
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn meaning(id: CounterId) -> &'static str {
    match id {
        CounterId::MetadataBlocked => "destination in the blocked set",
        CounterId::SmtpAllowed => "TCP connection attempt to a rate-limited port, within the rate",
        CounterId::SmtpLimited => "TCP connection attempt to a rate-limited port, over the rate",
        CounterId::Passed => "no rule matched",
        CounterId::Evasive => "fragment or header shape that hides the transport header",
    }
}

/// The table `counters` prints.
pub fn render_table(s: &Snapshot, pins: &PinDir) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let mode = if s.dry_run {
        "dry-run: nothing is dropped"
    } else {
        "enforcing"
    };
    let _ = writeln!(t, "egress filter at {} ({mode})", pins.root().display());
    let _ = writeln!(
        t,
        "{:>10} {:>8}  {:<17} {:<6} meaning",
        "pkts", "bytes", "verdict", "action"
    );
    for id in CounterId::ALL {
        let c = s.get(id);
        let action = match (id.drops(), s.dry_run) {
            (false, _) => "PASS",
            (true, false) => "DROP",
            (true, true) => "COUNT",
        };
        let _ = writeln!(
            t,
            "{:>10} {:>8}  {:<17} {:<6} {}",
            human(c.packets),
            human(c.bytes),
            c.name,
            action,
            meaning(id)
        );
    }
    let _ = writeln!(
        t,
        "drop events: {} suppressed over the budget, {} lost (ring buffer full)",
        s.events.suppressed, s.events.lost
    );
    if !s.rules.is_empty() {
        let _ = writeln!(t, "\nblocked destinations, per rule:");
        let _ = writeln!(
            t,
            "{:>10} {:>8}  {:<5} destination",
            "pkts", "bytes", "rule"
        );
        for r in &s.rules {
            let _ = writeln!(
                t,
                "{:>10} {:>8}  {:<5} {}",
                human(r.packets),
                human(r.bytes),
                r.rule_id,
                r.destination
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999");
        assert_eq!(human(1_500), "1.5K");
        assert_eq!(human(2_000_000), "2.0M");
    }
}
