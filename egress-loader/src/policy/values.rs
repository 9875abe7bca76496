//! The validated values a policy is made of: rates, destination prefixes,
//! protocols, the bucket scope, block rules, and the [`Policy`] itself.
//! Each parses from the text a file or flag gives and prints back the same.

use std::{fmt, net::IpAddr, str::FromStr};

use egress_ebpf_common::{
    bucket::Gcra,
    rules::{PROTO_TCP, PROTO_UDP},
};
use serde::Serialize;

use crate::{error::ConfigError, policy::error::ValueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One bucket for the whole host: the iptables `-m limit` semantics.
    Global,
    /// One bucket per container source address.
    PerSource,
    /// One bucket per endpoint (the container's veth, which it cannot
    /// forge); per source address where the bridge judges (a veth not
    /// attached yet).
    PerContainer,
}

impl FromStr for Scope {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "global" => Ok(Scope::Global),
            "per-source" => Ok(Scope::PerSource),
            "per-container" => Ok(Scope::PerContainer),
            _ => Err(ValueError::NotAScope(s.into())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Global => "global",
            Scope::PerSource => "per-source",
            Scope::PerContainer => "per-container",
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| ValueError::NotARate(s.into()))?;
        let count: u64 = n.trim().parse().map_err(|_| ValueError::RateCount {
            count: n.into(),
            rate: s.into(),
        })?;
        if count == 0 {
            return Err(ValueError::ZeroRate(s.into()));
        }
        let unit = unit.trim().to_ascii_lowercase();
        let period = [Period::Second, Period::Minute, Period::Hour, Period::Day]
            .into_iter()
            .find(|p| !unit.is_empty() && p.name().starts_with(unit.as_str()))
            .ok_or_else(|| ValueError::RateUnit {
                unit: unit.clone(),
                rate: s.into(),
            })?;
        if count > period.nanos() {
            return Err(ValueError::RateTooFast(s.into()));
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| ValueError::NotAnAddress(a.into()))?;
        let max = Self::max_len(&addr);
        let prefix_len = match len {
            None => max,
            Some(l) => {
                let n: u8 = l
                    .trim()
                    .parse()
                    .map_err(|_| ValueError::NotAPrefixLength { len: l.into(), max })?;
                if n > max {
                    return Err(ValueError::PrefixTooLong { len: n, max });
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
            return Err(ValueError::HostBitsSet {
                text: s.into(),
                network: net,
                prefix_len,
            });
        }
        if prefix_len == 0 {
            return Err(ValueError::EveryDestination(s.into()));
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(ValueError::NotAProtocol(s.into())),
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

/// What a block rule does to what it matches, and what the SMTP limit does
/// over the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Dropped silently: the sender waits out its own timeout.
    Drop,
    /// Dropped, and the sender answered (a TCP reset, an ICMP port
    /// unreachable) so it fails at once.
    Reject,
}

impl FromStr for RuleAction {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "drop" => Ok(RuleAction::Drop),
            "reject" => Ok(RuleAction::Reject),
            _ => Err(ValueError::NotAnAction(s.into())),
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleAction::Drop => "drop",
            RuleAction::Reject => "reject",
        })
    }
}

/// One validated block rule. `protocol: None` blocks every protocol; `ports`
/// empty with a protocol blocks every port of it; `except_ports` (only
/// without `ports`) are left open, on `except_protocol` or on every
/// protocol the rule blocks that has ports (TCP and UDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRule {
    #[serde(serialize_with = "display")]
    pub cidr: Cidr,
    pub protocol: Option<Protocol>,
    pub ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_protocol: Option<Protocol>,
    pub action: RuleAction,
    /// Where the rule comes from: `default NAME`, `block[I]`, `--block[I]`.
    #[serde(serialize_with = "display")]
    pub origin: Origin,
    /// The built-in rule's name, for one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The built-in rule a file or flag rule with the same selector took the
    /// place of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    pub comment: Option<String>,
}

