//! Counter ids and the per-CPU counter value.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
crate::assert_size!(Counter, 16);

impl Counter {
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

wire_enum! {
    /// What happened to a packet; the index into the `COUNTERS` map.
    #[repr(u32)]
    pub enum CounterId {
        /// Destination in the blocked set (dropped, or would be in dry-run).
        MetadataBlocked = 0 => "metadata_blocked",
        /// A TCP connection attempt to a rate-limited port, within the rate.
        SmtpAllowed = 1 => "smtp_allowed",
        /// A TCP connection attempt to a rate-limited port, over the rate.
        SmtpLimited = 2 => "smtp_limited",
        /// No rule matched: passed to the next program untouched.
        Passed = 3 => "passed",
        /// A shape no conforming stack sends that hides what the rules look at
        /// (see docs/threat-model.md); dropped.
        Evasive = 4 => "evasive_dropped",
        /// Destination in the blocked set, but the sending endpoint has an
        /// exception for it (and no other rule applied): passed.
        Excepted = 5 => "excepted",
    }
}

impl CounterId {
    /// Whether this outcome drops the packet when not in dry-run.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            CounterId::MetadataBlocked | CounterId::SmtpLimited | CounterId::Evasive
        )
    }
}

/// Per-interface counters: one [`Counter`] per [`CounterId`], the value of
/// `IFACE_COUNTERS` keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub by_verdict: [Counter; CounterId::COUNT as usize],
}
crate::assert_size!(IfaceCounters, 96);

/// Slots of the direct-mapped per-interface counters (`IFACE_SLOTS`): an
/// interface counts into slot `ifindex % IFACE_SLOT_COUNT` when the slot is
/// free or already its own, and into `IFACE_COUNTERS` (a hash map, slower)
/// when another interface holds it. An array lookup on every packet instead
/// of a hash lookup.
pub const IFACE_SLOT_COUNT: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceSlot {
    /// The interface that owns this slot (on this CPU); 0: free.
    pub ifindex: u32,
    pub _pad: u32,
    pub counters: IfaceCounters,
}
crate::assert_size!(IfaceSlot, 104);
