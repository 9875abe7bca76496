//! Blocked-destination lists for the scaling runs, and their spelling for
//! each contender: iptables rules, an ipset, the filter's config file.
//!
//! The CIDRs are /24s of the shared address space 100.64.0.0/10 (RFC 6598),
//! which the benchmark traffic (172.17.0.0/16 -> 198.51.100.25) never
//! touches, so every packet walks the whole list without matching. The /24
//! holding Alibaba's metadata address (100.100.100.200, in the defaults) is
//! left out so the lists never overlap the default rules.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Name of the ipset of the ipset variant.
pub const IPSET_NAME: &str = "egress-bench";

/// The seed's three rules (docs/design.md, "The problem"), as Docker's DOCKER-USER chain holds
/// them after `iptables -I DOCKER-USER 1..3`.
const SEED_RULES: [&str; 3] = [
    "-A DOCKER-USER -p tcp --syn -m multiport --dports 25,465,587 -m limit --limit 5/minute -j RETURN",
    "-A DOCKER-USER -p tcp --syn -m multiport --dports 25,465,587 -j DROP",
    "-A DOCKER-USER -d 169.254.169.254 -j REJECT",
];

/// `n` distinct /24s in 100.64.0.0/10, skipping 100.100.100.0/24.
pub fn blocked(n: usize) -> Vec<String> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let skip = u32::from(Ipv4Addr::new(100, 100, 100, 0));
    (0u32..1 << 14)
        .map(|i| base + (i << 8))
        .filter(|&a| a != skip)
        .take(n)
        .map(|a| format!("{}/24", Ipv4Addr::from(a)))
        .collect()
}

/// How the blocked list reaches iptables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesList {
    /// One `-d CIDR -j DROP` rule per CIDR, as people write them.
    Rules,
    /// One rule matching an ipset of type hash:net.
    Ipset,
}

/// `iptables-restore --noflush` input: DOCKER-USER reached from FORWARD
/// exactly as Docker wires it (`-A FORWARD -j DOCKER-USER`, the chain ends
/// in `-j RETURN`), the seed's rules first, then the blocked list.
pub fn iptables_restore(cidrs: &[String], list: IptablesList) -> String {
    let mut s = String::from("*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n");
    for r in SEED_RULES {
        s.push_str(r);
        s.push('\n');
    }
    match list {
        IptablesList::Rules => {
            for c in cidrs {
                let _ = writeln!(s, "-A DOCKER-USER -d {c} -j DROP");
            }
        }
        IptablesList::Ipset if cidrs.is_empty() => {}
        IptablesList::Ipset => {
            let _ = writeln!(
                s,
                "-A DOCKER-USER -m set --match-set {IPSET_NAME} dst -j DROP"
            );
        }
    }
    s.push_str("-A DOCKER-USER -j RETURN\nCOMMIT\n");
    s
}

/// `ipset restore` input creating the hash:net set.
pub fn ipset_restore(cidrs: &[String]) -> String {
    let mut s = format!(
        "create {IPSET_NAME} hash:net family inet hashsize {} maxelem {}\n",
        cidrs.len().next_power_of_two().max(1024),
        cidrs.len().max(65536)
    );
    for c in cidrs {
        let _ = writeln!(s, "add {IPSET_NAME} {c}");
    }
    s
}

/// The loader's default config with the blocked list appended as
/// `[[block]]` entries (they add to the built-in rules).
pub fn filter_config(cidrs: &[String]) -> String {
    let mut s = egress_loader::policy::default_config_toml();
    s.push('\n');
    for c in cidrs {
        let _ = writeln!(s, "[[block]]\ncidr = \"{c}\"\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_distinct_and_avoid_the_defaults() {
        let l = blocked(10_000);
        assert_eq!(l.len(), 10_000);
        assert_eq!(l[0], "100.64.0.0/24");
        assert!(!l.contains(&"100.100.100.0/24".to_string()));
        let set: std::collections::BTreeSet<_> = l.iter().collect();
        assert_eq!(set.len(), l.len());
    }

    #[test]
    fn filter_config_is_valid() {
        let toml = filter_config(&blocked(100));
        let p = egress_loader::policy::Policy::from_toml(
            &toml,
            &egress_loader::policy::Overrides::default(),
        )
        .expect("valid");
        let (v4, _) = egress_loader::policy::apply::trie_entries(&p).expect("entries");
        assert!(v4.len() >= 100, "{}", v4.len());
    }
}
