//! Arbitrary bytes as a frame: the classifier's parser (the code the kernel
//! runs, egress-ebpf-common) must never panic, must agree with etherparse on
//! every verdict-relevant field (tests/src/reference.rs, compiled here as a
//! module of its own), and the decision must run on whatever it parsed.
#![no_main]

use std::collections::BTreeMap;

use egress_ebpf_common::{
    bucket::Gcra,
    config::{PolicyConfig, SCOPE_PER_SOURCE},
    decide::{Action, decide},
    model::PolicyModel,
    parse::parse,
    rules::{BlockRule, NO_RULE, PROTO_TCP, PortMatch},
};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/src/reference.rs"]
mod reference;

/// The metadata address for every protocol, WireServer for TCP 80 only, the
/// AWS IPv6 address; SMTP on 25 at a burst of 2 per source, a small source
/// table (the overflow path), events off.
fn policy() -> PolicyModel {
    let mut all = BlockRule::empty();
    all.all_rule_id = 0;
    let mut wire = BlockRule::empty();
    wire.matches[0] = PortMatch {
        port: 80,
        proto: PROTO_TCP,
        flags: 0,
        rule_id: 1,
    };
    wire.match_count = 1;
    let mut v4 = BTreeMap::new();
    v4.insert((32, [169, 254, 169, 254]), all);
    v4.insert((32, [168, 63, 129, 16]), wire);
    let mut v6 = BTreeMap::new();
    let mut aws = [0u8; 16];
    aws[..4].copy_from_slice(&[0xfd, 0x00, 0x0e, 0xc2]);
    aws[14..].copy_from_slice(&[0x02, 0x54]);
    v6.insert((128, aws), all);
    let g = Gcra::new(1, 3_600_000_000_000, 2).expect("valid bucket");
    let mut c = PolicyConfig::empty();
    c.emission_ns = g.emission_ns;
    c.burst_window_ns = g.burst_window_ns;
    c.smtp_ports[0] = 25;
    c.smtp_port_count = 1;
    c.scope = SCOPE_PER_SOURCE;
    c.valid = 1;
    PolicyModel::new(v4, v6, c).with_source_capacity(8)
}

thread_local! {
    static POLICY: PolicyModel = policy();
}

fuzz_target!(|frame: &[u8]| {
    if let Err(e) = reference::check(frame) {
        panic!("{e}");
    }
    POLICY.with(|m| {
        let d = decide(&parse(frame), m);
        // A drop names its reason; nothing is dropped that no rule matched.
        assert_eq!(d.action == Action::Drop, d.verdict.drops());
        assert!(
            d.rule == NO_RULE
                || d.verdict == egress_ebpf_common::counters::CounterId::MetadataBlocked
        );
    });
});
