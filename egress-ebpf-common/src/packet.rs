//! What the parser learned about a packet, and the decisions that follow from
//! it alone (no maps involved).

use crate::rules::{DestPort, PROTO_TCP};

/// TCP flag bits in header byte 13.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// iptables `--syn`, i.e. `--tcp-flags SYN,RST,ACK,FIN SYN`: SYN set, RST, ACK
/// and FIN clear; every other bit (PSH, URG, ECE, CWR, reserved) ignored.
#[inline(always)]
pub const fn is_syn(flags: u8) -> bool {
    flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK) == TCP_SYN
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// Offset 0, more fragments follow: holds the start of the transport header.
    First,
    /// Offset > 0: no transport header of its own.
    Later,
}

/// The transport-layer view the rules need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    pub proto: u8,
    pub dport: DestPort,
    /// Source port (host order), 0 when not visible; for reports only.
    pub sport: u16,
    /// TCP flags byte, valid when `tcp_flags_seen` (not an `Option`: see
    /// [`DestPort`]).
    pub tcp_flags: u8,
    pub tcp_flags_seen: bool,
    pub fragment: Fragment,
}

impl Transport {
    /// Whether this packet must go through the SMTP bucket, given that its
    /// destination port is rate-limited. A fragmented TCP datagram's flags
    /// cannot be trusted (a later overlapping fragment may rewrite them,
    /// RFC 1858), so any first fragment to a limited port counts as an attempt.
    #[inline(always)]
    pub fn is_connection_attempt(&self) -> bool {
        if self.proto != PROTO_TCP {
            return false;
        }
        match self.fragment {
            Fragment::First => true,
            Fragment::Later => false,
            Fragment::Whole => self.tcp_flags_seen && is_syn(self.tcp_flags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_definition_matches_iptables() {
        // All 256 flag bytes: exactly those with SYN set and FIN/RST/ACK clear.
        for f in 0u16..=255 {
            let f = f as u8;
            let expected = f & 0x02 != 0 && f & 0x01 == 0 && f & 0x04 == 0 && f & 0x10 == 0;
            assert_eq!(is_syn(f), expected, "flags {f:#04x}");
        }
        assert!(is_syn(0x02 | 0x40 | 0x80 | 0x08 | 0x20)); // SYN+ECE+CWR+PSH+URG
    }

    #[test]
    fn first_fragments_count_as_attempts_later_ones_do_not() {
        let mut t = Transport {
            proto: PROTO_TCP,
            dport: DestPort::known(25),
            sport: 0,
            tcp_flags: TCP_ACK,
            tcp_flags_seen: true,
            fragment: Fragment::First,
        };
        assert!(t.is_connection_attempt());
        t.fragment = Fragment::Whole;
        assert!(!t.is_connection_attempt());
        t.tcp_flags = TCP_SYN;
        assert!(t.is_connection_attempt());
        t.fragment = Fragment::Later;
        assert!(!t.is_connection_attempt());
        t.proto = 17;
        t.fragment = Fragment::Whole;
        assert!(!t.is_connection_attempt());
    }
}
