//! Reading the per-CPU counters from the pins (no daemon needed) and
//! presenting them like `iptables -L -v`.

use std::{collections::BTreeMap, time::Duration};

use egress_ebpf_common::{
    counters::{Counter, CounterId, IfaceCounters},
    events::{EVENT_STATS_LEN, EVENTS_LOST, EVENTS_SUPPRESSED},
    hook::Hook,
    maps::{
        BLOCKED_V4, BLOCKED_V6, COUNTERS, EVENT_STATS, HOOK_COUNTERS, IFACE_COUNTERS, IFACE_SLOTS,
        REPLY_STATS, RULE_COUNTERS,
    },
    reply::ReplyOutcome,
    rules::{ANY_PORT, MATCH_EXCEPT, NO_RULE, RULE_REJECT},
};
use serde::Serialize;

use crate::{
    error::Error,
    kernel::{attach, maps, pins::PinDir},
    observe::endpoints::{self, EndpointInfo},
    policy::apply::read_config,
};

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
    /// "drop" or "reject".
    pub action: &'static str,
    /// Ports the rule leaves open ("udp/53").
    pub except: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub counters: Vec<NamedCounter>,
    pub rules: Vec<RuleCounter>,
    pub dry_run: bool,
    /// Drop events not delivered: ring buffer full (lost) or over the budget (suppressed).
    pub events: EventStats,
    /// What became of the replies of rejecting rules.
    pub replies: ReplyStats,
    /// The same counters per interface whose ingress saw the packets
    /// (the bridges: what they judged as the backstop).
    pub interfaces: Vec<InterfaceCounters>,
    /// The same counters per endpoint (a container's veth, whose program
    /// judged the packets); only endpoints that exist now.
    pub endpoints: Vec<EndpointCounters>,
    /// The same counters per cgroup hook (host-network containers): calls
    /// for connect, packets for cgroup_skb. Empty when the pins
    /// predate the cgroup hooks.
    pub hooks: Vec<HookCounters>,
}

/// One endpoint's counters (`ENDPOINT_COUNTERS`), in [`CounterId`] order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EndpointCounters {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    pub counters: Vec<NamedCounter>,
}

/// One cgroup hook's counters (`HOOK_COUNTERS`), in [`CounterId`] order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HookCounters {
    pub hook: &'static str,
    pub counters: Vec<NamedCounter>,
}

impl HookCounters {
    pub fn get(&self, id: CounterId) -> &NamedCounter {
        &self.counters[id as usize]
    }
}

/// The cgroup hooks' counters, summed over CPUs.
pub fn read_hooks(pins: &PinDir) -> Result<Vec<HookCounters>, Error> {
    if !pins.map(HOOK_COUNTERS).exists() {
        return Ok(Vec::new());
    }
    let map = maps::hook_counters(pins)?;
    let mut out = Vec::new();
    for hook in Hook::CGROUP {
        let values = map
            .get(&(hook as u32), 0)
            .map_err(|e| Error::map(HOOK_COUNTERS, e))?;
        let mut total = IfaceCounters::default();
        for v in values.iter() {
            add_iface(&mut total, v);
        }
        out.push(HookCounters {
            hook: hook.name(),
            counters: named(&total),
        });
    }
    Ok(out)
}

/// One interface's counters (`IFACE_COUNTERS`), in [`CounterId`] order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Its name now, or `ifindex N` once the interface is gone (the kernel
    /// keeps its counts).
    pub interface: String,
    pub ifindex: u32,
    /// Whether an interface with this index exists now.
    pub present: bool,
    pub counters: Vec<NamedCounter>,
}

impl InterfaceCounters {
    pub fn get(&self, id: CounterId) -> &NamedCounter {
        &self.counters[id as usize]
    }
}

impl Snapshot {
    pub fn get(&self, id: CounterId) -> &NamedCounter {
        &self.counters[id as usize]
    }
}

/// Events lost (ring buffer full) and suppressed (over the budget), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct EventStats {
    pub lost: u64,
    pub suppressed: u64,
}

/// Rejected packets by what became of their reply, summed over CPUs: sent,
/// suppressed over the reply budget, refused (the reply would not go to one
/// sender), unanswerable (no reply is sent for such a packet).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ReplyStats {
    pub sent: u64,
    pub suppressed: u64,
    pub refused: u64,
    pub unanswerable: u64,
}

impl ReplyStats {
    pub fn get(&self, o: ReplyOutcome) -> u64 {
        match o {
            ReplyOutcome::Sent => self.sent,
            ReplyOutcome::Suppressed => self.suppressed,
            ReplyOutcome::Refused => self.refused,
            ReplyOutcome::Unanswerable => self.unanswerable,
        }
    }
}

