//! From a configuration file and the command line to a validated
//! [`Policy`]. Every setting is layered the same way, a flag over the file
//! over the default (`layered`), and every error names the field it came
//! from. Nothing here touches the kernel: every error is found before
//! anything is written.

use std::path::Path;

use egress_ebpf_common::{
    bucket::Gcra,
    config::MAX_SMTP_PORTS,
    events::{DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE_PER_SEC},
    maps::MAX_RULES,
    reply::{DEFAULT_REPLY_BURST, DEFAULT_REPLY_RATE_PER_SEC},
};

use crate::{
    error::ConfigError,
    policy::{
        apply::trie_entries,
        cgroups::validate_cgroups,
        defaults::{DEFAULT_ACTION, DEFAULT_BLOCKS, DefaultBlock},
        error::ValueError,
        flags::{Overrides, flag_text},
        glob::validate_patterns,
        schema::{
            BlockEntry, ConfigFile, DEFAULT_INTERFACES, DEFAULT_SMTP_BURST, DEFAULT_SMTP_PORTS,
            DEFAULT_SMTP_RATE, ExceptionEntry, UnblockEntry,
        },
        values::{
            BlockRule, Cidr, Exception, ExceptionSmtp, LabelMatch, Origin, Policy, Protocol, Rate,
            RuleAction, Scope, port,
        },
    },
};

/// The largest burst a bucket takes (SMTP and events).
pub const MAX_BURST: u32 = 1_000_000;

