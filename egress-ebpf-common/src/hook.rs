//! Where a decision is made: the hooks that call `decide::decide`, named in
//! drop events and counted apart (`HOOK_COUNTERS`) where no interface
//! stands for them.

/// The hook a program runs on. The values are the wire format of
/// `DropEvent::hook` and the index into `HOOK_COUNTERS`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// tc ingress of a filtered interface (a bridge, or a routed veth a
    /// pattern names): the `egress_filter` classifier.
    Tc = 0,
    /// tc ingress of a container's host-side veth (the per-container
    /// program; reserved here so the numbers stay put).
    Veth = 1,
    /// `connect()` of an IPv4 socket (TCP, connected UDP, ICMP ping).
    Connect4 = 2,
    /// `connect()` of an IPv6 socket, v4-mapped destinations included.
    Connect6 = 3,
    /// `sendto()`/`sendmsg()` with an address on an IPv4 UDP socket: only
    /// where `cgroup_skb/egress` cannot load (egress-ebpf's cgroup module).
    Sendmsg4 = 4,
    /// The same on an IPv6 UDP socket.
    Sendmsg6 = 5,
    /// `cgroup_skb/egress`: every IP packet a socket of the cgroup sends,
    /// judged here unless `connect()` judged its destination (unconnected
    /// UDP, raw sockets, ICMP, SCTP...).
    CgroupSkb = 6,
}

impl Hook {
    /// One more than the highest value: the size of `HOOK_COUNTERS`.
    pub const COUNT: u32 = 7;
    pub const ALL: [Hook; Self::COUNT as usize] = [
        Hook::Tc,
        Hook::Veth,
        Hook::Connect4,
        Hook::Connect6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::CgroupSkb,
    ];
    /// The cgroup hooks, which `HOOK_COUNTERS` counts.
    pub const CGROUP: [Hook; 5] = [
        Hook::Connect4,
        Hook::Connect6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::CgroupSkb,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::Tc => "tc",
            Hook::Veth => "veth",
            Hook::Connect4 => "cgroup/connect4",
            Hook::Connect6 => "cgroup/connect6",
            Hook::Sendmsg4 => "cgroup/sendmsg4",
            Hook::Sendmsg6 => "cgroup/sendmsg6",
            Hook::CgroupSkb => "cgroup_skb/egress",
        }
    }

    pub fn from_u8(v: u8) -> Option<Hook> {
        Self::ALL.into_iter().find(|h| *h as u8 == v)
    }

    pub const fn is_cgroup(self) -> bool {
        matches!(
            self,
            Hook::Connect4 | Hook::Connect6 | Hook::Sendmsg4 | Hook::Sendmsg6 | Hook::CgroupSkb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as u8 as usize, i);
            assert_eq!(Hook::from_u8(*h as u8), Some(*h));
        }
        assert_eq!(Hook::from_u8(Hook::COUNT as u8), None);
        assert!(Hook::CGROUP.iter().all(|h| h.is_cgroup()));
        assert!(!Hook::Tc.is_cgroup() && !Hook::Veth.is_cgroup());
    }
}
