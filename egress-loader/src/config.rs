//! The configuration file (TOML), the command-line overrides, and their
//! validation into a [`Policy`]. Nothing here touches the kernel: every error
//! is found before anything is written.

use std::{fmt, net::IpAddr, path::Path, str::FromStr};

use egress_ebpf_common::{
    bucket::Gcra,
    config::MAX_SMTP_PORTS,
    events::{DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE_PER_SEC},
    maps::MAX_RULES,
    rules::{PROTO_TCP, PROTO_UDP},
};
use serde::{Deserialize, Serialize};

/// An invalid configuration: names the field and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The file as written. Every key is optional; what is absent takes the default.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub dry_run: Option<bool>,
    pub attach: Option<AttachSection>,
    pub block: Option<Vec<BlockEntry>>,
    pub smtp: Option<SmtpSection>,
    pub events: Option<EventsSection>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Report drops at all (default true).
    pub enabled: Option<bool>,
    /// At most this many drop events reach userspace (default 100/second).
    pub rate: Option<String>,
    pub burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AttachSection {
    pub interfaces: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BlockEntry {
    pub cidr: String,
    pub protocol: Option<String>,
    pub ports: Option<Vec<i64>>,
    /// Free text, shown by `status`.
    pub comment: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub ports: Option<Vec<i64>>,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub scope: Option<String>,
}

/// The destinations blocked when the configuration names none: instance
/// metadata services of the major clouds.
pub const DEFAULT_BLOCKS: &[(&str, Option<&str>, &[u16], &str)] = &[
    (
        "169.254.169.254/32",
        None,
        &[],
        "instance metadata: AWS, Azure, GCP, OCI, DigitalOcean, OpenStack",
    ),
    (
        "169.254.170.2/32",
        None,
        &[],
        "ECS task metadata and credentials",
    ),
    ("100.100.100.200/32", None, &[], "Alibaba Cloud metadata"),
    ("192.0.0.192/32", None, &[], "Oracle Cloud metadata (OCI)"),
    (
        "fd00:ec2::254/128",
        None,
        &[],
        "AWS instance metadata over IPv6",
    ),
    (
        "168.63.129.16/32",
        Some("tcp"),
        &[80, 32526],
        "Azure WireServer and host agent (its DNS on 53 stays open)",
    ),
];
pub const DEFAULT_INTERFACES: &[&str] = &["docker0", "br-*"];
pub const DEFAULT_SMTP_PORTS: &[u16] = &[25, 465, 587, 2525];
pub const DEFAULT_SMTP_RATE: &str = "5/minute";
pub const DEFAULT_SMTP_BURST: u32 = 5;
pub const MAX_BURST: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One bucket for the whole host: the iptables `-m limit` semantics.
    Global,
    /// One bucket per container source address.
    PerSource,
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "global" => Ok(Scope::Global),
            "per-source" => Ok(Scope::PerSource),
            _ => Err(format!(
                "{s:?} is not a scope: use \"global\" or \"per-source\""
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Global => "global",
            Scope::PerSource => "per-source",
        })
    }
}

/// A rate as iptables writes it: `N/second|minute|hour|day` (unique prefixes
/// such as `s`, `min`, `h` accepted, like iptables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    pub const fn nanos(self) -> u64 {
        match self {
            Period::Second => 1_000_000_000,
            Period::Minute => 60_000_000_000,
            Period::Hour => 3_600_000_000_000,
            Period::Day => 86_400_000_000_000,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = s.trim().split_once('/').ok_or_else(|| {
            format!("{s:?} is not a rate: write N/second, N/minute, N/hour or N/day")
        })?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{n:?} in {s:?} is not a whole number"))?;
        if count == 0 {
            return Err(format!(
                "{s:?}: the rate must be at least 1 (to block SMTP entirely, add a block rule)"
            ));
        }
        let unit = unit.trim().to_ascii_lowercase();
        let period = [Period::Second, Period::Minute, Period::Hour, Period::Day]
            .into_iter()
            .find(|p| !unit.is_empty() && p.name().starts_with(unit.as_str()))
            .ok_or_else(|| {
                format!("{unit:?} in {s:?} is not a unit: use second, minute, hour or day")
            })?;
        if count > period.nanos() {
            return Err(format!("{s:?} is faster than one per nanosecond"));
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.period.name())
    }
}