/// One setting from the places that can give it: the flag wins over the
/// file, the file over the default. Returns the value with the name of
/// the field it came from, for errors (a default is named by its file key).
fn layered<T>(
    flag: (&'static str, Option<T>),
    file: (&'static str, Option<T>),
    default: impl FnOnce() -> T,
) -> (&'static str, T) {
    match (flag, file) {
        ((name, Some(v)), _) => (name, v),
        (_, (name, Some(v))) => (name, v),
        (_, (name, None)) => (name, default()),
    }
}

/// The SHA-256 of a configuration file's bytes, in hex: what `sha256sum`
/// prints, so an operator can compare a host's file with what it enforces.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Policy {
    pub fn from_file(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load(path, overrides).map(|(policy, _)| policy)
    }

    /// [`from_file`](Self::from_file), also returning the SHA-256 of the
    /// bytes it was built from (read once: the hash is of what was parsed).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<(Self, String), ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let hash = sha256_hex(&bytes);
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        Ok((Self::from_toml(&text, overrides)?, hash))
    }

    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            // toml names the key and the line; keep its message whole.
            ConfigError::new("config", e.to_string().trim_end().to_string())
        })?;
        Self::build(file, overrides)
    }

    pub fn build(file: ConfigFile, o: &Overrides) -> Result<Self, ConfigError> {
        let attach = file.attach.unwrap_or_default();
        let (field, interfaces) = layered(
            (
                "--iface",
                (!o.interfaces.is_empty()).then(|| o.interfaces.clone()),
            ),
            ("attach.interfaces", attach.interfaces),
            || DEFAULT_INTERFACES.iter().map(|s| s.to_string()).collect(),
        );
        let interfaces = validate_patterns(field, interfaces)?;
        let endpoints = !o.no_endpoints && attach.endpoints.unwrap_or(true);
        let tunnels = !o.no_tunnels && attach.tunnels.unwrap_or(true);
        let docker_networks = !o.no_docker_networks && attach.docker_networks.unwrap_or(true);
        let (field, cgroups) = layered(
            (
                "--cgroup",
                (!o.cgroups.is_empty()).then(|| o.cgroups.clone()),
            ),
            ("attach.cgroups", attach.cgroups),
            || vec!["auto".to_string()],
        );
        let cgroups = validate_cgroups(field, cgroups)?;

        let blocks = validate_blocks(
            file.defaults.unwrap_or(true),
            file.unblock.unwrap_or_default(),
            file.block,
            &o.extra_blocks,
        )?;

        let smtp = file.smtp.unwrap_or_default();
        let (field, ports) = layered(
            ("--smtp-ports", o.smtp_ports.clone()),
            ("smtp.ports", smtp.ports),
            || DEFAULT_SMTP_PORTS.iter().map(|&p| p as i64).collect(),
        );
        let smtp_ports = validate_smtp_ports(field, &ports)?;
        let (field, rate) = layered(
            ("--smtp-rate", o.smtp_rate.clone()),
            ("smtp.rate", smtp.rate),
            || DEFAULT_SMTP_RATE.to_string(),
        );
        let smtp_rate = validate_rate(field, &rate)?;
        let (field, burst) = layered(
            ("--smtp-burst", o.smtp_burst),
            ("smtp.burst", smtp.burst),
            || DEFAULT_SMTP_BURST as i64,
        );
        let smtp_burst = validate_burst(field, burst, Some(smtp_rate))?;
        let (field, scope) = layered(
            ("--scope", o.scope.clone()),
            ("smtp.scope", smtp.scope),
            || "global".to_string(),
        );
        let scope: Scope = scope.parse().map_err(|e| ConfigError::new(field, e))?;
        let smtp_over_limit: RuleAction = match smtp.over_limit {
            None => RuleAction::Drop,
            Some(a) => a
                .parse()
                .map_err(|e| ConfigError::new("smtp.over_limit", e))?,
        };

        // No flags for the reply budget: the file or the default.
        let reject = file.reject.unwrap_or_default();
        let (field, r) = layered(("reject.rate", None), ("reject.rate", reject.rate), || {
            format!("{DEFAULT_REPLY_RATE_PER_SEC}/second")
        });
        let reject_rate = validate_rate(field, &r)?;
        let (field, b) = layered(
            ("reject.burst", None),
            ("reject.burst", reject.burst),
            || DEFAULT_REPLY_BURST as i64,
        );
        let reject_burst = validate_burst(field, b, Some(reject_rate))?;

        // No flags for events: the file or the default.
        let events = file.events.unwrap_or_default();
        let event_rate = if events.enabled.unwrap_or(true) {
            let (field, r) = layered(("events.rate", None), ("events.rate", events.rate), || {
                format!("{DEFAULT_EVENT_RATE_PER_SEC}/second")
            });
            Some(validate_rate(field, &r)?)
        } else {
            None
        };
        let (field, event_burst) = layered(
            ("events.burst", None),
            ("events.burst", events.burst),
            || DEFAULT_EVENT_BURST as i64,
        );
        let event_burst = validate_burst(field, event_burst, event_rate)?;

        let exceptions = validate_exceptions(file.exception, &blocks, smtp_burst)?;

        let policy = Policy {
            dry_run: o.dry_run || file.dry_run.unwrap_or(false),
            interfaces,
            docker_networks,
            cgroups,
            blocks,
            smtp_ports,
            smtp_rate,
            smtp_burst,
            scope,
            smtp_over_limit,
            reject_rate,
            reject_burst,
            event_rate,
            event_burst,
            endpoints,
            tunnels,
            exceptions,
        };
        // The merged trie entries have a capacity per prefix; check it here so
        // the error names the configuration, not a map.
        trie_entries(&policy).map_err(|e| ConfigError::new("block", e))?;
        Ok(policy)
    }
}

/// A built-in rule as the entry a file would write for it.
fn default_entry(d: &DefaultBlock) -> BlockEntry {
    let ports = |l: &[u16]| (!l.is_empty()).then(|| l.iter().map(|&p| p as i64).collect());
    BlockEntry {
        cidr: d.cidr.to_string(),
        protocol: d.protocol.map(str::to_string),
        ports: ports(d.ports),
        except_ports: ports(d.except_ports),
        except_protocol: None,
        action: Some(DEFAULT_ACTION.to_string()),
        comment: Some(d.comment.to_string()),
    }
}

