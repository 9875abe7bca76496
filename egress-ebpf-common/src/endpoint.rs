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
    /// GCRA parameters of its own SMTP bucket ([`ENDPOINT_OWN_SMTP`]).
    pub smtp_emission_ns: u64,
    pub smtp_burst_window_ns: u64,
    /// The container's short id and name, when known: read by `counters`,
    /// `/metrics` and the event decoder, never by the classifier.
    pub container_id: [u8; CONTAINER_ID_LEN],
    pub container_name: [u8; CONTAINER_NAME_LEN],
}
crate::assert_size!(Endpoint, 112);

impl Endpoint {
    pub const fn empty() -> Self {
        Self {
            id: 0,
            slot: NO_SLOT,
            flags: 0,
            _pad: 0,
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