/// Where a block rule comes from, written out only when shown (a warning,
/// an error, `check-config --json`). Not a `String`: a file rule's origin
/// is its index, so building 10,000 rules allocates nothing per rule for
/// it. Each such allocation would be made while the parsed file's entries
/// are freed, into their holes all over the heap, and every one kept a
/// page of it resident (docs/benchmarks.md, the idle loader's RSS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A built-in rule, by name.
    Default(&'static str),
    /// The file's `block[I]`.
    File(usize),
    /// The command line's `--block[I]`, with the flag as written.
    Flag(usize, String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default(name) => write!(f, "default {name}"),
            Origin::File(i) => write!(f, "block[{i}]"),
            Origin::Flag(i, text) => write!(f, "--block[{i}] {text:?}"),
        }
    }
}

impl BlockRule {
    /// The ports this rule leaves open on `proto` (empty: none).
    pub fn excepted_on(&self, proto: Protocol) -> &[u16] {
        let applies = self.protocol.is_none_or(|p| p == proto)
            && self.except_protocol.is_none_or(|p| p == proto);
        if applies { &self.except_ports } else { &[] }
    }

    /// The selector, the exceptions and the action, as `check-config`,
    /// `status` and `explain` show a rule.
    pub fn describe(&self) -> String {
        let mut s = self.to_string();
        if self.protocol.is_none() {
            s.push_str(" (every protocol)");
        }
        if !self.except_ports.is_empty() {
            let ports: Vec<String> = self.except_ports.iter().map(u16::to_string).collect();
            s.push_str(" except ");
            if let Some(p) = self.except_protocol {
                s.push_str(&format!("{p}/"));
            }
            s.push_str(&ports.join(","));
        }
        s.push_str(&format!(", {}", self.action));
        s
    }
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

/// A port number from a file or flag (TOML integers are i64).
pub fn port(field: &str, p: i64) -> Result<u16, ConfigError> {
    if (1..=65535).contains(&p) {
        Ok(p as u16)
    } else {
        Err(ConfigError::new(
            field,
            format!("{p} is not a port: use 1-65535"),
        ))
    }
}

/// Everything the loader applies, validated ([`Policy::build`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub dry_run: bool,
    pub interfaces: Vec<String>,
    /// Follow the engine's bridge networks too (`attach.docker_networks`).
    pub docker_networks: bool,
    /// Where the cgroup hooks attach; empty: nowhere (`attach.cgroups`).
    pub cgroups: Vec<crate::policy::cgroups::CgroupSpec>,
    pub blocks: Vec<BlockRule>,
    pub smtp_ports: Vec<u16>,
    #[serde(serialize_with = "display")]
    pub smtp_rate: Rate,
    pub smtp_burst: u32,
    pub scope: Scope,
    /// What a connection attempt over the SMTP rate gets.
    pub smtp_over_limit: RuleAction,
    /// The budget of the replies rejecting rules send.
    #[serde(serialize_with = "display")]
    pub reject_rate: Rate,
    pub reject_burst: u32,
    /// Drop-event budget; `None` when events are disabled.
    #[serde(serialize_with = "display_opt")]
    pub event_rate: Option<Rate>,
    pub event_burst: u32,
    /// Attach to each container's veth too (`attach.endpoints`, default on).
    pub endpoints: bool,
    /// Attach to the decapsulating devices too (`attach.tunnels`, default
    /// on; endpoint::tunnel).
    pub tunnels: bool,
    /// `[[exception]]`s by container label, in file order.
    pub exceptions: Vec<Exception>,
}

/// A container label to match: `key` (any value) or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelMatch {
    pub key: String,
    pub value: Option<String>,
}

impl LabelMatch {
    pub fn matches(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        }
    }
}

impl fmt::Display for LabelMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// The SMTP budget an exception gives its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionSmtp {
    /// The host's (`[smtp]`), in its scope.
    Shared,
    /// A bucket of its own per container, at this rate and burst.
    Own {
        #[serde(serialize_with = "display")]
        rate: Rate,
        burst: u32,
    },
    Unlimited,
}

/// One validated `[[exception]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    #[serde(serialize_with = "display")]
    pub label: LabelMatch,
    /// The blocked prefixes it opens, as written; `None`: every one.
    pub destinations: Option<Vec<String>>,
    /// The block rules (ids: positions in `blocks`) it opens.
    pub rules: Vec<u16>,
    pub smtp: ExceptionSmtp,
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
        let host_bits = "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string();
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
}