/// The built-in rules (unless `defaults = false`), less those `[[unblock]]`
/// removes, then the file's `[[block]]` entries, then the `--block` flags:
/// both add to the list. A file or flag rule with the selector (CIDR,
/// protocol, ports) of a built-in one takes its place (a file written when
/// a `[[block]]` list replaced the defaults repeats them).
fn validate_blocks(
    defaults: bool,
    unblock: Vec<UnblockEntry>,
    file: Option<Vec<BlockEntry>>,
    flags: &[BlockEntry],
) -> Result<Vec<BlockRule>, ConfigError> {
    let mut keep = vec![defaults; DEFAULT_BLOCKS.len()];
    for (i, u) in unblock.iter().enumerate() {
        let field = format!("unblock[{i}]");
        if !defaults {
            return Err(ConfigError::new(
                field,
                "defaults = false already removes every built-in rule",
            ));
        }
        let hits: Vec<usize> = match (&u.name, &u.cidr) {
            (Some(name), None) => {
                let hit = DEFAULT_BLOCKS.iter().position(|d| d.name == name);
                let Some(hit) = hit else {
                    let names: Vec<&str> = DEFAULT_BLOCKS.iter().map(|d| d.name).collect();
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!(
                            "{name:?} is not a built-in rule: use one of {}",
                            names.join(", ")
                        ),
                    ));
                };
                vec![hit]
            }
            (None, Some(cidr)) => {
                let c: Cidr = cidr
                    .parse()
                    .map_err(|e| ConfigError::new(format!("{field}.cidr"), e))?;
                let hits: Vec<usize> = DEFAULT_BLOCKS
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.cidr.parse::<Cidr>().is_ok_and(|dc| dc == c))
                    .map(|(i, _)| i)
                    .collect();
                if hits.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.cidr"),
                        format!(
                            "{c} is not the CIDR of a built-in rule (check-config --defaults lists them)"
                        ),
                    ));
                }
                hits
            }
            _ => {
                return Err(ConfigError::new(
                    field,
                    "name exactly one of name = \"...\" (a built-in rule) or cidr = \"...\"",
                ));
            }
        };
        for h in hits {
            if !keep[h] {
                return Err(ConfigError::new(
                    field,
                    format!("{} is removed twice", DEFAULT_BLOCKS[h].name),
                ));
            }
            keep[h] = false;
        }
    }
    let file = match file {
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                "block",
                "empty list: remove the key (the built-in rules apply either way)",
            ));
        }
        Some(list) => list,
        None => Vec::new(),
    };
    // The rules live as long as the policy: one allocation of the final
    // size, not a doubling Vec (16,384 slots for 10,000 rules).
    let mut blocks: Vec<BlockRule> =
        Vec::with_capacity(keep.iter().filter(|k| **k).count() + file.len() + flags.len());
    let mut fields: Vec<Origin> = Vec::with_capacity(blocks.capacity());
    for (d, _) in DEFAULT_BLOCKS.iter().zip(&keep).filter(|(_, k)| **k) {
        let origin = Origin::Default(d.name);
        let mut rule = validate_block(origin.clone(), &default_entry(d))?;
        rule.name = Some(d.name.to_string());
        blocks.push(rule);
        fields.push(origin);
    }
    let defaults_end = blocks.len();
    let added = file
        .into_iter()
        .enumerate()
        .map(|(i, b)| (Origin::File(i), b))
        .chain(
            flags
                .iter()
                .enumerate()
                .map(|(i, b)| (Origin::Flag(i, flag_text(b)), b.clone())),
        );
    for (field, e) in added {
        let mut rule = validate_block(field.clone(), &e)?;
        let same = |b: &BlockRule| {
            (b.cidr, b.protocol, &b.ports) == (rule.cidr, rule.protocol, &rule.ports)
        };
        if let Some(i) = blocks[..defaults_end]
            .iter()
            .position(|b| b.replaces.is_none() && b.name.is_some() && same(b))
        {
            rule.replaces = blocks[i].name.clone();
            blocks[i] = rule;
            fields[i] = field;
            continue;
        }
        if let Some(j) = blocks.iter().position(same) {
            return Err(ConfigError::new(
                field.to_string(),
                format!("duplicates {} ({rule})", fields[j]),
            ));
        }
        blocks.push(rule);
        fields.push(field);
    }
    if blocks.len() > MAX_RULES as usize {
        return Err(ConfigError::new(
            "block",
            format!("{} rules; at most {MAX_RULES} are supported", blocks.len()),
        ));
    }
    Ok(blocks)
}

