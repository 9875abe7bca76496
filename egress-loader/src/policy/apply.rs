//! From a validated [`Policy`] to map contents, and writing them so that no
//! packet ever sees a partial policy: trie entries are added before stale
//! ones go (the set only grows during the switch), and the config is
//! double-buffered behind one flip of `ACTIVE_CONFIG`.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use egress_ebpf_common::{
    config::{MAX_SMTP_PORTS, PolicyConfig, SCOPE_GLOBAL, SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE},
    counters::Counter,
    maps::{ACTIVE_CONFIG, BLOCKED_V4, BLOCKED_V6, CONFIG_SLOTS, POLICY_CONFIG, RULE_COUNTERS},
    rules::{ANY_PORT, BlockRule as TrieValue, MAX_PORT_MATCHES, NO_RULE, PortMatch},
};

use crate::{
    error::{ConfigError, Error},
    kernel::maps::PolicyMaps,
    policy::values::{Cidr, Policy, Scope},
};

pub type V4Entries = BTreeMap<(u32, [u8; 4]), TrieValue>;
pub type V6Entries = BTreeMap<(u32, [u8; 16]), TrieValue>;

/// The trie contents for a policy: one entry per distinct prefix, holding the
/// union of every rule whose CIDR contains that prefix (a trie lookup returns
/// only the longest match, so a shorter rule must be repeated in longer ones).
pub fn trie_entries(policy: &Policy) -> Result<(V4Entries, V6Entries), String> {
    // Rules indexed by (family, prefix length, masked address) for containment lookups.
    let mut by_prefix: HashMap<(bool, u8, Vec<u8>), Vec<usize>> = HashMap::new();
    let mut lens: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (id, r) in policy.blocks.iter().enumerate() {
        let v4 = r.cidr.addr.is_ipv4();
        by_prefix
            .entry((v4, r.cidr.prefix_len, r.cidr.bytes()))
            .or_default()
            .push(id);
        let l = &mut lens[v4 as usize];
        if !l.contains(&r.cidr.prefix_len) {
            l.push(r.cidr.prefix_len);
        }
    }
    let mut v4 = V4Entries::new();
    let mut v6 = V6Entries::new();
    let distinct: HashSet<Cidr> = policy.blocks.iter().map(|r| r.cidr).collect();
    for p in distinct {
        let is_v4 = p.addr.is_ipv4();
        // Containing rules, most specific first.
        let mut containing: Vec<usize> = Vec::new();
        let mut plens: Vec<u8> = lens[is_v4 as usize]
            .iter()
            .copied()
            .filter(|&l| l <= p.prefix_len)
            .collect();
        plens.sort_unstable_by(|a, b| b.cmp(a));
        for l in plens {
            if let Some(ids) = by_prefix.get(&(is_v4, l, Cidr::masked_bytes(&p.addr, l))) {
                containing.extend(ids);
            }
        }
        let value = merge(policy, &containing).map_err(|e| format!("{p}: {e}"))?;
        let bytes = p.bytes();
        if is_v4 {
            v4.insert(
                (p.prefix_len as u32, bytes.try_into().expect("4 bytes")),
                value,
            );
        } else {
            v6.insert(
                (p.prefix_len as u32, bytes.try_into().expect("16 bytes")),
                value,
            );
        }
    }
    Ok((v4, v6))
}

fn merge(policy: &Policy, rule_ids: &[usize]) -> Result<TrieValue, String> {
    let mut v = TrieValue::empty();
    let mut matches: Vec<PortMatch> = Vec::new();
    for &id in rule_ids {
        let r = &policy.blocks[id];
        let Some(proto) = r.protocol else {
            if v.all_rule_id == NO_RULE {
                v.all_rule_id = id as u16;
            }
            continue;
        };
        let ports: Vec<u16> = if r.ports.is_empty() {
            vec![ANY_PORT]
        } else {
            r.ports.clone()
        };
        for port in ports {
            if !matches
                .iter()
                .any(|m| m.proto == proto.number() && m.port == port)
            {
                matches.push(PortMatch {
                    port,
                    proto: proto.number(),
                    _pad: 0,
                    rule_id: id as u16,
                });
            }
        }
    }
    if v.all_rule_id == NO_RULE {
        if matches.len() > MAX_PORT_MATCHES {
            return Err(format!(
                "{} protocol/port pairs apply to this prefix; at most {MAX_PORT_MATCHES}",
                matches.len()
            ));
        }
        v.match_count = matches.len() as u16;
        v.matches[..matches.len()].copy_from_slice(&matches);
    }
    Ok(v)
}

