//! Random frames through the real classifier (BPF_PROG_TEST_RUN): it never
//! drops a frame that matches no rule, and never passes one that does. The
//! expected verdict comes from the generator's own parameters (what the
//! frame was built to be), not from parsing it again.

use std::net::{Ipv4Addr, Ipv6Addr};

use egress_ebpf_common::counters::CounterId::{self, *};
use egress_tests::{
    frames::*,
    require_privileges,
    test_run::{Classifier, DROP, PASS},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};

const GENEROUS: &str = "[smtp]\nburst = 100000\nrate = \"1/hour\"\n";
const BLOCKED_V4: [[u8; 4]; 4] = [
    [169, 254, 169, 254],
    [169, 254, 170, 2],
    [100, 100, 100, 200],
    [192, 0, 0, 192],
];
const WIRESERVER: [u8; 4] = [168, 63, 129, 16];
const IMDS_V6: &str = "fd00:ec2::254";
const SMTP_PORTS: [u16; 4] = [25, 465, 587, 2525];

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    /// 0..4: a blocked v4 address, 4: WireServer, 5: v6 IMDS, else random.
    dst_kind: u8,
    random_v4: [u8; 4],
    random_v6: [u8; 16],
    proto: u8,
    dport: u16,
    flags: u8,
    vlans: usize,
    options_words: usize,
    exts: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        0u8..12,
        any::<[u8; 4]>(),
        any::<[u8; 16]>(),
        prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMP)],
        prop_oneof![
            Just(25u16),
            Just(465),
            Just(587),
            Just(2525),
            Just(80),
            Just(32526),
            Just(53),
            any::<u16>()
        ],
        any::<u8>(),
        0usize..=2,
        0usize..=10,
        proptest::collection::vec(0u8..4, 0..=8),
    )
        .prop_map(
            |(
                v6,
                dst_kind,
                random_v4,
                random_v6,
                proto,
                dport,
                flags,
                vlans,
                options_words,
                exts,
            )| Spec {
                v6,
                dst_kind,
                random_v4,
                random_v6,
                proto,
                dport,
                flags,
                vlans,
                options_words,
                exts,
            },
        )
}

impl Spec {
    fn dst_v4(&self) -> [u8; 4] {
        match self.dst_kind {
            k @ 0..4 => BLOCKED_V4[k as usize],
            4 => WIRESERVER,
            _ => self.random_v4,
        }
    }

    fn dst_v6(&self) -> Ipv6Addr {
        if self.dst_kind == 5 {
            IMDS_V6.parse().unwrap()
        } else {
            Ipv6Addr::from(self.random_v6)
        }
    }

    fn l4(&self) -> Vec<u8> {
        match self.proto {
            IPPROTO_TCP => tcp(40000, self.dport, self.flags),
            IPPROTO_UDP => udp(40000, self.dport, b"payload"),
            _ => icmp_echo(),
        }
    }

    fn frame(&self) -> Vec<u8> {
        let vlans: Vec<(u16, u16)> = [(0x88a8, 10), (0x8100, 20)][2 - self.vlans..].to_vec();
        if self.v6 {
            let proto = if self.proto == IPPROTO_ICMP {
                IPPROTO_ICMPV6
            } else {
                self.proto
            };
            let mut ip = V6::new(self.dst_v6(), proto);
            ip.exts = self
                .exts
                .iter()
                .map(|k| match k {
                    0 => Ext::HopByHop,
                    1 => Ext::DestOpts,
                    2 => Ext::Routing,
                    _ => Ext::Auth,
                })
                .collect();
            let mut p = ip.header(self.l4().len());
            p.extend(self.l4());
            ethernet(0x86dd, &vlans, &p)
        } else {
            let mut ip = V4::new(Ipv4Addr::from(self.dst_v4()), self.proto);
            ip.options = vec![1; self.options_words * 4];
            v4_frame_vlan(&ip, &self.l4(), &vlans)
        }
    }

    /// What the policy says, from the spec alone.
    fn expected(&self) -> (u32, CounterId) {
        let blocked = if self.v6 {
            self.dst_v6() == IMDS_V6.parse::<Ipv6Addr>().unwrap()
        } else {
            let d = self.dst_v4();
            // The built-in metadata rule leaves DNS open (UDP and TCP 53):
            // GCP's resolver is the metadata address.
            let dns = d == [169, 254, 169, 254]
                && (self.proto == IPPROTO_TCP || self.proto == IPPROTO_UDP)
                && self.dport == 53;
            (BLOCKED_V4.contains(&d) && !dns)
                || (d == WIRESERVER
                    && self.proto == IPPROTO_TCP
                    && (self.dport == 80 || self.dport == 32526))
        };
        if blocked {
            return (DROP, MetadataBlocked);
        }
        let syn = self.flags & (SYN | ACK | RST | FIN) == SYN;
        if self.proto == IPPROTO_TCP && syn && SMTP_PORTS.contains(&self.dport) {
            (PASS, SmtpAllowed)
        } else {
            (PASS, Passed)
        }
    }
}

fn moved(
    before: &egress_loader::observe::counters::Snapshot,
    after: &egress_loader::observe::counters::Snapshot,
) -> Vec<CounterId> {
    CounterId::ALL
        .into_iter()
        .filter(|&id| after.get(id).packets != before.get(id).packets)
        .collect()
}

#[test]
fn random_well_formed_frames_match_the_policy() {
    require_privileges!();
    let c = std::cell::RefCell::new(Classifier::with_policy(GENEROUS));
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&spec(), |s| {
            let frame = s.frame();
            let before = c.borrow().counters();
            let verdict = c.borrow_mut().run(&frame);
            let after = c.borrow().counters();
            let (want_verdict, want_counter) = s.expected();
            prop_assert_eq!(verdict, want_verdict, "verdict for {:?}", s);
            prop_assert_eq!(
                moved(&before, &after),
                vec![want_counter],
                "counter for {:?}",
                s
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_bytes_never_confuse_the_classifier() {
    require_privileges!();
    let c = std::cell::RefCell::new(Classifier::with_policy(GENEROUS));
    let strategy = (
        prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()],
        proptest::collection::vec(any::<u8>(), 40..200),
    );
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(ether_type, payload)| {
            let frame = ethernet(ether_type, &[], &payload);
            let before = c.borrow().counters();
            let verdict = c.borrow_mut().run(&frame);
            let after = c.borrow().counters();
            let m = moved(&before, &after);
            prop_assert_eq!(m.len(), 1, "exactly one verdict counted");
            let dropped_as = m[0];
            if verdict == DROP {
                // A drop must name its reason: a blocked destination or an
                // evasive shape, never the rate limit (the burst is huge).
                if !matches!(dropped_as, MetadataBlocked | Evasive) {
                    return Err(TestCaseError::fail(format!("dropped as {dropped_as:?}")));
                }
            } else {
                prop_assert_eq!(verdict, PASS);
                prop_assert!(!dropped_as.drops());
            }
            Ok(())
        })
        .unwrap();
}