/// A destination prefix, normalized (no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn max_len(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// Address bytes masked to `len` bits.
    pub fn masked_bytes(addr: &IpAddr, len: u8) -> Vec<u8> {
        let mut b = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        for (i, byte) in b.iter_mut().enumerate() {
            let bits_before = (i * 8) as u32;
            let keep = (len as u32).saturating_sub(bits_before).min(8);
            *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        b
    }

    pub fn bytes(&self) -> Vec<u8> {
        Self::masked_bytes(&self.addr, self.prefix_len)
    }

    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix_len <= other.prefix_len
            && Self::masked_bytes(&other.addr, self.prefix_len) == self.bytes()
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        let max = Self::max_len(&addr);
        let prefix_len = match len {
            None => max,
            Some(l) => {
                let n: u8 = l
                    .trim()
                    .parse()
                    .map_err(|_| format!("{l:?} is not a prefix length (0-{max})"))?;
                if n > max {
                    return Err(format!(
                        "/{n} is longer than an {} address (/{max} at most)",
                        if max == 32 { "IPv4" } else { "IPv6" }
                    ));
                }
                n
            }
        };
        let c = Cidr { addr, prefix_len };
        let masked = Self::masked_bytes(&addr, prefix_len);
        let orig = Self::masked_bytes(&addr, max);
        if masked != orig {
            let net: IpAddr = match addr {
                IpAddr::V4(_) => <[u8; 4]>::try_from(masked)
                    .map(IpAddr::from)
                    .unwrap_or(addr),
                IpAddr::V6(_) => <[u8; 16]>::try_from(masked)
                    .map(IpAddr::from)
                    .unwrap_or(addr),
            };
            return Err(format!(
                "{s:?} has host bits set: did you mean {net}/{prefix_len}?"
            ));
        }
        if prefix_len == 0 {
            return Err(format!("{s:?} would block every destination"));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!(
                "{s:?} is not a protocol: use \"tcp\" or \"udp\" (or leave it out to block every protocol)"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One validated block rule. `protocol: None` blocks every protocol; `ports`
/// empty with a protocol blocks every port of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRule {
    #[serde(serialize_with = "display")]
    pub cidr: Cidr,
    pub protocol: Option<Protocol>,
    pub ports: Vec<u16>,
    pub comment: Option<String>,
}

impl fmt::Display for BlockRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if let Some(p) = self.protocol {
            write!(f, ":{p}")?;
            if !self.ports.is_empty() {
                let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
                write!(f, "/{}", ports.join(","))?;
            }
        }
        Ok(())
    }
}

/// `CIDR[:tcp|udp[/PORT,PORT...]]`, the `--block` syntax. IPv6 addresses
/// contain colons, so only a trailing `:tcp...`/`:udp...` is a protocol.
pub fn parse_block_flag(s: &str) -> Result<BlockEntry, String> {
    let mut cidr = s;
    let mut protocol = None;
    let mut ports = None;
    if let Some(idx) = s.rfind(':') {
        let tail = &s[idx + 1..];
        let (proto, port_list) = match tail.split_once('/') {
            Some((p, l)) => (p, Some(l)),
            None => (tail, None),
        };
        if proto == "tcp" || proto == "udp" {
            cidr = &s[..idx];
            protocol = Some(proto.to_string());
            if let Some(l) = port_list {
                let parsed: Result<Vec<i64>, String> = l
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<i64>()
                            .map_err(|_| format!("{p:?} in {s:?} is not a port number"))
                    })
                    .collect();
                ports = Some(parsed?);
            }
        }
    }
    Ok(BlockEntry {
        cidr: cidr.to_string(),
        protocol,
        ports,
        comment: Some("--block".to_string()),
    })
}

/// Comma-separated ports, the `--smtp-ports` syntax. A newtype, because clap
/// takes a bare `Vec` field for a repeated argument, not for one list value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<i64>);

pub fn parse_port_list(s: &str) -> Result<PortList, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<i64>()
                .map_err(|_| format!("{p:?} is not a port number"))
        })
        .collect::<Result<_, _>>()
        .map(PortList)
}

