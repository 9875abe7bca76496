//! Structured random frames near every parser path, cut and bit-flipped:
//! shared by the suites host_parser (against etherparse) and kernel_vs_host
//! (kernel against host).

use std::net::Ipv4Addr;

use egress_tests::frames::*;
use proptest::prelude::*;

const IMDS: [u8; 4] = [169, 254, 169, 254];
const SMTP_HOST: [u8; 4] = [198, 51, 100, 25];
const WIRESERVER: [u8; 4] = [168, 63, 129, 16];

fn ext_strategy() -> impl Strategy<Value = Ext> {
    // Hop-by-hop (etherparse takes it first only) and the kinds etherparse
    // does not walk are rarer, so that most chains are compared in full.
    prop_oneof![
        1 => Just(Ext::HopByHop),
        4 => Just(Ext::DestOpts),
        4 => Just(Ext::Routing),
        3 => Just(Ext::Auth),
        4 => (0u16..4, any::<bool>()).prop_map(|(o, more)| Ext::Fragment {
            offset: if o == 3 { 77 } else { o },
            more
        }),
        1 => prop::sample::select(vec![135u8, 139, 140, 253, 254]).prop_map(Ext::Generic),
    ]
}

fn l4_strategy() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        (
            any::<u16>(),
            prop::sample::select(vec![25u16, 80, 443, 53, 32526]),
            any::<u8>(),
            0u8..16
        )
            .prop_map(|(s, d, flags, doff)| {
                let mut t = tcp(s, d, flags);
                t[12] = doff << 4;
                (IPPROTO_TCP, t)
            }),
        (
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(s, d, p)| (IPPROTO_UDP, udp(s, d, &p))),
        Just((IPPROTO_ICMP, icmp_echo())),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..24)),
    ]
}

/// Structured frames near every parser path, then cut and bit-flipped.
pub fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Mostly the tags the parser walks; sometimes three, or 0x9100.
    let vlans = prop_oneof![
        6 => prop::collection::vec(
            (prop::sample::select(vec![0x8100u16, 0x88a8]), any::<u16>()),
            0..=2,
        ),
        1 => prop::collection::vec(
            (prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]), any::<u16>()),
            0..4,
        ),
    ];
    let v4 = (
        prop::sample::select(vec![IMDS, SMTP_HOST, WIRESERVER, [10, 0, 0, 1]]),
        0usize..4,
        prop::sample::select(vec![0u16, 0, 0, 1, 2, 100]),
        any::<bool>(),
        prop::option::weighted(0.1, 0u8..16),
        prop::option::weighted(0.1, any::<u16>()),
        l4_strategy(),
    )
        .prop_map(|(dst, words, frag_offset, more, ihl, tot, (proto, l4))| {
            let mut h = V4::new(Ipv4Addr::from(dst), proto);
            h.options = vec![1; words * 4];
            h.frag_offset = frag_offset;
            h.more_fragments = more;
            h.ihl_override = ihl;
            h.tot_len_override = tot;
            let mut p = h.header(l4.len());
            p.extend(l4);
            (0x0800u16, p)
        });
    let v6 = (
        prop::sample::select(vec!["fd00:ec2::254", "2001:db8:25::25", "2001:db8::1"]),
        prop_oneof![
            3 => prop::collection::vec(ext_strategy(), 0..3),
            1 => prop::collection::vec(ext_strategy(), 0..11),
        ],
        l4_strategy(),
    )
        .prop_map(|(dst, exts, (proto, l4))| {
            let mut h = V6::new(dst.parse().unwrap(), proto);
            h.exts = exts;
            let mut p = h.header(l4.len());
            p.extend(l4);
            (0x86ddu16, p)
        });
    (
        vlans,
        prop_oneof![v4, v6],
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(vlans, (ether_type, payload), cut, flips)| {
            let mut f = ethernet(ether_type, &vlans, &payload);
            if let Some(i) = cut {
                f.truncate(i.index(f.len() + 1));
            }
            for (i, b) in flips {
                if !f.is_empty() {
                    let i = i.index(f.len());
                    f[i] ^= b;
                }
            }
            f
        })
}
