//! From a validated [`Policy`] to map contents, and writing them so that no
//! packet ever sees a partial policy: trie entries are added before stale
//! ones go (the set only grows during the switch), and the config is
//! double-buffered behind one flip of `ACTIVE_CONFIG`. The prefix
//! pre-filter (`PREFILTER`) only ever opens a block where neither the old
//! nor the new entries are: it is narrowed before the tries change and
//! widened after.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use egress_ebpf_common::{
    config::{
        MAX_SMTP_PORTS, OVER_LIMIT_DROP, OVER_LIMIT_REJECT, PolicyConfig, SCOPE_GLOBAL,
        SCOPE_PER_CONTAINER, SCOPE_PER_SOURCE,
    },
    counters::Counter,
    maps::{
        ACTIVE_CONFIG, BLOCKED_V4, BLOCKED_V6, CONFIG_SLOTS, POLICY_CONFIG, PREFILTER,
        RULE_COUNTERS,
    },
    prefilter::{PREFILTER_V4, PREFILTER_V6, Prefilter},
    rules::{
        ANY_PORT, BlockRule as TrieValue, MATCH_EXCEPT, MAX_PORT_MATCHES, PortMatch, RULE_REJECT,
    },
};

use crate::{
    error::{ConfigError, Error},
    kernel::maps::PolicyMaps,
    policy::values::{Cidr, Policy, Protocol, RuleAction, Scope},
};

pub type V4Entries = BTreeMap<(u32, [u8; 4]), TrieValue>;
pub type V6Entries = BTreeMap<(u32, [u8; 16]), TrieValue>;

/// More protocol/port entries apply to one prefix than a trie value holds
/// ([`MAX_PORT_MATCHES`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{prefix}: {count} protocol/port entries (exceptions included) apply to this prefix; \
     at most {MAX_PORT_MATCHES}"
)]
pub struct TooManyPortMatches {
    pub prefix: Cidr,
    pub count: usize,
}