pub fn read_reply_stats(pins: &PinDir) -> Result<ReplyStats, Error> {
    let map = maps::reply_stats(pins)?;
    let sum = |o: ReplyOutcome| -> Result<u64, Error> {
        Ok(map
            .get(&(o as u32), 0)
            .map_err(|e| Error::map(REPLY_STATS, e))?
            .iter()
            .sum())
    };
    Ok(ReplyStats {
        sent: sum(ReplyOutcome::Sent)?,
        suppressed: sum(ReplyOutcome::Suppressed)?,
        refused: sum(ReplyOutcome::Refused)?,
        unanswerable: sum(ReplyOutcome::Unanswerable)?,
    })
}

pub fn read_event_stats(pins: &PinDir) -> Result<EventStats, Error> {
    let map = maps::event_stats(pins)?;
    let sum = |i: u32| -> Result<u64, Error> {
        debug_assert!(i < EVENT_STATS_LEN);
        Ok(map
            .get(&i, 0)
            .map_err(|e| Error::map(EVENT_STATS, e))?
            .iter()
            .sum())
    };
    Ok(EventStats {
        lost: sum(EVENTS_LOST)?,
        suppressed: sum(EVENTS_SUPPRESSED)?,
    })
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
            .map_err(|e| Error::map(COUNTERS, e))?;
        let total = sum(&v);
        out.push(NamedCounter {
            name: id.name(),
            packets: total.packets,
            bytes: total.bytes,
        });
    }
    let policy = maps::PolicyMaps::open(pins)?;
    let config = read_config(&policy.active_config, &policy.policy_config)?;
    let mut rules = Vec::new();
    for (rule_id, text) in rule_texts(&policy)? {
        let v = policy
            .rule_counters
            .get(&(rule_id as u32), 0)
            .map_err(|e| Error::map(RULE_COUNTERS, e))?;
        let total = sum(&v);
        rules.push(RuleCounter {
            rule_id,
            destination: text.destination,
            action: text.action,
            except: text.except,
            packets: total.packets,
            bytes: total.bytes,
        });
    }
    let events = read_event_stats(pins)?;
    Ok(Snapshot {
        counters: out,
        rules,
        dry_run: config.dry_run != 0,
        events,
        replies: read_reply_stats(pins)?,
        interfaces: read_interfaces(pins)?,
        endpoints: endpoints::read(pins)?
            .into_iter()
            .map(|(endpoint, c)| EndpointCounters {
                endpoint,
                counters: named(&c),
            })
            .collect(),
        hooks: read_hooks(pins)?,
    })
}

fn add_iface(total: &mut IfaceCounters, v: &IfaceCounters) {
    for (t, c) in total.by_verdict.iter_mut().zip(&v.by_verdict) {
        t.add(c);
    }
}

/// Every interface's counters, summed over CPUs: the direct-mapped slots
/// (each CPU's copy tagged with the ifindex that owns it there) plus the
/// overflow hash map.
pub fn all_interfaces(pins: &PinDir) -> Result<BTreeMap<u32, IfaceCounters>, Error> {
    let mut out: BTreeMap<u32, IfaceCounters> = BTreeMap::new();
    for item in maps::iface_counters(pins)?.iter() {
        let (ifindex, values) = item.map_err(|e| Error::map(IFACE_COUNTERS, e))?;
        for v in values.iter() {
            add_iface(out.entry(ifindex).or_default(), v);
        }
    }
    let slots = maps::iface_slots(pins)?;
    for i in 0..slots.len() {
        let values = slots.get(&i, 0).map_err(|e| Error::map(IFACE_SLOTS, e))?;
        for v in values.iter().filter(|v| v.ifindex != 0) {
            add_iface(out.entry(v.ifindex).or_default(), &v.counters);
        }
    }
    Ok(out)
}