pub fn policy_config(policy: &Policy) -> PolicyConfig {
    let g = policy.gcra();
    let mut c = PolicyConfig::empty();
    c.emission_ns = g.emission_ns;
    c.burst_window_ns = g.burst_window_ns;
    debug_assert!(policy.smtp_ports.len() <= MAX_SMTP_PORTS);
    c.smtp_ports[..policy.smtp_ports.len()].copy_from_slice(&policy.smtp_ports);
    c.smtp_port_count = policy.smtp_ports.len() as u8;
    c.dry_run = policy.dry_run as u8;
    c.scope = match policy.scope {
        Scope::Global => SCOPE_GLOBAL,
        Scope::PerSource => SCOPE_PER_SOURCE,
        Scope::PerContainer => SCOPE_PER_CONTAINER,
    };
    if let Some(r) = policy.event_rate
        && let Some(g) = egress_ebpf_common::bucket::Gcra::new(
            r.count,
            r.period.nanos(),
            policy.event_burst as u64,
        )
    {
        c.event_emission_ns = g.emission_ns;
        c.event_burst_window_ns = g.burst_window_ns;
    }
    c.valid = 1;
    c
}

/// What [`apply`] changed.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub trie_entries: usize,
    pub removed: usize,
    pub rules_changed: bool,
}

/// [`trie_entries`] for a policy that [`Policy::build`] validated (it
/// checks the same capacity): an error here is still invalid input.
fn validated_trie_entries(policy: &Policy) -> Result<(V4Entries, V6Entries), Error> {
    trie_entries(policy).map_err(|e| ConfigError::new("block", e).into())
}

/// Writes the policy into the maps. Validation happened before; a failure
/// here is a kernel error, and the old policy's entries are all still there.
pub fn apply(maps: &mut PolicyMaps, policy: &Policy) -> Result<ApplyReport, Error> {
    let (v4, v6) = validated_trie_entries(policy)?;
    let mut report = ApplyReport {
        trie_entries: v4.len() + v6.len(),
        ..Default::default()
    };
    report.rules_changed |= sync_trie(BLOCKED_V4, &mut maps.blocked_v4, &v4, &mut report.removed)?;
    report.rules_changed |= sync_trie(BLOCKED_V6, &mut maps.blocked_v6, &v6, &mut report.removed)?;

    let config = policy_config(policy);
    let active = maps
        .active_config
        .get(&0, 0)
        .map_err(|e| Error::map(ACTIVE_CONFIG, e))?;
    let current = maps
        .policy_config
        .get(&active, 0)
        .map_err(|e| Error::map(POLICY_CONFIG, e))?;
    if current != config {
        let next = (active + 1) % CONFIG_SLOTS;
        maps.policy_config
            .set(next, config, 0)
            .map_err(|e| Error::map(POLICY_CONFIG, e))?;
        maps.active_config
            .set(0, next, 0)
            .map_err(|e| Error::map(ACTIVE_CONFIG, e))?;
    }
    if report.rules_changed {
        // Rule ids are positions in the rule list: once the list changes,
        // the old per-rule counts would be credited to other rules.
        reset_rule_counters(&mut maps.rule_counters)?;
    }
    Ok(report)
}

fn sync_trie<const N: usize>(
    name: &'static str,
    trie: &mut LpmTrie<MapData, [u8; N], TrieValue>,
    want: &BTreeMap<(u32, [u8; N]), TrieValue>,
    removed: &mut usize,
) -> Result<bool, Error>
where
    [u8; N]: aya::Pod,
{
    let mut have: BTreeMap<(u32, [u8; N]), TrieValue> = BTreeMap::new();
    for item in trie.iter() {
        let (k, v) = item.map_err(|e| Error::map(name, e))?;
        have.insert((k.prefix_len(), k.data()), v);
    }
    let mut changed = false;
    for (&(len, addr), value) in want {
        if have.get(&(len, addr)) != Some(value) {
            trie.insert(&Key::new(len, addr), value, 0)
                .map_err(|e| Error::map(name, e))?;
            changed = true;
        }
    }
    for &(len, addr) in have.keys() {
        if !want.contains_key(&(len, addr)) {
            trie.remove(&Key::new(len, addr))
                .map_err(|e| Error::map(name, e))?;
            *removed += 1;
            changed = true;
        }
    }
    Ok(changed)
}

fn reset_rule_counters(map: &mut PerCpuArray<MapData, Counter>) -> Result<(), Error> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Io(e))?;
    for i in 0..map.len() {
        let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(Error::Io)?;
        map.set(i, zeros, 0)
            .map_err(|e| Error::map(RULE_COUNTERS, e))?;
    }
    Ok(())
}