fn validate_smtp_ports(field: &str, ports: &[i64]) -> Result<Vec<u16>, ConfigError> {
    if ports.is_empty() {
        return Err(ConfigError::new(
            field,
            "empty list: name at least one port (to rate-limit nothing, leave out nothing: use dry_run to observe)",
        ));
    }
    if ports.len() > MAX_SMTP_PORTS {
        return Err(ConfigError::new(
            field,
            format!("{} ports; at most {MAX_SMTP_PORTS}", ports.len()),
        ));
    }
    let mut out = Vec::new();
    for (i, &p) in ports.iter().enumerate() {
        let p = port(&format!("{field}[{i}]"), p)?;
        if out.contains(&p) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("port {p} is listed twice"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

fn validate_rate(field: &str, text: &str) -> Result<Rate, ConfigError> {
    text.parse().map_err(|e| ConfigError::new(field, e))
}

/// A bucket's burst, checked against its rate: the burst window must fit
/// the bucket's clock.
fn validate_burst(field: &str, burst: i64, rate: Option<Rate>) -> Result<u32, ConfigError> {
    if !(1..=MAX_BURST as i64).contains(&burst) {
        return Err(ConfigError::new(
            field,
            format!("{burst} is not a burst: use 1-{MAX_BURST}"),
        ));
    }
    if let Some(r) = rate
        && Gcra::new(r.count, r.period.nanos(), burst as u64).is_none()
    {
        return Err(ConfigError::new(
            field,
            format!("burst {burst} at {r} overflows the bucket's clock"),
        ));
    }
    Ok(burst as u32)
}

/// Most `[[exception]]` entries; an endpoint's matches are kept as a bit set.
pub const MAX_EXCEPTIONS: usize = 32;

/// `[[exception]]`s: a label to match, destinations that are blocked
/// prefixes (each names the `[[block]]` rules with that very CIDR), and
/// the SMTP budget of the containers that carry the label.
fn validate_exceptions(
    entries: Option<Vec<ExceptionEntry>>,
    blocks: &[BlockRule],
    default_burst: u32,
) -> Result<Vec<Exception>, ConfigError> {
    let entries = entries.unwrap_or_default();
    if entries.len() > MAX_EXCEPTIONS {
        return Err(ConfigError::new(
            "exception",
            format!("{} exceptions; at most {MAX_EXCEPTIONS}", entries.len()),
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let field = format!("exception[{i}]");
        let Some(text) = &e.label else {
            return Err(ConfigError::new(
                format!("{field}.label"),
                "missing: name a container label, \"key\" or \"key=value\"",
            ));
        };
        let label = parse_label(text).map_err(|m| ConfigError::new(format!("{field}.label"), m))?;
        let (destinations, rules) = match &e.destinations {
            None => (None, (0..blocks.len() as u16).collect()),
            Some(list) if list.is_empty() => {
                return Err(ConfigError::new(
                    format!("{field}.destinations"),
                    "empty list: leave the key out to open every blocked destination",
                ));
            }
            Some(list) => {
                let mut rules = Vec::new();
                for (j, d) in list.iter().enumerate() {
                    let f = format!("{field}.destinations[{j}]");
                    let cidr: Cidr = d.parse().map_err(|m| ConfigError::new(&f, m))?;
                    let ids: Vec<u16> = blocks
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| b.cidr == cidr)
                        .map(|(id, _)| id as u16)
                        .collect();
                    if ids.is_empty() {
                        let blocked: Vec<String> =
                            blocks.iter().map(|b| b.cidr.to_string()).collect();
                        return Err(ConfigError::new(
                            &f,
                            format!(
                                "{cidr} is not a blocked prefix (an exception opens blocked destinations; blocked: {})",
                                blocked.join(", ")
                            ),
                        ));
                    }
                    for id in ids {
                        if !rules.contains(&id) {
                            rules.push(id);
                        }
                    }
                }
                (Some(list.clone()), rules)
            }
        };
        let smtp = match (&e.smtp, &e.smtp_rate, e.smtp_burst) {
            (None, None, None) => ExceptionSmtp::Shared,
            (Some(s), None, None) if s == "unlimited" => ExceptionSmtp::Unlimited,
            (Some(s), None, None) => {
                return Err(ConfigError::new(
                    format!("{field}.smtp"),
                    format!(
                        "{s:?}: the only value is \"unlimited\" (or set smtp_rate and smtp_burst)"
                    ),
                ));
            }
            (Some(_), _, _) => {
                return Err(ConfigError::new(
                    format!("{field}.smtp"),
                    "\"unlimited\" and smtp_rate/smtp_burst exclude each other",
                ));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{field}.smtp_burst"),
                    "needs smtp_rate (the budget's rate)",
                ));
            }
            (None, Some(r), burst) => {
                let rf = format!("{field}.smtp_rate");
                let rate = validate_rate(&rf, r)?;
                let bf = format!("{field}.smtp_burst");
                let burst = validate_burst(&bf, burst.unwrap_or(default_burst as i64), Some(rate))?;
                ExceptionSmtp::Own { rate, burst }
            }
        };
        out.push(Exception {
            label,
            destinations,
            rules,
            smtp,
        });
    }
    Ok(out)
}

/// `key` or `key=value`, as `docker run --label` takes it.
fn parse_label(text: &str) -> Result<LabelMatch, ValueError> {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (text, None),
    };
    if key.trim().is_empty() || key.trim() != key {
        return Err(ValueError::LabelKey(text.into()));
    }
    Ok(LabelMatch {
        key: key.to_string(),
        value,
    })
}

fn validate_block(origin: Origin, e: &BlockEntry) -> Result<BlockRule, ConfigError> {
    // Written out only on the error paths.
    let field = &origin;
    let cidr: Cidr = e
        .cidr
        .parse()
        .map_err(|p| ConfigError::new(format!("{field}.cidr"), p))?;
    let protocol = match &e.protocol {
        None => None,
        Some(p) => Some(
            p.parse::<Protocol>()
                .map_err(|m| ConfigError::new(format!("{field}.protocol"), m))?,
        ),
    };
    let mut ports = Vec::new();
    if let Some(list) = &e.ports {
        if protocol.is_none() {
            return Err(ConfigError::new(
                format!("{field}.ports"),
                "ports need a protocol: add protocol = \"tcp\" or \"udp\"",
            ));
        }
        if list.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.ports"),
                "empty list: leave the key out to block every port",
            ));
        }
        for (i, &p) in list.iter().enumerate() {
            let p = port(&format!("{field}.ports[{i}]"), p)?;
            if ports.contains(&p) {
                return Err(ConfigError::new(
                    format!("{field}.ports[{i}]"),
                    format!("port {p} is listed twice"),
                ));
            }
            ports.push(p);
        }
    }
    let except_protocol = match &e.except_protocol {
        None => None,
        Some(p) => Some(
            p.parse::<Protocol>()
                .map_err(|m| ConfigError::new(format!("{field}.except_protocol"), m))?,
        ),
    };
    let mut except_ports = Vec::new();
    match &e.except_ports {
        None if except_protocol.is_some() => {
            return Err(ConfigError::new(
                format!("{field}.except_protocol"),
                "needs except_ports: the ports to leave open on that protocol",
            ));
        }
        None => {}
        Some(_) if !ports.is_empty() => {
            return Err(ConfigError::new(
                format!("{field}.except_ports"),
                "a rule with ports blocks only those: leave out either ports or except_ports",
            ));
        }
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                format!("{field}.except_ports"),
                "empty list: leave the key out to block every port",
            ));
        }
        Some(list) => {
            if let (Some(p), Some(x)) = (protocol, except_protocol)
                && p != x
            {
                return Err(ConfigError::new(
                    format!("{field}.except_protocol"),
                    format!("the rule blocks {p} only: an exception on {x} would open nothing"),
                ));
            }
            for (i, &p) in list.iter().enumerate() {
                let f = format!("{field}.except_ports[{i}]");
                let p = port(&f, p)?;
                if except_ports.contains(&p) {
                    return Err(ConfigError::new(f, format!("port {p} is listed twice")));
                }
                except_ports.push(p);
            }
        }
    }
    let action = match &e.action {
        None => RuleAction::Drop,
        Some(a) => a
            .parse()
            .map_err(|m| ConfigError::new(format!("{field}.action"), m))?,
    };
    Ok(BlockRule {
        cidr,
        protocol,
        ports,
        except_ports,
        except_protocol,
        action,
        origin,
        name: None,
        replaces: None,
        comment: e.comment.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        flags::parse_block_flag,
        schema::{commented_default_config, default_config_toml},
    };

    #[test]
    fn the_commented_defaults_give_the_default_policy_and_show_every_setting() {
        let text = commented_default_config();
        let commented = Policy::from_toml(&text, &Overrides::default()).unwrap();
        let implicit = Policy::from_toml("", &Overrides::default()).unwrap();
        assert_eq!(commented, implicit);
        // Below the header, the defaults line by line, each commented out.
        let (_, body) = text.split_once("\n\n").unwrap();
        // Comments stay as they are; every setting is commented out.
        let written = default_config_toml();
        assert_eq!(body.lines().count(), written.lines().count());
        for (c, w) in body.lines().zip(written.lines()) {
            match w {
                "" => assert_eq!(c, ""),
                w if w.starts_with('#') => assert_eq!(c, w),
                w => assert_eq!(c, format!("# {w}")),
            }
        }
    }

    #[test]
    fn the_hash_is_sha256sums() {
        // `printf 'abc' | sha256sum`
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_flag_beats_the_file_beats_the_default() {
        assert_eq!(layered(("f", Some(1)), ("k", Some(2)), || 3), ("f", 1));
        assert_eq!(layered(("f", None), ("k", Some(2)), || 3), ("k", 2));
        assert_eq!(layered(("f", None::<i32>), ("k", None), || 3), ("k", 3));
        // Every layered setting: the error names where the bad value came
        // from, and a good flag hides a bad file value.
        let file = "[attach]\ninterfaces = [\"a/b\"]\n[smtp]\nports = [0]\nrate = \"x\"\nburst = 0\nscope = \"x\"\n";
        let good = Overrides {
            interfaces: vec!["cni0".into()],
            smtp_ports: Some(vec![25]),
            smtp_rate: Some("1/second".into()),
            smtp_burst: Some(3),
            scope: Some("per-source".into()),
            ..Default::default()
        };
        let p = Policy::from_toml(file, &good).unwrap();
        assert_eq!(
            (
                p.interfaces.as_slice(),
                p.smtp_ports.as_slice(),
                p.smtp_burst
            ),
            (&["cni0".to_string()][..], &[25u16][..], 3)
        );
        for (o, field) in [
            (
                Overrides {
                    interfaces: vec!["a/b".into()],
                    ..good.clone()
                },
                "--iface[0]",
            ),
            (
                Overrides {
                    interfaces: vec![],
                    ..good.clone()
                },
                "attach.interfaces[0]",
            ),
            (
                Overrides {
                    smtp_ports: Some(vec![0]),
                    ..good.clone()
                },
                "--smtp-ports[0]",
            ),
            (
                Overrides {
                    smtp_ports: None,
                    ..good.clone()
                },
                "smtp.ports[0]",
            ),
            (
                Overrides {
                    smtp_rate: Some("x".into()),
                    ..good.clone()
                },
                "--smtp-rate",
            ),
            (
                Overrides {
                    smtp_rate: None,
                    ..good.clone()
                },
                "smtp.rate",
            ),
            (
                Overrides {
                    smtp_burst: Some(0),
                    ..good.clone()
                },
                "--smtp-burst",
            ),
            (
                Overrides {
                    smtp_burst: None,
                    ..good.clone()
                },
                "smtp.burst",
            ),
            (
                Overrides {
                    scope: Some("x".into()),
                    ..good.clone()
                },
                "--scope",
            ),
            (
                Overrides {
                    scope: None,
                    ..good.clone()
                },
                "smtp.scope",
            ),
        ] {
            assert_eq!(Policy::from_toml(file, &o).unwrap_err().field, field);
        }
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
            no_endpoints: true,
            no_tunnels: true,
            ..Default::default()
        };
        let p = Policy::from_toml(
            "[attach]\nendpoints = true\ntunnels = true\n[smtp]\nports = [587]\nrate = \"9/hour\"\nburst = 9\n",
            &o,
        )
        .unwrap();
        assert!(!p.endpoints, "--no-endpoints beats the file");
        assert!(!p.tunnels, "--no-tunnels beats the file");
        assert_eq!(p.interfaces, ["cni0"]);
        assert_eq!(
            p.blocks.len(),
            DEFAULT_BLOCKS.len() + 1,
            "--block adds to the list"
        );
        assert_eq!(
            p.blocks.last().unwrap().origin.to_string(),
            "--block[0] \"10.0.0.0/8\""
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
    fn every_rule_names_where_it_comes_from() {
        let p = Policy::from_toml(
            "[[block]]\ncidr = \"10.1.0.0/16\"\n[[block]]\ncidr = \"10.2.0.0/16\"\n",
            &Overrides::default(),
        )
        .unwrap();
        let origins: Vec<String> = p.blocks.iter().map(|b| b.origin.to_string()).collect();
        let n = DEFAULT_BLOCKS.len();
        assert_eq!(
            origins[..n],
            DEFAULT_BLOCKS
                .iter()
                .map(|d| format!("default {}", d.name))
                .collect::<Vec<_>>()
        );
        assert_eq!(origins[n..], ["block[0]", "block[1]"]);
    }

    #[test]
    fn exceptions_open_blocked_prefixes_only() {
        let p = Policy::from_toml(
            "[[exception]]\nlabel = \"egress-filter.allow-metadata\"\ndestinations = [\"169.254.169.254/32\"]\n\
             [[exception]]\nlabel = \"role=relay\"\nsmtp_rate = \"60/minute\"\nsmtp_burst = 20\n\
             [[exception]]\nlabel = \"x\"\nsmtp = \"unlimited\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(p.exceptions.len(), 3);
        assert_eq!(p.exceptions[0].rules, [0]);
        assert_eq!(
            p.exceptions[0].label.to_string(),
            "egress-filter.allow-metadata"
        );
        assert_eq!(
            p.exceptions[1].rules.len(),
            p.blocks.len(),
            "absent: every blocked prefix"
        );
        assert_eq!(p.exceptions[1].label.value.as_deref(), Some("relay"));
        assert!(matches!(
            p.exceptions[1].smtp,
            ExceptionSmtp::Own { burst: 20, .. }
        ));
        assert_eq!(p.exceptions[2].smtp, ExceptionSmtp::Unlimited);
        for (toml, field) in [
            (
                "[[exception]]\nlabel = \"a\"\ndestinations = [\"10.0.0.0/8\"]\n",
                "exception[0].destinations[0]",
            ),
            (
                "[[exception]]\nlabel = \"a\"\ndestinations = [\"169.254.169.254/33\"]\n",
                "exception[0].destinations[0]",
            ),
            (
                "[[exception]]\nlabel = \"a\"\ndestinations = []\n",
                "exception[0].destinations",
            ),
            (
                "[[exception]]\ndestinations = [\"169.254.169.254/32\"]\n",
                "exception[0].label",
            ),
            ("[[exception]]\nlabel = \"=v\"\n", "exception[0].label"),
            (
                "[[exception]]\nlabel = \"a\"\nsmtp = \"lots\"\n",
                "exception[0].smtp",
            ),
            (
                "[[exception]]\nlabel = \"a\"\nsmtp = \"unlimited\"\nsmtp_burst = 2\n",
                "exception[0].smtp",
            ),
            (
                "[[exception]]\nlabel = \"a\"\nsmtp_burst = 2\n",
                "exception[0].smtp_burst",
            ),
            (
                "[[exception]]\nlabel = \"a\"\nsmtp_rate = \"x\"\n",
                "exception[0].smtp_rate",
            ),
            (
                "[[exception]]\nlabel = \"a\"\nsmtp_rate = \"1/s\"\nsmtp_burst = 0\n",
                "exception[0].smtp_burst",
            ),
            ("[[exception]]\nlabel = \"a\"\nport = 1\n", "config"),
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

    #[test]
    fn a_block_adds_to_the_defaults_and_the_defaults_stay() {
        let implicit = Policy::from_toml("", &Overrides::default()).unwrap();
        let p =
            Policy::from_toml("[[block]]\ncidr = \"10.0.0.0/8\"\n", &Overrides::default()).unwrap();
        assert_eq!(p.blocks.len(), DEFAULT_BLOCKS.len() + 1);
        assert_eq!(p.blocks[..DEFAULT_BLOCKS.len()], implicit.blocks[..]);
        assert_eq!(p.blocks.last().unwrap().action, RuleAction::Drop);
        assert!(crate::policy::check::open_metadata(&p).is_empty());
        // Every built-in rule rejects; the metadata address keeps DNS open.
        assert!(
            implicit
                .blocks
                .iter()
                .all(|b| b.action == RuleAction::Reject)
        );
        assert_eq!(implicit.blocks[0].except_ports, [53]);
    }

    #[test]
    fn a_file_written_for_the_old_defaults_replaces_them_and_says_so() {
        // What the shipped ConfigMap used to copy out.
        let old = "[[block]]\ncidr = \"169.254.169.254/32\"\n[[block]]\ncidr = \"168.63.129.16/32\"\nprotocol = \"tcp\"\nports = [80, 32526]\n";
        let p = Policy::from_toml(old, &Overrides::default()).unwrap();
        assert_eq!(p.blocks.len(), DEFAULT_BLOCKS.len());
        assert_eq!(p.blocks[0].replaces.as_deref(), Some("metadata"));
        assert_eq!(p.blocks[0].action, RuleAction::Drop);
        assert!(p.blocks[0].except_ports.is_empty());
        let w = crate::policy::check::warnings(&p);
        assert!(
            w.iter()
                .any(|w| w.contains("\"metadata\"") && w.contains("block[0]")),
            "{w:?}"
        );
        // Twice the same selector is still a duplicate.
        let twice =
            "[[block]]\ncidr = \"169.254.169.254/32\"\n[[block]]\ncidr = \"169.254.169.254/32\"\n";
        let e = Policy::from_toml(twice, &Overrides::default()).unwrap_err();
        assert_eq!(e.field, "block[1]");
    }

    #[test]
    fn defaults_go_only_on_purpose() {
        let none = Policy::from_toml("defaults = false\n", &Overrides::default()).unwrap();
        assert!(none.blocks.is_empty());
        let open = crate::policy::check::open_metadata(&none);
        assert_eq!(open.len(), crate::policy::defaults::KNOWN_METADATA.len());
        assert!(
            crate::policy::check::warnings(&none)
                .iter()
                .any(|w| w.contains("169.254.169.254:80/tcp"))
        );
        let p = Policy::from_toml(
            "[[unblock]]\nname = \"tencent\"\n[[unblock]]\ncidr = \"fd00:ec2::23/128\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(p.blocks.len(), DEFAULT_BLOCKS.len() - 2);
        let open = crate::policy::check::open_metadata(&p);
        assert_eq!(open.len(), 2, "{open:?}");
        assert!(open[0].contains("169.254.0.23") || open[1].contains("169.254.0.23"));
    }

    #[test]
    fn errors_name_the_field() {
        for (toml, names) in crate::policy::refused::REFUSED_FILES {
            let e = Policy::from_toml(toml, &Overrides::default()).unwrap_err();
            // The TOML reader's own refusals (wrong types, unknown keys,
            // syntax) are the file's as a whole, and say what in words.
            let named = match e.field.as_str() {
                "config" => *names == "config" || e.problem.contains(names),
                field => field == *names,
            };
            assert!(named, "{toml:?} must name {names:?}: {e}");
        }
    }
}