fn named(by_verdict: &IfaceCounters) -> Vec<NamedCounter> {
    CounterId::ALL
        .into_iter()
        .map(|id| {
            let c = by_verdict.by_verdict[id as usize];
            NamedCounter {
                name: id.name(),
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect()
}

/// Counters of every interface the classifier has seen a packet on
/// (interfaces that are gone included), sorted by name; names are those of
/// this network namespace.
pub fn read_interfaces(pins: &PinDir) -> Result<Vec<InterfaceCounters>, Error> {
    let names: BTreeMap<u32, String> = attach::interfaces()
        .into_iter()
        .map(|(n, i)| (i, n))
        .collect();
    let mut out = Vec::new();
    for (ifindex, values) in all_interfaces(pins)? {
        let present = names.get(&ifindex);
        out.push(InterfaceCounters {
            interface: present
                .cloned()
                .unwrap_or_else(|| format!("ifindex {ifindex}")),
            ifindex,
            present: present.is_some(),
            counters: named(&values),
        });
    }
    out.sort_by(|a, b| (!a.present, &a.interface).cmp(&(!b.present, &b.interface)));
    Ok(out)
}

/// One interface's counters; zeros if it has not seen a packet yet.
pub fn read_interface(pins: &PinDir, ifindex: u32) -> Result<IfaceCounters, Error> {
    Ok(all_interfaces(pins)?.remove(&ifindex).unwrap_or_default())
}

/// Packets and bytes per second of each verdict between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// (packets/s, bytes/s), in [`CounterId`] order.
    pub per_verdict: Vec<(f64, f64)>,
}

impl Rates {
    /// A counter that went backwards (the pins were recreated) counts as 0.
    pub fn between(before: &Snapshot, after: &Snapshot, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let per_verdict = before
            .counters
            .iter()
            .zip(&after.counters)
            .map(|(b, a)| {
                (
                    a.packets.saturating_sub(b.packets) as f64 / secs,
                    a.bytes.saturating_sub(b.bytes) as f64 / secs,
                )
            })
            .collect();
        Self { per_verdict }
    }
}

/// One block rule as read back from the tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleText {
    /// "cidr[:proto[/ports]]".
    pub destination: String,
    /// The ports the rule leaves open, as "proto/port".
    pub except: Vec<String>,
    /// "drop" or "reject".
    pub action: &'static str,
}

/// Rule id -> "cidr[:proto[/ports]]", reconstructed from the tries: a rule's
/// own CIDR is the shortest prefix whose entry names it.
pub fn rule_descriptions(policy: &maps::PolicyMaps) -> Result<RuleDescriptions, Error> {
    Ok(RuleDescriptions::new(&rule_texts(policy)?))
}

/// The running loader's table of [`rule_descriptions`], for drop events.
/// Two allocations of their final size (all the texts in one string, and
/// the index), not a `String` per rule: the loader keeps it for its whole
/// run, and 10,000 small strings made among `rule_texts`' temporaries kept
/// as many heap pages resident once those were freed (docs/benchmarks.md,
/// the idle loader's RSS).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuleDescriptions {
    text: String,
    /// Rule id and the end of its text in `text`, ascending by id.
    ends: Vec<(u16, u32)>,
}

impl RuleDescriptions {
    pub fn new(texts: &BTreeMap<u16, RuleText>) -> Self {
        let mut text = String::with_capacity(texts.values().map(|r| r.destination.len()).sum());
        let mut ends = Vec::with_capacity(texts.len());
        for (&id, r) in texts {
            text.push_str(&r.destination);
            // u32: MAX_RULES texts are far below 4 GiB.
            ends.push((id, text.len() as u32));
        }
        Self { text, ends }
    }

    pub fn get(&self, id: u16) -> Option<&str> {
        let i = self.ends.binary_search_by_key(&id, |e| e.0).ok()?;
        let start = if i == 0 { 0 } else { self.ends[i - 1].1 };
        Some(&self.text[start as usize..self.ends[i].1 as usize])
    }
}

