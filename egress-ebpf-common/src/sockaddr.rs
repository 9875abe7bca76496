//! What a socket hook (`cgroup/connect4/6`, `sendmsg4/6`) knows of a call:
//! the destination the caller named, its socket's protocol, and whether it
//! opens a TCP connection. Turned into the [`Parsed`] view the decision
//! reads, so the socket hooks and the packet hooks run one `decide`.

use crate::{
    parse::{Family, Fragment, Parsed, TCP_SYN, Transport, v4_mapped},
    rules::{DestPort, PROTO_TCP, PROTO_UDP},
};

/// IPPROTO_UDPLITE: a datagram socket that goes through `udp_sendmsg`.
pub const PROTO_UDPLITE: u8 = 136;

/// Which call the hook intercepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `connect()` (and TCP Fast Open's `sendto(MSG_FASTOPEN)`, which runs
    /// the same hook): on a TCP socket, a connection attempt.
    Connect,
    /// `sendto()`/`sendmsg()` naming a destination (UDP), where
    /// `cgroup_skb/egress` cannot judge its datagram instead.
    Sendmsg,
}

#[inline(always)]
fn transport(proto: u8, port: u16, call: Call) -> Transport {
    let ported = proto == PROTO_TCP || proto == PROTO_UDP || proto == PROTO_UDPLITE;
    let attempt = call == Call::Connect && proto == PROTO_TCP;
    Transport {
        proto,
        dport: if ported {
            DestPort::known(port)
        } else {
            DestPort::NONE
        },
        sport: 0,
        // A connect() is the SYN that follows it, judged before it exists.
        tcp_flags: if attempt { TCP_SYN } else { 0 },
        tcp_flags_seen: attempt,
        fragment: Fragment::Whole,
    }
}

/// An IPv4 destination (`dst` in network order, `port` in host order). The
/// source is not known yet (zero): the kernel picks it after the hook.
#[inline(always)]
pub fn v4(dst: [u8; 4], port: u16, proto: u8, call: Call) -> Parsed {
    Parsed {
        family: Family::V4,
        src: [0; 16],
        dst: v4_mapped(&dst),
        transport: transport(proto, port, call),
        evasive: false,
        // No packet at a socket hook (no reply is built there).
        l3_offset: 0,
        l4_offset: 0,
    }
}

/// An IPv6 destination. A v4-mapped one (`::ffff:a.b.c.d`, which an IPv6
/// socket reaches over IPv4 without the IPv4 hook running) is judged as
/// the IPv4 address it is.
#[inline(always)]
pub fn v6(dst: [u8; 16], port: u16, proto: u8, call: Call) -> Parsed {
    let mapped = dst[..10] == [0; 10] && dst[10] == 0xff && dst[11] == 0xff;
    Parsed {
        family: if mapped { Family::V4 } else { Family::V6 },
        src: [0; 16],
        // The IPv4 form of Parsed is the mapped one: the same bytes.
        dst,
        transport: transport(proto, port, call),
        evasive: false,
        // No packet at a socket hook (no reply is built there).
        l3_offset: 0,
        l4_offset: 0,
    }
}

/// The per-source SMTP bucket key of a socket hook's caller: its cgroup id
/// in `100::/64` (RFC 6666, discard-only: never a real source), so each
/// host-network container has a bucket of its own in the `per-source`
/// scope, which source addresses cannot give it (it shares the host's).
#[inline(always)]
pub fn cgroup_bucket_key(cgroup_id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0] = 0x01;
    let id = cgroup_id.to_be_bytes();
    let mut i = 0;
    while i < 8 {
        k[8 + i] = id[i];
        i += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_connect_is_an_attempt_a_udp_send_is_not() {
        let p = v4([169, 254, 169, 254], 80, PROTO_TCP, Call::Connect);
        assert_eq!(p.family, Family::V4);
        assert_eq!(p.dst_v4(), [169, 254, 169, 254]);
        assert_eq!(p.transport.dport, DestPort::known(80));
        assert!(p.transport.is_connection_attempt());
        let u = v4([192, 0, 2, 1], 25, PROTO_UDP, Call::Sendmsg);
        assert!(!u.transport.is_connection_attempt());
        assert_eq!(u.transport.dport, DestPort::known(25));
        // A connected UDP socket: connect(), but no TCP handshake.
        assert!(
            !v4([192, 0, 2, 1], 25, PROTO_UDP, Call::Connect)
                .transport
                .is_connection_attempt()
        );
        // An ICMP ping socket has no ports.
        assert_eq!(
            v4([169, 254, 169, 254], 0, 1, Call::Connect)
                .transport
                .dport,
            DestPort::NONE
        );
    }

    #[test]
    fn v4_mapped_destinations_are_ipv4() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[169, 254, 169, 254]);
        let p = v6(mapped, 80, PROTO_TCP, Call::Connect);
        assert_eq!(p.family, Family::V4);
        assert_eq!(p, v4([169, 254, 169, 254], 80, PROTO_TCP, Call::Connect));
        let mut aws = [0u8; 16];
        aws[..4].copy_from_slice(&[0xfd, 0x00, 0x0e, 0xc2]);
        aws[15] = 0x54;
        aws[14] = 0x02;
        assert_eq!(v6(aws, 80, PROTO_TCP, Call::Connect).family, Family::V6);
        // ::a.b.c.d (v4-compatible, deprecated) is not mapped.
        let mut compat = [0u8; 16];
        compat[12..].copy_from_slice(&[169, 254, 169, 254]);
        assert_eq!(v6(compat, 80, PROTO_TCP, Call::Connect).family, Family::V6);
    }

    #[test]
    fn bucket_keys_are_per_cgroup_and_outside_real_sources() {
        assert_ne!(cgroup_bucket_key(1), cgroup_bucket_key(2));
        let k = cgroup_bucket_key(0x0102_0304_0506_0708);
        assert_eq!(k[..8], [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(k[8..], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_ne!(k[..12], v4_mapped(&[1, 2, 3, 4])[..12]);
    }
}
