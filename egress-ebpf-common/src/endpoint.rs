//! Endpoints: what sent a packet, as the kernel can tell without trusting
//! the packet. For a container on a bridge the endpoint is the host side of
//! its veth (one veth, one container), and its id is that veth's ifindex;
//! 0 is "unknown" (the bridge backstop sees only the bridge).
//!
//! The loader writes one [`Endpoint`] per attached veth into `ENDPOINTS`,
//! an array indexed by `ifindex % ENDPOINT_SLOTS` (an array lookup on every
//! packet, inlined by the verifier, where a hash lookup costs a call and a
//! hash). A slot whose owner is another live veth sends the newcomer to
//! `ENDPOINT_OVERFLOW` (a hash map, the slow path of the rare collision).
//! See docs/design.md, Endpoints.

/// Slots of `ENDPOINTS` and of the per-endpoint counters (a power of two).
pub const ENDPOINT_SLOTS: u32 = 4096;
/// Capacity of `ENDPOINT_OVERFLOW`.
pub const ENDPOINT_OVERFLOW_CAPACITY: u32 = 4096;
/// Capacity of `EXCEPTIONS` (endpoint, rule) pairs.
pub const EXCEPTION_CAPACITY: u32 = 16384;
/// Capacity of the per-endpoint SMTP buckets.
pub const SMTP_ENDPOINT_CAPACITY: u32 = 16384;

/// The bit of `skb->mark` by which the veth program hands its decision to
/// the bridge program behind it: the bridge program sees it, clears it and
/// passes the packet on at once (judged once, charged once, counted once).
///
/// A container cannot forge it: a packet that crosses network namespaces
/// through a veth is scrubbed (`veth_xmit` -> `__dev_forward_skb` ->
/// `skb_scrub_packet(skb, xnet = true)`, which sets `skb->mark = 0`), so
/// whatever mark the container set (SO_MARK, iptables MARK, a tc action in
/// its own namespace) is gone before the host side's tc ingress runs. Only
/// the veth program, in the host's namespace, sets it. Chosen clear of the
/// bits the common users take (kube-proxy 0x4000/0x8000, Calico's default
/// 0xffff0000 is configurable, Cilium's 0x0f00 magic, Istio 0x539).
pub const HANDOFF_MARK: u32 = 0x0080_0000;

/// `skb->pkt_type` of a frame addressed to another station than the
/// receiving device (`PACKET_OTHERHOST`, include/uapi/linux/if_packet.h).
pub const PACKET_OTHERHOST: u32 = 3;

/// Whether a frame a container sent through its veth goes up to the host
/// (to be routed or delivered there: what the bridge program judged before
/// endpoints) rather than to another port of the bridge (container to
/// container, which no program of the filter ever judged).
///
/// `pkt_type` is the one `eth_type_trans()` gave the frame on the host side
/// of the veth (`__dev_forward_skb()`), relative to that veth's own MAC:
/// `PACKET_HOST` (to the veth itself, a local FDB entry of the bridge),
/// broadcast or multicast (flooded, the host included) go up. A unicast
/// frame to another MAC (`PACKET_OTHERHOST`) goes up only when it is the
/// bridge's own (`br_handle_frame()` then makes it `PACKET_HOST`); one
/// that the bridge still passes up (another port's MAC, a promiscuous
/// bridge) keeps `PACKET_OTHERHOST`, which `ip_rcv_core()` drops, and the
/// bridge program judges it anyway. An all-zero `bridge_mac` (no entry)
/// matches nothing real: such frames are left to the bridge program.
#[inline(always)]
pub fn for_the_host(pkt_type: u32, dst_mac: [u8; 6], bridge_mac: [u8; 6]) -> bool {
    pkt_type != PACKET_OTHERHOST || (dst_mac == bridge_mac && bridge_mac != [0; 6])
}