/// Whether the maps hold exactly `policy` (for `reload` to confirm it took).
pub fn in_force(maps: &PolicyMaps, policy: &Policy) -> Result<bool, Error> {
    let (v4, v6) = validated_trie_entries(policy)?;
    let mut have4 = V4Entries::new();
    for item in maps.blocked_v4.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V4, e))?;
        have4.insert((k.prefix_len(), k.data()), v);
    }
    let mut have6 = V6Entries::new();
    for item in maps.blocked_v6.iter() {
        let (k, v) = item.map_err(|e| Error::map(BLOCKED_V6, e))?;
        have6.insert((k.prefix_len(), k.data()), v);
    }
    let config = read_config(&maps.active_config, &maps.policy_config)?;
    Ok(have4 == v4 && have6 == v6 && config == policy_config(policy))
}

/// The policy in force, read back from the maps (for `status`).
pub fn read_config(
    active: &Array<MapData, u32>,
    configs: &Array<MapData, PolicyConfig>,
) -> Result<PolicyConfig, Error> {
    let slot = active
        .get(&0, 0)
        .map_err(|e| Error::map(ACTIVE_CONFIG, e))?;
    configs
        .get(&slot, 0)
        .map_err(|e| Error::map(POLICY_CONFIG, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::flags::Overrides;

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml, &Overrides::default()).unwrap()
    }

    #[test]
    fn defaults_give_one_entry_per_cidr() {
        let p = policy("");
        let (v4, v6) = trie_entries(&p).unwrap();
        assert_eq!(v4.len(), 5);
        assert_eq!(v6.len(), 1);
        let azure = v4.get(&(32, [168, 63, 129, 16])).unwrap();
        assert_eq!(azure.all_rule_id, NO_RULE);
        assert_eq!(azure.match_count, 2);
        let imds = v4.get(&(32, [169, 254, 169, 254])).unwrap();
        assert_eq!(imds.all_rule_id, 0);
    }

    #[test]
    fn a_wider_all_protocol_rule_covers_a_narrower_port_rule() {
        let p = policy(
            r#"
            [[block]]
            cidr = "10.0.0.0/8"
            [[block]]
            cidr = "10.1.2.3/32"
            protocol = "tcp"
            ports = [80]
            "#,
        );
        let (v4, _) = trie_entries(&p).unwrap();
        // The /32 would otherwise shadow the /8 for everything but TCP 80.
        assert_eq!(v4.get(&(32, [10, 1, 2, 3])).unwrap().all_rule_id, 0);
    }

    #[test]
    fn port_rules_of_a_wider_prefix_are_inherited() {
        let p = policy(
            r#"
            [[block]]
            cidr = "10.0.0.0/8"
            protocol = "udp"
            ports = [53]
            [[block]]
            cidr = "10.1.2.3/32"
            protocol = "tcp"
            ports = [80]
            "#,
        );
        let (v4, _) = trie_entries(&p).unwrap();
        let v = v4.get(&(32, [10, 1, 2, 3])).unwrap();
        assert_eq!(v.match_count, 2);
        assert_eq!(
            v.matching_rule(17, egress_ebpf_common::rules::DestPort::known(53)),
            Some(0)
        );
        assert_eq!(
            v.matching_rule(6, egress_ebpf_common::rules::DestPort::known(80)),
            Some(1)
        );
    }

    #[test]
    fn too_many_ports_on_one_prefix_is_a_config_error() {
        let ports: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        let toml = format!(
            "[[block]]\ncidr = \"10.0.0.1/32\"\nprotocol = \"tcp\"\nports = [{}]\n",
            ports.join(",")
        );
        let e = Policy::from_toml(&toml, &Overrides::default()).unwrap_err();
        assert_eq!(e.field, "block");
        assert!(e.problem.contains("at most 16"), "{e}");
    }

    #[test]
    fn ten_thousand_cidrs_merge_quickly_and_exactly() {
        let mut toml = String::new();
        for i in 0..10_000u32 {
            let a = 0x0a00_0000u32 + (i << 8);
            let [b0, b1, b2, _] = a.to_be_bytes();
            toml.push_str(&format!("[[block]]\ncidr = \"{b0}.{b1}.{b2}.0/24\"\n"));
        }
        let p = policy(&toml);
        let (v4, _) = trie_entries(&p).unwrap();
        assert_eq!(v4.len(), 10_000);
    }
}
