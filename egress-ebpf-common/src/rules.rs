//! Blocked-destination rules as stored in the LPM tries.
//!
//! A trie returns only the longest matching prefix, so the loader stores at
//! each prefix the union of every configured rule whose CIDR contains it (see
//! `egress-loader`'s `policy` module); a lookup then answers for all of them.
//!
//! One prefix's entry ([`BlockRule`]) holds, for the union of its rules:
//! - `all_rule_id`: a rule that blocks every protocol, if any;
//! - port entries ([`PortMatch`]): a (protocol, port) a rule blocks, or a
//!   protocol a rule blocks on every port ([`ANY_PORT`]);
//! - exception entries ([`MATCH_EXCEPT`]): a (protocol, port) that no rule
//!   blocking "every port" of that protocol blocks (the intersection of those
//!   rules' `except_ports`). An explicit port entry still blocks it.
//!
//! The first match in this order decides: an explicit (protocol, port)
//! entry; an exception (not blocked); a protocol-wide entry; the
//! every-protocol rule.

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Most (protocol, port) entries one prefix can carry, exceptions included.
pub const MAX_PORT_MATCHES: usize = 16;
/// `rule_id` value meaning "no rule".
pub const NO_RULE: u16 = u16::MAX;
/// `PortMatch::port` value meaning "any port of this protocol".
pub const ANY_PORT: u16 = 0;

/// `PortMatch::flags` and `BlockRule::all_flags` bit: the rule's action is
/// reject (answer the sender), not a silent drop.
pub const RULE_REJECT: u8 = 1;
/// `PortMatch::flags` bit: an exception entry. `rule_id` is the rule whose
/// `except_ports` named it, for display; it blocks nothing.
pub const MATCH_EXCEPT: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortMatch {
    /// Destination port, host byte order; [`ANY_PORT`] matches all (never
    /// in an exception entry).
    pub port: u16,
    pub proto: u8,
    /// [`RULE_REJECT`], [`MATCH_EXCEPT`].
    pub flags: u8,
    /// Index into `RULE_COUNTERS`.
    pub rule_id: u16,
}
crate::assert_size!(PortMatch, 6);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRule {
    /// Rule id of a rule that blocks every protocol to this prefix, or [`NO_RULE`].
    pub all_rule_id: u16,
    /// Valid entries in `matches`.
    pub match_count: u16,
    /// The flags of `all_rule_id` ([`RULE_REJECT`]).
    pub all_flags: u8,
    pub _pad: [u8; 3],
    pub matches: [PortMatch; MAX_PORT_MATCHES],
}
crate::assert_size!(BlockRule, 104);

/// What a lookup found: the rule that blocks the packet and its flags, or
/// nothing ([`RuleHit::NONE`]).
///
/// A plain struct, not an `Option`: the rule id flows into the counters'
/// arithmetic (docs/design.md, Verifier notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: u16,
    pub flags: u8,
}

impl RuleHit {
    pub const NONE: Self = Self {
        rule: NO_RULE,
        flags: 0,
    };

    #[inline(always)]
    pub const fn is_hit(self) -> bool {
        self.rule != NO_RULE
    }

    /// Whether the matching rule's action is reject.
    #[inline(always)]
    pub const fn rejects(self) -> bool {
        self.flags & RULE_REJECT != 0
    }
}

/// What the parser could see of the destination port.
///
/// A plain struct, not an enum with a payload: LLVM packs an enum's
/// undefined payload bits into registers, and the verifier refuses to read
/// an uninitialized register (`R3 !read_ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestPort {
    kind: u8,
    port: u16,
}

impl DestPort {
    /// The protocol has no ports (ICMP...).
    pub const NONE: Self = Self { kind: 0, port: 0 };
    /// A non-first fragment, or a header out of reach: a port rule for this
    /// protocol must assume it matches (fail closed).
    pub const UNKNOWN: Self = Self { kind: 1, port: 0 };

    pub const fn known(port: u16) -> Self {
        Self { kind: 2, port }
    }
    pub const fn is_known(self) -> bool {
        self.kind == 2
    }
    pub const fn is_unknown(self) -> bool {
        self.kind == 1
    }
    /// The port; 0 unless [`is_known`](Self::is_known).
    pub const fn value(self) -> u16 {
        self.port
    }
}

impl BlockRule {
    pub const fn empty() -> Self {
        Self {
            all_rule_id: NO_RULE,
            match_count: 0,
            all_flags: 0,
            _pad: [0; 3],
            matches: [PortMatch {
                port: 0,
                proto: 0,
                flags: 0,
                rule_id: NO_RULE,
            }; MAX_PORT_MATCHES],
        }
    }

    /// The rule that blocks a packet of `proto` to `port`, if any (the
    /// order of the module documentation). An unknown port (a later
    /// fragment) matches every port entry of its protocol and no exception:
    /// fail closed.
    #[inline(always)]
    pub fn matching_rule(&self, proto: u8, port: DestPort) -> RuleHit {
        let n = self.match_count as usize;
        // An every-protocol rule without exceptions or port entries: the
        // common metadata case answers without the loop.
        if self.all_rule_id != NO_RULE && n == 0 {
            return RuleHit {
                rule: self.all_rule_id,
                flags: self.all_flags,
            };
        }
        let mut any = RuleHit::NONE;
        let mut excepted = false;
        let mut i = 0;
        // Fixed trip count with an early exit at the count: the bound the
        // verifier sees is the constant, and a corrupt count is clamped
        // (docs/design.md, Verifier notes).
        while i < MAX_PORT_MATCHES {
            if i >= n {
                break;
            }
            let m = &self.matches[i];
            i += 1;
            if m.proto != proto {
                continue;
            }
            let here = port.is_known() && m.port == port.value();
            if m.flags & MATCH_EXCEPT != 0 {
                excepted |= here;
            } else if m.port == ANY_PORT {
                if !any.is_hit() {
                    any = RuleHit {
                        rule: m.rule_id,
                        flags: m.flags,
                    };
                }
            } else if here || port.is_unknown() {
                return RuleHit {
                    rule: m.rule_id,
                    flags: m.flags,
                };
            }
        }
        if excepted {
            return RuleHit::NONE;
        }
        if any.is_hit() {
            return any;
        }
        RuleHit {
            rule: self.all_rule_id,
            flags: self.all_flags,
        }
    }