/// Rule id -> its destination, exceptions and action, from the tries.
pub fn rule_texts(policy: &maps::PolicyMaps) -> Result<BTreeMap<u16, RuleText>, Error> {
    let mut entries: Vec<(u32, String, egress_ebpf_common::rules::BlockRule)> = Vec::new();
    for item in policy.blocked_v4.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V4, e))?;
        entries.push((
            k.prefix_len(),
            std::net::Ipv4Addr::from(k.data()).to_string(),
            v,
        ));
    }
    for item in policy.blocked_v6.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V6, e))?;
        entries.push((
            k.prefix_len(),
            std::net::Ipv6Addr::from(k.data()).to_string(),
            v,
        ));
    }
    entries.sort_by_key(|e| e.0);
    let mut out = BTreeMap::new();
    let proto = |p: u8| if p == 6 { "tcp" } else { "udp" };
    let action = |flags: u8| {
        if flags & RULE_REJECT != 0 {
            "reject"
        } else {
            "drop"
        }
    };
    for (len, addr, v) in &entries {
        let n = (v.match_count as usize).min(v.matches.len());
        // Exceptions the rule named, at its own (shortest) prefix.
        let excepts = |id: u16| -> Vec<String> {
            v.matches[..n]
                .iter()
                .filter(|m| m.rule_id == id && m.flags & MATCH_EXCEPT != 0)
                .map(|m| format!("{}/{}", proto(m.proto), m.port))
                .collect()
        };
        if v.all_rule_id != NO_RULE {
            out.entry(v.all_rule_id).or_insert_with(|| RuleText {
                destination: format!("{addr}/{len}"),
                except: excepts(v.all_rule_id),
                action: action(v.all_flags),
            });
        }
        let mut by_rule: BTreeMap<u16, Vec<(u8, u16, u8)>> = BTreeMap::new();
        for m in v.matches[..n]
            .iter()
            .filter(|m| m.flags & MATCH_EXCEPT == 0)
        {
            by_rule
                .entry(m.rule_id)
                .or_default()
                .push((m.proto, m.port, m.flags));
        }
        for (id, pp) in by_rule {
            out.entry(id).or_insert_with(|| {
                let ports: Vec<String> = pp
                    .iter()
                    .filter(|p| p.1 != ANY_PORT)
                    .map(|p| p.1.to_string())
                    .collect();
                let destination = if ports.is_empty() {
                    format!("{addr}/{len}:{}", proto(pp[0].0))
                } else {
                    format!("{addr}/{len}:{}/{}", proto(pp[0].0), ports.join(","))
                };
                RuleText {
                    destination,
                    except: excepts(id),
                    action: action(pp[0].2),
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
        CounterId::MetadataBlocked => "destination in the blocked set (dropped or rejected)",
        CounterId::SmtpAllowed => "TCP connection attempt to a rate-limited port, within the rate",
        CounterId::SmtpLimited => "TCP connection attempt to a rate-limited port, over the rate",
        CounterId::Passed => "no rule matched",
        CounterId::Evasive => "fragment or header shape that hides the transport header",
        CounterId::Excepted => "destination in the blocked set, opened by the sender's exception",
    }
}

/// The table `counters` prints.
pub fn render_table(s: &Snapshot, pins: &PinDir) -> String {
    render(s, pins, None)
}

/// The table `counters --watch` redraws: [`render_table`] with packets and
/// bytes per second of each verdict (`-` until there are two readings).
pub fn render_watch(s: &Snapshot, pins: &PinDir, rates: Option<&Rates>) -> String {
    render(s, pins, Some(rates))
}

fn human_rate(r: f64) -> String {
    if r < 0.05 {
        "0".into()
    } else if r < 10.0 {
        format!("{r:.1}")
    } else {
        human(r.round() as u64)
    }
}

/// `rates`: `None` without the rate columns, `Some(None)` with them empty.
fn render(s: &Snapshot, pins: &PinDir, rates: Option<Option<&Rates>>) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let mode = if s.dry_run {
        "dry-run: nothing is dropped"
    } else {
        "enforcing"
    };
    let _ = writeln!(t, "egress filter at {} ({mode})", pins.root().display());
    let rate_header = if rates.is_some() {
        format!("{:>8} {:>8}  ", "pkts/s", "bytes/s")
    } else {
        String::new()
    };
    let _ = writeln!(
        t,
        "{:>10} {:>8}  {rate_header}{:<17} {:<6} meaning",
        "pkts", "bytes", "verdict", "action"
    );
    for id in CounterId::ALL {
        let c = s.get(id);
        let action = match (id.drops(), s.dry_run) {
            (false, _) => "PASS",
            (true, false) => "DROP",
            (true, true) => "COUNT",
        };
        let rate = match rates {
            None => String::new(),
            Some(None) => format!("{:>8} {:>8}  ", "-", "-"),
            Some(Some(r)) => {
                let (p, b) = r.per_verdict[id as usize];
                format!("{:>8} {:>8}  ", human_rate(p), human_rate(b))
            }
        };
        let _ = writeln!(
            t,
            "{:>10} {:>8}  {rate}{:<17} {:<6} {}",
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
    let r = &s.replies;
    let _ = writeln!(
        t,
        "rejects: {} answered, {} suppressed over the reply budget, {} refused (no single sender to answer), {} unanswerable (dropped silently)",
        r.sent, r.suppressed, r.refused, r.unanswerable
    );
    if !s.interfaces.is_empty() {
        let _ = writeln!(t, "\nper interface (packets):");
        let _ = write!(t, "  {:<16}", "interface");
        for id in CounterId::ALL {
            let _ = write!(t, " {:>16}", id.name());
        }
        let _ = writeln!(t);
        for i in &s.interfaces {
            let _ = write!(t, "  {:<16}", i.interface);
            for c in &i.counters {
                let _ = write!(t, " {:>16}", human(c.packets));
            }
            let _ = writeln!(t);
        }
    }
    if !s.endpoints.is_empty() {
        let _ = writeln!(
            t,
            "\nper endpoint (packets; the container's veth judged them):"
        );
        let _ = write!(t, "  {:<16} {:<20}", "veth", "container");
        for id in CounterId::ALL {
            let _ = write!(t, " {:>16}", id.name());
        }
        let _ = writeln!(t);
        for e in &s.endpoints {
            let mut who = e
                .endpoint
                .container
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "-".into());
            if e.endpoint.excepted {
                who.push_str(" [exception]");
            }
            let _ = write!(t, "  {:<16} {:<20}", e.endpoint.veth, who);
            for c in &e.counters {
                let _ = write!(t, " {:>16}", human(c.packets));
            }
            let _ = writeln!(t);
        }
    }
    if s.hooks
        .iter()
        .any(|h| h.counters.iter().any(|c| c.packets > 0))
    {
        let _ = writeln!(
            t,
            "\nper cgroup hook (host-network containers; calls, packets for cgroup_skb):"
        );
        let _ = write!(t, "  {:<18}", "hook");
        for id in CounterId::ALL {
            let _ = write!(t, " {:>16}", id.name());
        }
        let _ = writeln!(t);
        for h in &s.hooks {
            let _ = write!(t, "  {:<18}", h.hook);
            for c in &h.counters {
                let _ = write!(t, " {:>16}", human(c.packets));
            }
            let _ = writeln!(t);
        }
    }
    if !s.rules.is_empty() {
        let _ = writeln!(t, "\nblocked destinations, per rule:");
        let _ = writeln!(
            t,
            "{:>10} {:>8}  {:<5} {:<6} destination",
            "pkts", "bytes", "rule", "action"
        );
        for r in &s.rules {
            let except = if r.except.is_empty() {
                String::new()
            } else {
                format!(" except {}", r.except.join(","))
            };
            let _ = writeln!(
                t,
                "{:>10} {:>8}  {:<5} {:<6} {}{except}",
                human(r.packets),
                human(r.bytes),
                r.rule_id,
                r.action,
                r.destination
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_descriptions_find_each_rule_by_id_and_no_other() {
        let text = |d: &str| RuleText {
            destination: d.to_string(),
            except: Vec::new(),
            action: "drop",
        };
        let texts: BTreeMap<u16, RuleText> = [
            (0, text("169.254.169.254/32")),
            (3, text("10.0.0.0/8:tcp/25,587")),
            (7, text("fd00:ec2::254/128")),
            (9, text("")),
        ]
        .into_iter()
        .collect();
        let d = RuleDescriptions::new(&texts);
        for (id, t) in &texts {
            assert_eq!(d.get(*id), Some(t.destination.as_str()), "rule {id}");
        }
        for id in [1, 2, 8, 10, NO_RULE] {
            assert_eq!(d.get(id), None, "rule {id}");
        }
        assert_eq!(RuleDescriptions::default().get(0), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999");
        assert_eq!(human(1_500), "1.5K");
        assert_eq!(human(2_000_000), "2.0M");
    }

    fn snapshot(packets: u64) -> Snapshot {
        Snapshot {
            counters: CounterId::ALL
                .into_iter()
                .map(|id| NamedCounter {
                    name: id.name(),
                    packets,
                    bytes: packets * 100,
                })
                .collect(),
            rules: Vec::new(),
            dry_run: false,
            events: Default::default(),
            replies: Default::default(),
            interfaces: Vec::new(),
            endpoints: Vec::new(),
            hooks: Vec::new(),
        }
    }

    #[test]
    fn rates_per_second() {
        let r = Rates::between(&snapshot(10), &snapshot(30), Duration::from_secs(2));
        assert_eq!(r.per_verdict[0], (10.0, 1000.0));
        // Recreated pins: counters went backwards, no negative rate.
        let r = Rates::between(&snapshot(30), &snapshot(10), Duration::from_secs(2));
        assert_eq!(r.per_verdict[0], (0.0, 0.0));
        assert_eq!(human_rate(0.0), "0");
        assert_eq!(human_rate(2.54), "2.5");
        assert_eq!(human_rate(1234.0), "1.2K");
    }

    #[test]
    fn watch_table_has_rate_columns() {
        let pins = PinDir::new("/sys/fs/bpf/egress");
        let s = snapshot(5);
        let first = render_watch(&s, &pins, None);
        assert!(first.contains("pkts/s"), "{first}");
        let r = Rates::between(&snapshot(0), &s, Duration::from_secs(1));
        let next = render_watch(&s, &pins, Some(&r));
        assert!(next.contains("     5.0"), "{next}");
        assert!(!render_table(&s, &pins).contains("pkts/s"));
    }
}
