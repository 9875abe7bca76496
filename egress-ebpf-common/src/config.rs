//! The policy knobs the classifier reads on every packet.

/// Maximum number of rate-limited destination ports.
pub const MAX_SMTP_PORTS: usize = 16;

pub const SCOPE_GLOBAL: u8 = 0;
pub const SCOPE_PER_SOURCE: u8 = 1;
/// One bucket per endpoint (the veth that sent the packet); where the
/// endpoint is unknown (the bridge backstop, before its veth is attached),
/// per source address.
pub const SCOPE_PER_CONTAINER: u8 = 2;

/// `PolicyConfig::smtp_over_limit`: a connection attempt over the SMTP rate
/// is dropped (the seed's `-j DROP`), or answered with a TCP reset.
pub const OVER_LIMIT_DROP: u8 = 0;
pub const OVER_LIMIT_REJECT: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// GCRA emission interval: nanoseconds per admitted connection attempt.
    pub emission_ns: u64,
    /// GCRA burst window: `burst * emission_ns`.
    pub burst_window_ns: u64,
    /// Rate-limited TCP destination ports, host byte order; `smtp_port_count` valid.
    pub smtp_ports: [u16; MAX_SMTP_PORTS],
    pub smtp_port_count: u8,
    /// 1: count what would be dropped, drop nothing.
    pub dry_run: u8,
    /// [`SCOPE_GLOBAL`], [`SCOPE_PER_SOURCE`] or [`SCOPE_PER_CONTAINER`].
    pub scope: u8,
    /// 1 once the loader wrote this slot; an unwritten slot filters nothing.
    pub valid: u8,
    /// [`OVER_LIMIT_DROP`] or [`OVER_LIMIT_REJECT`].
    pub smtp_over_limit: u8,
    pub _pad: [u8; 3],
    /// GCRA parameters of the drop-event budget; 0 disables events.
    pub event_emission_ns: u64,
    pub event_burst_window_ns: u64,
    /// GCRA parameters of the reply budget (`reply::REPLY_BUCKET`): the
    /// resets and ICMP errors that rejecting rules send; 0 sends none.
    pub reply_emission_ns: u64,
    pub reply_burst_window_ns: u64,
}
crate::assert_size!(PolicyConfig, 88);

impl PolicyConfig {
    pub const fn empty() -> Self {
        Self {
            emission_ns: 0,
            burst_window_ns: 0,
            smtp_ports: [0; MAX_SMTP_PORTS],
            smtp_port_count: 0,
            dry_run: 0,
            scope: SCOPE_GLOBAL,
            valid: 0,
            smtp_over_limit: OVER_LIMIT_DROP,
            _pad: [0; 3],
            event_emission_ns: 0,
            event_burst_window_ns: 0,
            reply_emission_ns: 0,
            reply_burst_window_ns: 0,
        }
    }

    /// Whether `port` is one of the rate-limited ports.
    #[inline(always)]
    pub fn is_smtp_port(&self, port: u16) -> bool {
        let n = self.smtp_port_count as usize;
        let mut i = 0;
        // Fixed trip count with an early exit keeps the loop bounded for the verifier.
        while i < MAX_SMTP_PORTS {
            if i >= n {
                return false;
            }
            if self.smtp_ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}
