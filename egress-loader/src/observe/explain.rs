//! `explain`: what the filter in force would do with a connection, without
//! sending anything. The policy is read back from the pins (the tries, the
//! config slot in force, the SMTP buckets' state) into the host's model of
//! the maps, and the client's first packet is judged by the decision code
//! the kernel runs (`egress_ebpf_common::decide`); the model's buckets are
//! charged, never the kernel's. Like `iptables -C`, Cilium's `policy trace`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use egress_ebpf_common::{
    bucket::Gcra,
    config::{OVER_LIMIT_REJECT, PolicyConfig, SCOPE_PER_SOURCE},
    decide::{Action, PolicyView},
    maps::{
        BLOCKED_V4, BLOCKED_V6, SMTP_BUCKET, SMTP_GLOBAL_SLOT, SMTP_GLOBAL_SLOTS,
        SMTP_OVERFLOW_SLOT, SMTP_SOURCE_BUCKETS,
    },
    model::{PolicyModel, Prefixes},
    parse::v4_mapped,
    rules::{BlockRule, NO_RULE},
};
use serde::Serialize;

use crate::{
    Error,
    kernel::{clock::monotonic_ns, maps, pins::PinDir},
    observe::counters::rule_texts,
    policy::{
        apply::read_config,
        trace::{first_packet, judge},
        values::Protocol,
    },
};

/// A connection to explain: the client's address (unspecified: any
/// container) and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub from: Option<IpAddr>,
    pub to: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// The answer, as `explain --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    /// The verdict counter the packet would count in (`passed`,
    /// `metadata_blocked`, `smtp_allowed`, `smtp_limited`).
    pub verdict: &'static str,
    /// `pass`, `drop` or `reject`; in dry-run always `pass`.
    pub action: &'static str,
    /// In dry-run: what the action would be if enforcing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u16>,
    /// The matching block rule, as `counters` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The port exception that keeps a blocked destination open for this
    /// connection, with its rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// What a reject answers with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<&'static str>,
    /// The program and hook that judge it.
    pub hook: String,
    /// For a connection attempt to a rate-limited port: the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_bucket: Option<BucketState>,
    pub dry_run: bool,
}

/// A GCRA bucket's state now.
#[derive(Debug, Clone, Serialize)]
pub struct BucketState {
    /// `global`, `per-source` or `per-source (overflow)`.
    pub scope: String,
    /// Whole tokens left (attempts admitted at once from now).
    pub tokens: u64,
    pub burst: u64,
    /// Milliseconds until the next token (0: one is there).
    pub next_token_ms: u64,
}

fn tokens(g: &Gcra, tat: u64, now: u64) -> (u64, u64) {
    if g.emission_ns == 0 {
        return (0, 0);
    }
    let burst = g.burst_window_ns / g.emission_ns;
    let debt = tat.saturating_sub(now);
    let left = g.burst_window_ns.saturating_sub(debt) / g.emission_ns;
    // The next token: when the debt is one emission below the window.
    let next = if left > 0 {
        0
    } else {
        (debt + g.emission_ns).saturating_sub(g.burst_window_ns)
    };
    (left.min(burst), next / 1_000_000)
}

fn v6_key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => v4_mapped(&a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The policy in force at `pins`, as a model of the maps at the kernel's
/// clock now.
fn read_model(pins: &PinDir) -> Result<(PolicyModel, PolicyConfig), Error> {
    let policy = maps::PolicyMaps::open(pins)?;
    let mut v4: Prefixes<4> = BTreeMap::new();
    for item in policy.blocked_v4.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V4, e))?;
        v4.insert((k.prefix_len(), k.data()), v);
    }
    let mut v6: Prefixes<16> = BTreeMap::new();
    for item in policy.blocked_v6.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V6, e))?;
        v6.insert((k.prefix_len(), k.data()), v);
    }
    let config = read_config(&policy.active_config, &policy.policy_config)?;
    let bucket = maps::smtp_bucket(pins)?;
    let mut slots = [0u64; SMTP_GLOBAL_SLOTS as usize];
    for (i, s) in slots.iter_mut().enumerate() {
        *s = bucket
            .get(&(i as u32), 0)
            .map_err(|e| Error::map(SMTP_BUCKET, e))?;
    }
    let mut sources = BTreeMap::new();
    for item in maps::smtp_source_buckets(pins)?.iter() {
        let (k, v) = item.map_err(|e| Error::map(SMTP_SOURCE_BUCKETS, e))?;
        sources.insert(k, v);
    }
    let model = PolicyModel::new(v4, v6, config).with_smtp_state(slots, sources);
    model.set_now(monotonic_ns());
    Ok((model, config))
}

/// The bucket a connection attempt from `src` would be charged to.
fn bucket_state(pins: &PinDir, c: &PolicyConfig, src: [u8; 16]) -> Result<BucketState, Error> {
    let g = Gcra {
        emission_ns: c.emission_ns,
        burst_window_ns: c.burst_window_ns,
    };
    let slots = maps::smtp_bucket(pins)?;
    let slot = |i: u32| slots.get(&i, 0).map_err(|e| Error::map(SMTP_BUCKET, e));
    let (scope, tat) = if c.scope == SCOPE_PER_SOURCE {
        let table = maps::smtp_source_buckets(pins)?;
        match table.get(&src, 0) {
            Ok(tat) => ("per-source".to_string(), tat),
            Err(_) => {
                let full =
                    table.keys().count() as u32 >= egress_ebpf_common::maps::SMTP_SOURCE_CAPACITY;
                if full {
                    (
                        "per-source (overflow: the table is full)".to_string(),
                        slot(SMTP_OVERFLOW_SLOT)?,
                    )
                } else {
                    ("per-source (a new, full bucket)".to_string(), 0)
                }
            }
        }
    } else {
        ("global".to_string(), slot(SMTP_GLOBAL_SLOT)?)
    };
    let (left, next) = tokens(&g, tat, monotonic_ns());
    Ok(BucketState {
        scope,
        tokens: left,
        burst: g.burst_window_ns.checked_div(g.emission_ns).unwrap_or(0),
        next_token_ms: next,
    })
}