    /// Whether an exception entry names (`proto`, `port`) (for `explain`;
    /// the decision uses [`matching_rule`](Self::matching_rule)).
    pub fn excepts(&self, proto: u8, port: u16) -> Option<&PortMatch> {
        let n = (self.match_count as usize).min(MAX_PORT_MATCHES);
        self.matches[..n]
            .iter()
            .find(|m| m.flags & MATCH_EXCEPT != 0 && m.proto == proto && m.port == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(proto: u8, port: u16, flags: u8, rule_id: u16) -> PortMatch {
        PortMatch {
            port,
            proto,
            flags,
            rule_id,
        }
    }

    fn with(entries: &[PortMatch]) -> BlockRule {
        let mut r = BlockRule::empty();
        r.matches[..entries.len()].copy_from_slice(entries);
        r.match_count = entries.len() as u16;
        r
    }

    fn azure_wireserver() -> BlockRule {
        with(&[entry(PROTO_TCP, 80, 0, 7), entry(PROTO_TCP, 32526, 0, 7)])
    }

    fn id(r: &BlockRule, proto: u8, port: DestPort) -> Option<u16> {
        let hit = r.matching_rule(proto, port);
        hit.is_hit().then_some(hit.rule)
    }

    #[test]
    fn port_rule_matches_only_its_ports_and_protocol() {
        let r = azure_wireserver();
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(80)), Some(7));
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(32526)), Some(7));
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(53)), None);
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(80)), None);
        assert_eq!(id(&r, 1, DestPort::NONE), None);
    }

    #[test]
    fn unknown_port_fails_closed_for_that_protocol_only() {
        let r = azure_wireserver();
        assert_eq!(id(&r, PROTO_TCP, DestPort::UNKNOWN), Some(7));
        assert_eq!(id(&r, PROTO_UDP, DestPort::UNKNOWN), None);
    }

    #[test]
    fn all_protocol_rule_wins() {
        let mut r = azure_wireserver();
        r.all_rule_id = 1;
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(53)), Some(1));
        assert_eq!(id(&r, 1, DestPort::NONE), Some(1));
        // An explicit port entry is more specific than the every-protocol rule.
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(80)), Some(7));
    }

    #[test]
    fn count_beyond_capacity_is_clamped() {
        let mut r = azure_wireserver();
        r.match_count = u16::MAX;
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(1)), None);
    }

    /// The default 169.254.169.254 rule: every protocol but DNS, rejected.
    fn imds_but_dns() -> BlockRule {
        let mut r = with(&[
            entry(PROTO_UDP, 53, MATCH_EXCEPT, 0),
            entry(PROTO_TCP, 53, MATCH_EXCEPT, 0),
        ]);
        r.all_rule_id = 0;
        r.all_flags = RULE_REJECT;
        r
    }

    #[test]
    fn exceptions_open_exactly_their_protocol_and_port() {
        let r = imds_but_dns();
        for proto in [PROTO_UDP, PROTO_TCP] {
            assert_eq!(id(&r, proto, DestPort::known(53)), None);
            let hit = r.matching_rule(proto, DestPort::known(80));
            assert_eq!((hit.rule, hit.rejects()), (0, true));
            assert_eq!(id(&r, proto, DestPort::known(54)), Some(0));
        }
        // No ports: no exception applies.
        assert_eq!(id(&r, 1, DestPort::NONE), Some(0));
        // A later fragment's port is unknown: the exception cannot apply.
        assert_eq!(id(&r, PROTO_UDP, DestPort::UNKNOWN), Some(0));
        assert!(r.excepts(PROTO_UDP, 53).is_some());
        assert!(r.excepts(PROTO_UDP, 54).is_none());
    }

    #[test]
    fn an_explicit_port_rule_overrides_an_exception() {
        let mut r = imds_but_dns();
        r.matches[2] = entry(PROTO_TCP, 53, 0, 4);
        r.match_count = 3;
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(53)), Some(4));
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(53)), None);
        // Order in the entry does not matter.
        r.matches.swap(0, 2);
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(53)), Some(4));
    }

    #[test]
    fn a_protocol_wide_rule_with_exceptions() {
        // UDP to every port but 123 (a TCP rule elsewhere does not matter).
        let r = with(&[
            entry(PROTO_UDP, ANY_PORT, 0, 2),
            entry(PROTO_UDP, 123, MATCH_EXCEPT, 2),
        ]);
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(123)), None);
        assert_eq!(id(&r, PROTO_UDP, DestPort::known(53)), Some(2));
        assert_eq!(id(&r, PROTO_TCP, DestPort::known(53)), None);
        assert!(!r.matching_rule(PROTO_UDP, DestPort::known(53)).rejects());
    }
}