/// `Endpoint::flags`: the endpoint has exceptions (look in `EXCEPTIONS`
/// after a block rule matched).
pub const ENDPOINT_EXCEPTED: u32 = 1;
/// `Endpoint::flags`: its own SMTP bucket parameters (`smtp_*_ns`), charged
/// to its own bucket whatever the scope.
pub const ENDPOINT_OWN_SMTP: u32 = 2;
/// `Endpoint::flags`: SMTP connection attempts are never limited.
pub const ENDPOINT_SMTP_UNLIMITED: u32 = 4;
/// `Endpoint::flags`: the container engine named the container.
pub const ENDPOINT_CONTAINER_KNOWN: u32 = 8;

/// `Endpoint::id` of a slot reserved for the counters of an overflow
/// endpoint (no ifindex is this large: the kernel's are positive `int`s).
pub const SLOT_RESERVED: u32 = u32::MAX;
/// `Endpoint::slot` of an endpoint without per-endpoint counters.
pub const NO_SLOT: u32 = u32::MAX;

/// Bytes of `Endpoint::container_id` and `container_name` (NUL padded).
pub const CONTAINER_ID_LEN: usize = 16;
pub const CONTAINER_NAME_LEN: usize = 64;

/// One attached endpoint, written by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint id: the host-side veth's ifindex. In `ENDPOINTS`, the
    /// slot's owner (0: free; [`SLOT_RESERVED`]: counters of an overflow
    /// endpoint).
    pub id: u32,
    /// Index into `ENDPOINT_COUNTERS`, or [`NO_SLOT`].
    pub slot: u32,
    /// `ENDPOINT_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// The MAC address of the bridge the veth is a port of: a frame sent
    /// to it goes up to the host (see [`for_the_host`]).
    pub bridge_mac: [u8; 6],
    pub _pad2: [u8; 2],
    /// GCRA parameters of its own SMTP bucket ([`ENDPOINT_OWN_SMTP`]).
    pub smtp_emission_ns: u64,
    pub smtp_burst_window_ns: u64,
    /// The container's short id and name, when known: read by `counters`,
    /// `/metrics` and the event decoder, never by the classifier.
    pub container_id: [u8; CONTAINER_ID_LEN],
    pub container_name: [u8; CONTAINER_NAME_LEN],
}
crate::assert_size!(Endpoint, 120);

impl Endpoint {
    pub const fn empty() -> Self {
        Self {
            id: 0,
            slot: NO_SLOT,
            flags: 0,
            _pad: 0,
            bridge_mac: [0; 6],
            _pad2: [0; 2],
            smtp_emission_ns: 0,
            smtp_burst_window_ns: 0,
            container_id: [0; CONTAINER_ID_LEN],
            container_name: [0; CONTAINER_NAME_LEN],
        }
    }

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Key of `EXCEPTIONS`: this endpoint may reach the destinations of this
/// block rule (rule ids are positions in the rule list).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionKey {
    pub endpoint: u32,
    pub rule: u16,
    pub _pad: u16,
}
crate::assert_size!(ExceptionKey, 8);

/// The slot of `ENDPOINTS` an endpoint id maps to.
#[inline(always)]
pub const fn endpoint_slot(id: u32) -> u32 {
    id & (ENDPOINT_SLOTS - 1)
}

const _: () = assert!(ENDPOINT_SLOTS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: [u8; 6] = [0x02, 0x42, 0x5e, 0, 0, 1];
    const OTHER: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 3];

    #[test]
    fn only_frames_that_go_up_to_the_host_are_judged_at_the_veth() {
        // To the bridge: up to the host, judged.
        assert!(for_the_host(PACKET_OTHERHOST, BRIDGE, BRIDGE));
        // To another container: the bridge forwards it, not judged here.
        assert!(!for_the_host(PACKET_OTHERHOST, OTHER, BRIDGE));
        // To the veth itself (PACKET_HOST), broadcast, multicast: judged.
        for t in 0..3 {
            assert!(for_the_host(t, OTHER, BRIDGE));
        }
        // Bridge unknown (no entry): left to the bridge program.
        assert!(!for_the_host(PACKET_OTHERHOST, [0; 6], [0; 6]));
    }
}
