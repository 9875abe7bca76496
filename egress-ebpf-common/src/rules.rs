//! Blocked-destination rules as stored in the LPM tries.
//!
//! A trie returns only the longest matching prefix, so the loader stores at
//! each prefix the union of every configured rule whose CIDR contains it (see
//! `egress-loader`'s `policy` module); a lookup then answers for all of them.

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Most (protocol, port) pairs one prefix can carry.
pub const MAX_PORT_MATCHES: usize = 16;
/// `rule_id` value meaning "no rule".
pub const NO_RULE: u16 = u16::MAX;
/// `PortMatch::port` value meaning "any port of this protocol".
pub const ANY_PORT: u16 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortMatch {
    /// Destination port, host byte order; [`ANY_PORT`] matches all.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
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
    pub _pad: u32,
    pub matches: [PortMatch; MAX_PORT_MATCHES],
}
crate::assert_size!(BlockRule, 104);

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
            _pad: 0,
            matches: [PortMatch {
                port: 0,
                proto: 0,
                _pad: 0,
                rule_id: NO_RULE,
            }; MAX_PORT_MATCHES],
        }
    }

    /// The id of the rule that blocks a packet of `proto` to `port`, if any.
    #[inline(always)]
    pub fn matching_rule(&self, proto: u8, port: DestPort) -> Option<u16> {
        if self.all_rule_id != NO_RULE {
            return Some(self.all_rule_id);
        }
        let n = self.match_count as usize;
        let mut i = 0;
        while i < MAX_PORT_MATCHES {
            if i >= n {
                break;
            }
            let m = &self.matches[i];
            if m.proto == proto {
                let hit = m.port == ANY_PORT
                    || port.is_unknown()
                    || (port.is_known() && m.port == port.value());
                if hit {
                    return Some(m.rule_id);
                }
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure_wireserver() -> BlockRule {
        let mut r = BlockRule::empty();
        r.matches[0] = PortMatch {
            port: 80,
            proto: PROTO_TCP,
            _pad: 0,
            rule_id: 7,
        };
        r.matches[1] = PortMatch {
            port: 32526,
            proto: PROTO_TCP,
            _pad: 0,
            rule_id: 7,
        };
        r.match_count = 2;
        r
    }

    #[test]
    fn port_rule_matches_only_its_ports_and_protocol() {
        let r = azure_wireserver();
        assert_eq!(r.matching_rule(PROTO_TCP, DestPort::known(80)), Some(7));
        assert_eq!(r.matching_rule(PROTO_TCP, DestPort::known(32526)), Some(7));
        assert_eq!(r.matching_rule(PROTO_TCP, DestPort::known(53)), None);
        assert_eq!(r.matching_rule(PROTO_UDP, DestPort::known(80)), None);
        assert_eq!(r.matching_rule(1, DestPort::NONE), None);
    }

    #[test]
    fn unknown_port_fails_closed_for_that_protocol_only() {
        let r = azure_wireserver();
        assert_eq!(r.matching_rule(PROTO_TCP, DestPort::UNKNOWN), Some(7));
        assert_eq!(r.matching_rule(PROTO_UDP, DestPort::UNKNOWN), None);
    }

    #[test]
    fn all_protocol_rule_wins() {
        let mut r = azure_wireserver();
        r.all_rule_id = 1;
        assert_eq!(r.matching_rule(PROTO_UDP, DestPort::known(53)), Some(1));
        assert_eq!(r.matching_rule(1, DestPort::NONE), Some(1));
    }

    #[test]
    fn count_beyond_capacity_is_clamped() {
        let mut r = azure_wireserver();
        r.match_count = u16::MAX;
        assert_eq!(r.matching_rule(PROTO_UDP, DestPort::known(1)), None);
    }
}