fn port(field: &str, p: i64) -> Result<u16, ConfigError> {
    if (1..=65535).contains(&p) {
        Ok(p as u16)
    } else {
        Err(bad(field, format!("{p} is not a port: use 1-65535")))
    }
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    pub extra_blocks: Vec<BlockEntry>,
    pub smtp_ports: Option<Vec<i64>>,
    pub smtp_rate: Option<String>,
    pub smtp_burst: Option<i64>,
    pub scope: Option<String>,
    pub dry_run: bool,
}

/// Everything the loader applies, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub dry_run: bool,
    pub interfaces: Vec<String>,
    pub blocks: Vec<BlockRule>,
    pub smtp_ports: Vec<u16>,
    #[serde(serialize_with = "display")]
    pub smtp_rate: Rate,
    pub smtp_burst: u32,
    pub scope: Scope,
    /// Drop-event budget; `None` when events are disabled.
    #[serde(serialize_with = "display_opt")]
    pub event_rate: Option<Rate>,
    pub event_burst: u32,
}

fn display_opt<T: fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_str("off"),
    }
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Policy {
    /// The GCRA parameters the classifier runs with.
    pub fn gcra(&self) -> Gcra {
        // Validation guaranteed these are non-zero and do not overflow.
        Gcra::new(
            self.smtp_rate.count,
            self.smtp_rate.period.nanos(),
            self.smtp_burst as u64,
        )
        .expect("validated rate and burst")
    }

    pub fn from_file(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::from_toml(&text, overrides)
    }

    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            // toml names the key and the line; keep its message whole.
            bad("config", e.to_string().trim_end().to_string())
        })?;
        Self::build(file, overrides)
    }

    pub fn build(file: ConfigFile, o: &Overrides) -> Result<Self, ConfigError> {
        let attach = file.attach.unwrap_or_default();
        let interfaces = if !o.interfaces.is_empty() {
            validate_patterns("--iface", o.interfaces.clone())?
        } else if let Some(list) = attach.interfaces {
            validate_patterns("attach.interfaces", list)?
        } else {
            DEFAULT_INTERFACES.iter().map(|s| s.to_string()).collect()
        };

        let mut entries: Vec<(String, BlockEntry)> = match file.block {
            Some(list) if list.is_empty() => {
                return Err(bad(
                    "block",
                    "empty list: remove the key to keep the default metadata blocks",
                ));
            }
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("block[{i}]"), b))
                .collect(),
            None => DEFAULT_BLOCKS
                .iter()
                .enumerate()
                .map(|(i, (c, p, ports, comment))| {
                    (
                        format!("default block[{i}]"),
                        BlockEntry {
                            cidr: c.to_string(),
                            protocol: p.map(str::to_string),
                            ports: if ports.is_empty() {
                                None
                            } else {
                                Some(ports.iter().map(|&p| p as i64).collect())
                            },
                            comment: Some(comment.to_string()),
                        },
                    )
                })
                .collect(),
        };
        entries.extend(
            o.extra_blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("--block[{i}] {:?}", flag_text(b)), b.clone())),
        );
        let mut blocks = Vec::with_capacity(entries.len());
        for (field, e) in &entries {
            blocks.push(validate_block(field, e)?);
        }
        if blocks.len() > MAX_RULES as usize {
            return Err(bad(
                "block",
                format!("{} rules; at most {MAX_RULES} are supported", blocks.len()),
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (i, b) in blocks.iter().enumerate() {
            let key = (b.cidr, b.protocol, b.ports.clone());
            if let Some(j) = seen.insert(key, i) {
                return Err(bad(
                    &entries[i].0,
                    format!("duplicates {} ({b})", entries[j].0),
                ));
            }
        }

        let smtp = file.smtp.unwrap_or_default();
        let (ports_field, ports) = match (&o.smtp_ports, smtp.ports) {
            (Some(p), _) => ("--smtp-ports", p.clone()),
            (None, Some(p)) => ("smtp.ports", p),
            (None, None) => (
                "smtp.ports",
                DEFAULT_SMTP_PORTS.iter().map(|&p| p as i64).collect(),
            ),
        };
        if ports.is_empty() {
            return Err(bad(
                ports_field,
                "empty list: name at least one port (to rate-limit nothing, leave out nothing: use dry_run to observe)",
            ));
        }
        if ports.len() > MAX_SMTP_PORTS {
            return Err(bad(
                ports_field,
                format!("{} ports; at most {MAX_SMTP_PORTS}", ports.len()),
            ));
        }
        let mut smtp_ports = Vec::new();
        for (i, &p) in ports.iter().enumerate() {
            let p = port(&format!("{ports_field}[{i}]"), p)?;
            if smtp_ports.contains(&p) {
                return Err(bad(
                    format!("{ports_field}[{i}]"),
                    format!("port {p} is listed twice"),
                ));
            }
            smtp_ports.push(p);
        }

        let (rate_field, rate) = match (&o.smtp_rate, smtp.rate) {
            (Some(r), _) => ("--smtp-rate", r.clone()),
            (None, Some(r)) => ("smtp.rate", r),
            (None, None) => ("smtp.rate", DEFAULT_SMTP_RATE.to_string()),
        };
        let smtp_rate: Rate = rate.parse().map_err(|e| bad(rate_field, e))?;

        let (burst_field, burst) = match (o.smtp_burst, smtp.burst) {
            (Some(b), _) => ("--smtp-burst", b),
            (None, Some(b)) => ("smtp.burst", b),
            (None, None) => ("smtp.burst", DEFAULT_SMTP_BURST as i64),
        };
        if !(1..=MAX_BURST as i64).contains(&burst) {
            return Err(bad(
                burst_field,
                format!("{burst} is not a burst: use 1-{MAX_BURST}"),
            ));
        }
        let smtp_burst = burst as u32;
        if Gcra::new(smtp_rate.count, smtp_rate.period.nanos(), smtp_burst as u64).is_none() {
            return Err(bad(
                burst_field,
                format!("burst {burst} at {smtp_rate} overflows the bucket's clock"),
            ));
        }

        let (scope_field, scope) = match (&o.scope, smtp.scope) {
            (Some(s), _) => ("--scope", s.clone()),
            (None, Some(s)) => ("smtp.scope", s),
            (None, None) => ("smtp.scope", "global".to_string()),
        };
        let scope: Scope = scope.parse().map_err(|e| bad(scope_field, e))?;

        let events = file.events.unwrap_or_default();
        let event_rate = if events.enabled.unwrap_or(true) {
            let r = events
                .rate
                .unwrap_or_else(|| format!("{DEFAULT_EVENT_RATE_PER_SEC}/second"));
            Some(r.parse::<Rate>().map_err(|e| bad("events.rate", e))?)
        } else {
            None
        };
        let event_burst = events.burst.unwrap_or(DEFAULT_EVENT_BURST as i64);
        if !(1..=MAX_BURST as i64).contains(&event_burst) {
            return Err(bad(
                "events.burst",
                format!("{event_burst} is not a burst: use 1-{MAX_BURST}"),
            ));
        }
        if let Some(r) = event_rate
            && Gcra::new(r.count, r.period.nanos(), event_burst as u64).is_none()
        {
            return Err(bad(
                "events.burst",
                format!("burst {event_burst} at {r} overflows the bucket's clock"),
            ));
        }

        let policy = Policy {
            dry_run: o.dry_run || file.dry_run.unwrap_or(false),
            interfaces,
            blocks,
            smtp_ports,
            smtp_rate,
            smtp_burst,
            scope,
            event_rate,
            event_burst: event_burst as u32,
        };
        // The merged trie entries have a capacity per prefix; check it here so
        // the error names the configuration, not a map.
        crate::policy::trie_entries(&policy).map_err(|e| bad("block", e))?;
        Ok(policy)
    }
}

fn flag_text(b: &BlockEntry) -> String {
    let mut s = b.cidr.clone();
    if let Some(p) = &b.protocol {
        s.push(':');
        s.push_str(p);
        if let Some(ports) = &b.ports {
            s.push('/');
            s.push_str(
                &ports
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    s
}

fn validate_block(field: &str, e: &BlockEntry) -> Result<BlockRule, ConfigError> {
    let cidr: Cidr = e
        .cidr
        .parse()
        .map_err(|p| bad(format!("{field}.cidr"), p))?;
    let protocol = match &e.protocol {
        None => None,
        Some(p) => Some(
            p.parse::<Protocol>()
                .map_err(|m| bad(format!("{field}.protocol"), m))?,
        ),
    };
    let mut ports = Vec::new();
    if let Some(list) = &e.ports {
        if protocol.is_none() {
            return Err(bad(
                format!("{field}.ports"),
                "ports need a protocol: add protocol = \"tcp\" or \"udp\"",
            ));
        }
        if list.is_empty() {
            return Err(bad(
                format!("{field}.ports"),
                "empty list: leave the key out to block every port",
            ));
        }
        for (i, &p) in list.iter().enumerate() {
            let p = port(&format!("{field}.ports[{i}]"), p)?;
            if ports.contains(&p) {
                return Err(bad(
                    format!("{field}.ports[{i}]"),
                    format!("port {p} is listed twice"),
                ));
            }
            ports.push(p);
        }
    }
    Ok(BlockRule {
        cidr,
        protocol,
        ports,
        comment: e.comment.clone(),
    })
}

/// Interface patterns: names with `*` and `?` wildcards, at most 15 characters
/// (IFNAMSIZ - 1) without the wildcards.
fn validate_patterns(field: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(bad(
            field,
            "empty list: name at least one interface or pattern",
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if p.is_empty() {
            return Err(bad(f, "empty interface pattern"));
        }
        if p.chars()
            .any(|c| c == '/' || c.is_whitespace() || c == ':' || c.is_control())
        {
            return Err(bad(
                f,
                format!("{p:?} cannot match an interface name (no '/', ':' or whitespace)"),
            ));
        }
        if p.chars().filter(|&c| c != '*').count() > 15 {
            return Err(bad(
                f,
                format!("{p:?} is longer than an interface name can be (15)"),
            ));
        }
        if list[..i].contains(p) {
            return Err(bad(f, format!("{p:?} is listed twice")));
        }
    }
    Ok(list)
}

/// Shell-style match of an interface name: `*` any run, `?` one character.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The defaults written out as a configuration file (`check-config` and the README show it).
pub fn default_config_toml() -> String {
    let mut s = String::from("dry_run = false\n\n[attach]\ninterfaces = [\"docker0\", \"br-*\"]\n");
    for (cidr, proto, ports, comment) in DEFAULT_BLOCKS {
        s.push_str(&format!("\n[[block]]\ncidr = \"{cidr}\"\n"));
        if let Some(p) = proto {
            s.push_str(&format!("protocol = \"{p}\"\n"));
        }
        if !ports.is_empty() {
            let l: Vec<String> = ports.iter().map(u16::to_string).collect();
            s.push_str(&format!("ports = [{}]\n", l.join(", ")));
        }
        s.push_str(&format!("comment = \"{comment}\"\n"));
    }
    let ports: Vec<String> = DEFAULT_SMTP_PORTS.iter().map(u16::to_string).collect();
    s.push_str(&format!(
        "\n[smtp]\nports = [{}]\nrate = \"{DEFAULT_SMTP_RATE}\"\nburst = {DEFAULT_SMTP_BURST}\nscope = \"global\"\n",
        ports.join(", ")
    ));
    s.push_str(&format!(
        "\n[events]\nenabled = true\nrate = \"{DEFAULT_EVENT_RATE_PER_SEC}/second\"\nburst = {DEFAULT_EVENT_BURST}\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_as_iptables_writes_them() {
        for (text, count, period) in [
            ("5/minute", 5, Period::Minute),
            ("5/min", 5, Period::Minute),
            ("5/m", 5, Period::Minute),
            ("10/SECOND", 10, Period::Second),
            ("1/s", 1, Period::Second),
            (" 3 / hour ", 3, Period::Hour),
            ("2/d", 2, Period::Day),
        ] {
            assert_eq!(text.parse::<Rate>(), Ok(Rate { count, period }), "{text}");
        }
        for bad in [
            "0/minute",
            "5/fortnight",
            "five/minute",
            "5",
            "5/",
            "/minute",
            "-1/second",
            "5/minutes",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} must be refused");
        }
        assert_eq!("5/minute".parse::<Rate>().unwrap().to_string(), "5/minute");
    }

    #[test]
    fn cidrs_are_exact() {
        assert_eq!(
            "169.254.169.254".parse::<Cidr>().unwrap().to_string(),
            "169.254.169.254/32"
        );
        assert_eq!(
            "fd00:ec2::254".parse::<Cidr>().unwrap().to_string(),
            "fd00:ec2::254/128"
        );
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().prefix_len, 8);
        let host_bits = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(host_bits.contains("did you mean 10.0.0.0/8"), "{host_bits}");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "0.0.0.0/0",
            "::/0",
            "10.0.0/8",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} must be refused");
        }
        let wide: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(wide.contains(&"10.1.2.3/32".parse().unwrap()));
        assert!(!wide.contains(&"11.0.0.0/32".parse().unwrap()));
        assert!(!wide.contains(&"::a00:1/128".parse().unwrap()));
    }

    #[test]
    fn block_flag_syntax_with_ipv6_colons() {
        let b = parse_block_flag("168.63.129.16/32:tcp/80,32526").unwrap();
        assert_eq!(
            (b.cidr.as_str(), b.protocol.as_deref(), b.ports),
            ("168.63.129.16/32", Some("tcp"), Some(vec![80, 32526]))
        );
        let b = parse_block_flag("fd00:ec2::254/128:udp/53").unwrap();
        assert_eq!(
            (b.cidr.as_str(), b.protocol.as_deref(), b.ports),
            ("fd00:ec2::254/128", Some("udp"), Some(vec![53]))
        );
        let b = parse_block_flag("fd00:ec2::254").unwrap();
        assert_eq!((b.cidr.as_str(), b.protocol), ("fd00:ec2::254", None));
        let b = parse_block_flag("10.0.0.0/8:tcp").unwrap();
        assert_eq!((b.protocol.as_deref(), b.ports), (Some("tcp"), None));
        assert!(parse_block_flag("10.0.0.0/8:tcp/x").is_err());
    }

    #[test]
    fn interface_patterns() {
        assert!(pattern_matches("br-*", "br-1a2b3c4d5e6f"));
        assert!(pattern_matches("docker0", "docker0"));
        assert!(!pattern_matches("docker0", "docker01"));
        assert!(pattern_matches("cni?", "cni0"));
        assert!(!pattern_matches("br-*", "bridge0"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn the_written_out_defaults_are_the_defaults() {
        let written = Policy::from_toml(&default_config_toml(), &Overrides::default()).unwrap();
        let mut implicit = Policy::from_toml("", &Overrides::default()).unwrap();
        // Comments differ only in provenance.
        for (w, i) in written.blocks.iter().zip(implicit.blocks.iter_mut()) {
            i.comment = w.comment.clone();
        }
        assert_eq!(written, implicit);
        assert_eq!(implicit.smtp_ports, [25, 465, 587, 2525]);
        assert_eq!(
            (
                implicit.smtp_rate.to_string(),
                implicit.smtp_burst,
                implicit.scope
            ),
            ("5/minute".into(), 5, Scope::Global)
        );
        assert_eq!(implicit.interfaces, ["docker0", "br-*"]);
    }

    #[test]
    fn flags_override_the_file() {
        let o = Overrides {
            interfaces: vec!["cni0".into()],
            extra_blocks: vec![parse_block_flag("10.0.0.0/8").unwrap()],
            smtp_ports: Some(vec![25]),
            smtp_rate: Some("2/minute".into()),
            smtp_burst: Some(2),
            scope: Some("per-source".into()),
            dry_run: true,
        };
        let p =
            Policy::from_toml("[smtp]\nports = [587]\nrate = \"9/hour\"\nburst = 9\n", &o).unwrap();
        assert_eq!(p.interfaces, ["cni0"]);
        assert_eq!(
            p.blocks.len(),
            DEFAULT_BLOCKS.len() + 1,
            "--block adds to the list"
        );
        assert_eq!(
            (
                p.smtp_ports.as_slice(),
                p.smtp_rate.to_string(),
                p.smtp_burst,
                p.scope,
                p.dry_run
            ),
            (&[25u16][..], "2/minute".into(), 2, Scope::PerSource, true)
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (toml, field) in [
            ("[[block]]\ncidr = \"10.0.0.0/33\"\n", "block[0].cidr"),
            ("[smtp]\nburst = 0\n", "smtp.burst"),
            ("[smtp]\nscope = \"x\"\n", "smtp.scope"),
            ("[attach]\ninterfaces = [\"a/b\"]\n", "attach.interfaces[0]"),
        ] {
            assert_eq!(
                Policy::from_toml(toml, &Overrides::default())
                    .unwrap_err()
                    .field,
                field,
                "{toml}"
            );
        }
    }
}