/// The longest-prefix entry for `to`, as the kernel's lookup finds it.
fn entry(model: &PolicyModel, to: IpAddr) -> Option<&BlockRule> {
    match to {
        IpAddr::V4(a) => model.blocked_v4(&a.octets()),
        IpAddr::V6(a) => model.blocked_v6(&a.octets()),
    }
}

/// Explains `q` against the filter at `pins`; `hook` names the program
/// and hook that would judge it.
pub fn explain(pins: &PinDir, q: &Query, hook: String) -> Result<Explanation, Error> {
    if !pins.is_loaded() {
        return Err(maps::not_loaded(pins));
    }
    let (model, config) = read_model(pins)?;
    let policy = maps::PolicyMaps::open(pins)?;
    let texts = rule_texts(&policy)?;
    let from = q.from.unwrap_or(match q.to {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let parsed = first_packet(from, q.to, q.protocol, q.port);
    let d = judge(&model, &parsed);
    let dry_run = config.valid != 0 && config.dry_run != 0;
    let enforced = |a: Action| match a {
        Action::Pass => "pass",
        Action::Drop => "drop",
        Action::Reject => "reject",
    };
    // In dry-run the decision passes: what it would do comes from the
    // rule's (or the limit's) own action.
    let would = if dry_run && d.verdict.drops() {
        let rejects = match texts.get(&d.rule) {
            Some(t) => t.action == "reject",
            None => config.smtp_over_limit == OVER_LIMIT_REJECT,
        };
        Some(if rejects { "reject" } else { "drop" })
    } else {
        None
    };
    let rejects = d.action == Action::Reject || would == Some("reject");
    let reply = rejects.then_some(match (q.protocol, q.to) {
        (Protocol::Tcp, _) => "TCP reset",
        (_, IpAddr::V4(_)) => "ICMP port unreachable",
        (_, IpAddr::V6(_)) => "ICMPv6 port unreachable",
    });
    let exception = entry(&model, q.to)
        .filter(|_| !d.verdict.drops())
        .and_then(|e| e.excepts(q.protocol.number(), q.port))
        .map(|m| {
            let rule = texts
                .get(&m.rule_id)
                .map(|t| t.destination.clone())
                .unwrap_or_default();
            format!(
                "{}/{} is excepted from rule {} ({rule})",
                q.protocol, q.port, m.rule_id
            )
        });
    let smtp_bucket = if config.valid != 0
        && q.protocol == Protocol::Tcp
        && config.is_smtp_port(q.port)
        && d.rule == NO_RULE
    {
        Some(bucket_state(pins, &config, v6_key(from))?)
    } else {
        None
    };
    let show = |a: IpAddr| match a {
        a if a.is_unspecified() => "any".to_string(),
        a => a.to_string(),
    };
    Ok(Explanation {
        from: show(from),
        to: q.to.to_string(),
        port: q.port,
        protocol: q.protocol.to_string(),
        verdict: d.verdict.name(),
        action: enforced(d.action),
        would,
        rule_id: (d.rule != NO_RULE).then_some(d.rule),
        rule: texts.get(&d.rule).map(|t| {
            if t.except.is_empty() {
                format!("{} {}", t.destination, t.action)
            } else {
                format!(
                    "{} except {} {}",
                    t.destination,
                    t.except.join(","),
                    t.action
                )
            }
        }),
        exception,
        reply,
        hook,
        smtp_bucket,
        dry_run,
    })
}

/// The human-readable form.
pub fn render(e: &Explanation) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let to = if e.to.contains(':') {
        format!("[{}]:{}/{}", e.to, e.port, e.protocol)
    } else {
        format!("{}:{}/{}", e.to, e.port, e.protocol)
    };
    let _ = writeln!(t, "from {} to {to}", e.from);
    let action = match (e.action, e.would) {
        (a, Some(w)) => format!("{a} (dry-run; enforcing: {w})"),
        (a, None) => a.to_uppercase(),
    };
    let _ = writeln!(t, "  verdict:   {} -> {action}", e.verdict);
    if let Some(r) = &e.rule {
        let _ = writeln!(t, "  rule:      {} {r}", e.rule_id.unwrap_or(NO_RULE));
    }
    if let Some(x) = &e.exception {
        let _ = writeln!(t, "  exception: {x}");
    }
    if let Some(r) = e.reply {
        let _ = writeln!(t, "  reply:     {r} (within the reply budget)");
    }
    if let Some(b) = &e.smtp_bucket {
        let _ = writeln!(
            t,
            "  bucket:    {} {}/{} tokens, next in {} ms",
            b.scope, b.tokens, b.burst, b.next_token_ms
        );
    }
    let _ = writeln!(t, "  hook:      {}", e.hook);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_tat() {
        let g = Gcra {
            emission_ns: 1_000_000_000,
            burst_window_ns: 5_000_000_000,
        };
        assert_eq!(tokens(&g, 0, 10_000_000_000), (5, 0), "never used: full");
        assert_eq!(tokens(&g, 12_000_000_000, 10_000_000_000), (3, 0));
        // Spent: the debt is the whole window; the next token in 1 s.
        assert_eq!(tokens(&g, 15_000_000_000, 10_000_000_000), (0, 1000));
        assert_eq!(
            tokens(
                &Gcra {
                    emission_ns: 0,
                    burst_window_ns: 0
                },
                0,
                1
            ),
            (0, 0)
        );
    }
}