/// The trie contents for a policy: one entry per distinct prefix, holding the
/// union of every rule whose CIDR contains that prefix (a trie lookup returns
/// only the longest match, so a shorter rule must be repeated in longer ones).
pub fn trie_entries(policy: &Policy) -> Result<(V4Entries, V6Entries), TooManyPortMatches> {
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
        let value =
            merge(policy, &containing).map_err(|count| TooManyPortMatches { prefix: p, count })?;
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

/// The kernel flags of a rule's action.
fn flags(policy: &Policy, id: usize) -> u8 {
    match policy.blocks[id].action {
        RuleAction::Reject => RULE_REJECT,
        RuleAction::Drop => 0,
    }
}

/// One prefix's entry from the rules containing it, most specific first
/// (the encoding of egress-ebpf-common's `rules` module):
/// - the every-protocol rule is the most specific one;
/// - per protocol with ports (TCP, UDP), the rules that block every port of
///   it (every-protocol rules included) leave open what all of them except
///   (exception entries); the most specific of them answers for the rest
///   (a protocol-wide entry, unless it is the every-protocol rule), and a
///   port it excepts but a wider rule blocks gets that rule's entry;
/// - a port rule gets an entry where no wider rule blocks its port, or where
///   its action differs from the rule that would answer.
///
/// More matches than a value holds: `Err` with their number.
fn merge(policy: &Policy, rule_ids: &[usize]) -> Result<TrieValue, usize> {
    let mut v = TrieValue::empty();
    let rule = |id: usize| &policy.blocks[id];
    if let Some(&id) = rule_ids.iter().find(|&&id| rule(id).protocol.is_none()) {
        v.all_rule_id = id as u16;
        v.all_flags = flags(policy, id);
    }
    let mut matches: Vec<PortMatch> = Vec::new();
    let push = |m: PortMatch, matches: &mut Vec<PortMatch>| {
        let exists = matches.iter().any(|e| {
            e.proto == m.proto
                && e.port == m.port
                && (e.flags & MATCH_EXCEPT) == (m.flags & MATCH_EXCEPT)
        });
        if !exists {
            matches.push(m);
        }
    };
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let n = proto.number();
        let entry = |port: u16, flags: u8, id: usize| PortMatch {
            port,
            proto: n,
            flags,
            rule_id: id as u16,
        };
        // Rules blocking every port of `proto`, most specific first.
        let wide: Vec<usize> = rule_ids
            .iter()
            .copied()
            .filter(|&id| rule(id).ports.is_empty() && rule(id).protocol.is_none_or(|p| p == proto))
            .collect();
        let answering = wide.first().copied();
        let excepted = |id: usize, port: u16| rule(id).excepted_on(proto).contains(&port);
        // Port rules: where no wide rule answers, where the answering one
        // excepts the port, or where the port rule is the more specific one
        // and acts otherwise.
        for (pos, &id) in rule_ids.iter().enumerate() {
            let r = rule(id);
            if r.protocol != Some(proto) || r.ports.is_empty() {
                continue;
            }
            for &port in &r.ports {
                let needed = match answering {
                    None => true,
                    Some(a) => {
                        let more_specific = rule_ids.iter().position(|&x| x == a) > Some(pos);
                        excepted(a, port)
                            || (more_specific && flags(policy, a) != flags(policy, id))
                    }
                };
                if needed {
                    push(entry(port, flags(policy, id), id), &mut matches);
                }
            }
        }
        let Some(first) = answering else {
            continue;
        };
        if first as u16 != v.all_rule_id {
            push(entry(ANY_PORT, flags(policy, first), first), &mut matches);
        }
        for &port in rule(first).excepted_on(proto) {
            match wide.iter().copied().find(|&id| !excepted(id, port)) {
                // A wider rule blocks what the answering one leaves open.
                Some(blocker) => push(entry(port, flags(policy, blocker), blocker), &mut matches),
                // Open where every wide rule excepts it.
                None => push(entry(port, MATCH_EXCEPT, first), &mut matches),
            }
        }
    }
    if matches.len() > MAX_PORT_MATCHES {
        return Err(matches.len());
    }
    v.match_count = matches.len() as u16;
    v.matches[..matches.len()].copy_from_slice(&matches);
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
    c.smtp_over_limit = match policy.smtp_over_limit {
        RuleAction::Drop => OVER_LIMIT_DROP,
        RuleAction::Reject => OVER_LIMIT_REJECT,
    };
    let r = policy.reject_rate;
    if let Some(g) =
        egress_ebpf_common::bucket::Gcra::new(r.count, r.period.nanos(), policy.reject_burst as u64)
    {
        c.reply_emission_ns = g.emission_ns;
        c.reply_burst_window_ns = g.burst_window_ns;
    }
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
    let want = [
        (PREFILTER_V4, prefilter(&v4)),
        (PREFILTER_V6, prefilter(&v6)),
    ];
    // While the tries change they hold old and new entries (adds first):
    // open only what both policies leave open, so no packet skips an entry.
    for (family, new) in &want {
        let have = read_prefilter(&maps.prefilter, *family)?;
        write_prefilter(&mut maps.prefilter, *family, &have, &have.and(new))?;
    }
    report.rules_changed |= sync_trie(BLOCKED_V4, &mut maps.blocked_v4, &v4, &mut report.removed)?;
    report.rules_changed |= sync_trie(BLOCKED_V6, &mut maps.blocked_v6, &v6, &mut report.removed)?;
    // The stale entries are gone: open what the new policy leaves open.
    for (family, new) in &want {
        let have = read_prefilter(&maps.prefilter, *family)?;
        write_prefilter(&mut maps.prefilter, *family, &have, new)?;
    }

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

/// The pre-filter of one family's trie entries: open (skip the trie) in
/// every /16 that none of them overlaps.
pub fn prefilter<const N: usize>(entries: &BTreeMap<(u32, [u8; N]), TrieValue>) -> Prefilter {
    let mut f = Prefilter::open();
    for (len, addr) in entries.keys() {
        f.close(*len, addr);
    }
    f
}

fn read_prefilter(map: &Array<MapData, Prefilter>, family: u32) -> Result<Prefilter, Error> {
    map.get(&family, 0).map_err(|e| Error::map(PREFILTER, e))
}

fn write_prefilter(
    map: &mut Array<MapData, Prefilter>,
    family: u32,
    have: &Prefilter,
    want: &Prefilter,
) -> Result<(), Error> {
    if have != want {
        map.set(family, *want, 0)
            .map_err(|e| Error::map(PREFILTER, e))?;
    }
    Ok(())
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
    let filters = read_prefilter(&maps.prefilter, PREFILTER_V4)? == prefilter(&v4)
        && read_prefilter(&maps.prefilter, PREFILTER_V6)? == prefilter(&v6);
    Ok(have4 == v4 && have6 == v6 && filters && config == policy_config(policy))
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
    use egress_ebpf_common::{prefilter::hi16, rules::NO_RULE};

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml, &Overrides::default()).unwrap()
    }

    use egress_ebpf_common::rules::{DestPort, PROTO_TCP, PROTO_UDP};

    /// The rule id and whether it rejects, for a packet of `proto` to
    /// `port` at the entry of `prefix`; `None` when it passes.
    fn hit(v: &TrieValue, proto: u8, port: u16) -> Option<(u16, bool)> {
        let h = v.matching_rule(proto, DestPort::known(port));
        h.is_hit().then_some((h.rule, h.rejects()))
    }

    #[test]
    fn defaults_give_one_entry_per_cidr() {
        let p = policy("");
        let (v4, v6) = trie_entries(&p).unwrap();
        assert_eq!(v4.len(), 7);
        assert_eq!(v6.len(), 4);
        let azure = v4.get(&(32, [168, 63, 129, 16])).unwrap();
        assert_eq!(azure.all_rule_id, NO_RULE);
        assert_eq!(azure.match_count, 2);
        assert_eq!(hit(azure, PROTO_TCP, 80).map(|h| h.1), Some(true));
        assert_eq!(hit(azure, PROTO_UDP, 53), None);
        let imds = v4.get(&(32, [169, 254, 169, 254])).unwrap();
        assert_eq!((imds.all_rule_id, imds.all_flags), (0, RULE_REJECT));
        // DNS open on both protocols, everything else rejected.
        assert_eq!(imds.match_count, 2);
        assert_eq!(hit(imds, PROTO_UDP, 53), None);
        assert_eq!(hit(imds, PROTO_TCP, 53), None);
        assert_eq!(hit(imds, PROTO_TCP, 80), Some((0, true)));
        assert_eq!(hit(imds, 1, 0), Some((0, true)));
        // The other defaults: every protocol, no loop.
        let ecs = v4.get(&(32, [169, 254, 170, 2])).unwrap();
        assert_eq!((ecs.match_count, ecs.all_flags), (0, RULE_REJECT));
    }

    #[test]
    fn a_wider_all_protocol_rule_covers_a_narrower_port_rule() {
        let p = policy(
            r#"
            defaults = false
            [[block]]
            cidr = "10.0.0.0/8"
            [[block]]
            cidr = "10.1.2.3/32"
            protocol = "tcp"
            ports = [80]
            "#,
        );
        let (v4, _) = trie_entries(&p).unwrap();
        // The /32 would otherwise shadow the /8 for everything but TCP 80;
        // the port rule acts as the /8 does, so it adds nothing.
        let v = v4.get(&(32, [10, 1, 2, 3])).unwrap();
        assert_eq!((v.all_rule_id, v.match_count), (0, 0));
    }

    #[test]
    fn a_narrower_rule_that_acts_otherwise_keeps_its_entry() {
        let p = policy(
            r#"
            defaults = false
            [[block]]
            cidr = "10.0.0.0/8"
            [[block]]
            cidr = "10.1.2.3/32"
            protocol = "tcp"
            ports = [80]
            action = "reject"
            "#,
        );
        let (v4, _) = trie_entries(&p).unwrap();
        let v = v4.get(&(32, [10, 1, 2, 3])).unwrap();
        assert_eq!(hit(v, PROTO_TCP, 80), Some((1, true)));
        assert_eq!(hit(v, PROTO_TCP, 81), Some((0, false)));
        assert_eq!(hit(v, PROTO_UDP, 80), Some((0, false)));
    }

    #[test]
    fn port_rules_of_a_wider_prefix_are_inherited() {
        let p = policy(
            r#"
            defaults = false
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
        assert_eq!(hit(v, PROTO_UDP, 53), Some((0, false)));
        assert_eq!(hit(v, PROTO_TCP, 80), Some((1, false)));
    }

    #[test]
    fn a_wider_rule_blocks_what_a_narrower_one_excepts() {
        // One extra [[block]] over the metadata address: DNS to it is
        // blocked too, by the wider rule (its action), the rest still by
        // the built-in rule (reject).
        let p = policy("[[block]]\ncidr = \"169.254.0.0/16\"\n");
        let (v4, _) = trie_entries(&p).unwrap();
        let wide = p.blocks.len() as u16 - 1;
        let imds = v4.get(&(32, [169, 254, 169, 254])).unwrap();
        assert_eq!(hit(imds, PROTO_UDP, 53), Some((wide, false)));
        assert_eq!(hit(imds, PROTO_TCP, 53), Some((wide, false)));
        assert_eq!(hit(imds, PROTO_TCP, 80), Some((0, true)));
        let other = v4.get(&(16, [169, 254, 0, 0])).unwrap();
        assert_eq!(hit(other, PROTO_UDP, 53), Some((wide, false)));
    }

    #[test]
    fn exceptions_are_open_only_where_every_wide_rule_excepts() {
        let p = policy(
            r#"
            defaults = false
            [[block]]
            cidr = "10.0.0.0/8"
            except_ports = [53, 123]
            [[block]]
            cidr = "10.1.0.0/16"
            protocol = "udp"
            except_ports = [53]
            action = "reject"
            [[block]]
            cidr = "10.1.2.3/32"
            protocol = "tcp"
            ports = [53]
            "#,
        );
        let (v4, _) = trie_entries(&p).unwrap();
        let v = v4.get(&(32, [10, 1, 2, 3])).unwrap();
        assert_eq!(hit(v, PROTO_UDP, 53), None);
        // 123/udp: the /16 (more specific, rejecting) blocks it.
        assert_eq!(hit(v, PROTO_UDP, 123), Some((1, true)));
        assert_eq!(hit(v, PROTO_UDP, 80), Some((1, true)));
        // TCP: the /8 answers; 53 by the explicit rule, 123 open.
        assert_eq!(hit(v, PROTO_TCP, 53), Some((2, false)));
        assert_eq!(hit(v, PROTO_TCP, 123), None);
        assert_eq!(hit(v, PROTO_TCP, 80), Some((0, false)));
        // A protocol-scoped exception.
        let p = policy(
            "defaults = false\n[[block]]\ncidr = \"10.0.0.1/32\"\nexcept_ports = [53]\nexcept_protocol = \"udp\"\n",
        );
        let (v4, _) = trie_entries(&p).unwrap();
        let v = v4.get(&(32, [10, 0, 0, 1])).unwrap();
        assert_eq!(hit(v, PROTO_UDP, 53), None);
        assert_eq!(hit(v, PROTO_TCP, 53), Some((0, false)));
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
        let mut toml = String::from("defaults = false\n");
        for i in 0..10_000u32 {
            let a = 0x0a00_0000u32 + (i << 8);
            let [b0, b1, b2, _] = a.to_be_bytes();
            toml.push_str(&format!("[[block]]\ncidr = \"{b0}.{b1}.{b2}.0/24\"\n"));
        }
        let p = policy(&toml);
        let (v4, _) = trie_entries(&p).unwrap();
        assert_eq!(v4.len(), 10_000);
    }

    /// Whether `addr` lies inside one of the trie `entries`.
    fn in_trie<const N: usize>(
        entries: &BTreeMap<(u32, [u8; N]), TrieValue>,
        addr: [u8; N],
    ) -> bool {
        let bit = |a: &[u8; N], i: u32| a[i as usize / 8] >> (7 - i % 8) & 1;
        entries
            .keys()
            .any(|(len, p)| (0..*len).all(|i| bit(p, i) == bit(&addr, i)))
    }

    #[test]
    fn the_prefilter_opens_no_block_that_holds_a_blocked_address() {
        let p = policy(
            r#"
            [[block]]
            cidr = "10.0.0.0/8"
            [[block]]
            cidr = "100.64.0.0/10"
            [[block]]
            cidr = "192.0.2.0/24"
            [[block]]
            cidr = "2001:db8::/32"
            "#,
        );
        let (v4, v6) = trie_entries(&p).unwrap();
        let (f4, f6) = (prefilter(&v4), prefilter(&v6));
        // Every /16, its first and last address: open means no entry holds it.
        for hi in 0..=u16::MAX {
            let [b0, b1] = hi.to_be_bytes();
            for last in [0u8, 255] {
                let a4 = [b0, b1, last, last];
                assert!(
                    !(f4.is_open(hi) && in_trie(&v4, a4)),
                    "{a4:?} skips the trie"
                );
                let mut a6 = [last; 16];
                (a6[0], a6[1]) = (b0, b1);
                assert!(
                    !(f6.is_open(hi) && in_trie(&v6, a6)),
                    "{a6:?} skips the trie"
                );
            }
        }
        // And it does skip: the benchmark's destination, a global IPv6 one.
        assert!(f4.is_open(hi16(198, 51)) && f4.is_open(hi16(100, 128)));
        assert!(!f4.is_open(hi16(100, 127)) && !f4.is_open(hi16(10, 200)));
        assert!(f6.is_open(0x2a00) && !f6.is_open(0x2001) && !f6.is_open(0xfd00));
    }
}
