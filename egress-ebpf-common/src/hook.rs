//! Where a decision is made: the hooks that call `decide::decide`, named in
//! drop events and counted apart (`HOOK_COUNTERS`) where no interface
//! stands for them.

wire_enum! {
    /// The hook a program runs on. The values are the wire format of
    /// `DropEvent::hook` and the index into `HOOK_COUNTERS`.
    #[repr(u8)]
    pub enum Hook {
        /// tc ingress of a filtered interface (a bridge, or a routed veth a
        /// pattern names): the `egress_filter` classifier.
        Tc = 0 => "tc",
        /// tc ingress of a container's host-side veth (the per-container
        /// program; reserved here so the numbers stay put).
        Veth = 1 => "veth",
        /// `connect()` of an IPv4 socket (TCP, connected UDP, ICMP ping).
        Connect4 = 2 => "cgroup/connect4",
        /// `connect()` of an IPv6 socket, v4-mapped destinations included.
        Connect6 = 3 => "cgroup/connect6",
        /// `sendto()`/`sendmsg()` with an address on an IPv4 UDP socket: only
        /// where `cgroup_skb/egress` cannot load (egress-ebpf's cgroup module).
        Sendmsg4 = 4 => "cgroup/sendmsg4",
        /// The same on an IPv6 UDP socket.
        Sendmsg6 = 5 => "cgroup/sendmsg6",
        /// `cgroup_skb/egress`: every IP packet a socket of the cgroup sends,
        /// judged here unless `connect()` judged its destination (unconnected
        /// UDP, raw sockets, ICMP, SCTP...).
        CgroupSkb = 6 => "cgroup_skb/egress",
    }
}

impl Hook {
    /// The cgroup hooks, which `HOOK_COUNTERS` counts.
    pub const CGROUP: [Hook; 5] = [
        Hook::Connect4,
        Hook::Connect6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::CgroupSkb,
    ];

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
