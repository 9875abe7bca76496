//! The same frames, with the same policy, through the kernel program
//! (BPF_PROG_TEST_RUN: the code as the verifier accepted it) and through the
//! host's copy of the decision (egress-ebpf-common on a byte slice, against
//! the model of the maps the loader fills): the same verdict, the same
//! counter, the same rule. The adversarial corpus, then structured random
//! frames under policies that reach every decision path.

use crate::frame_strategy::frame_strategy;
use egress_ebpf_common::{counters::CounterId, rules::NO_RULE};
use egress_tests::frames::*;
use egress_tests::{
    corpus,
    host::{judge, model},
    test_run::Classifier,
};
use egress_tests::{require_privileges, test_name};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::net::Ipv4Addr;

/// Runs `frame` through both; `Ok(false)` if test_run refused the frame.
fn compare(
    kernel: &mut Classifier,
    host: &egress_ebpf_common::model::PolicyModel,
    what: &str,
    frame: &[u8],
) -> Result<bool, String> {
    let before = kernel.counters();
    let Some(verdict) = kernel.try_run(frame) else {
        return Ok(false);
    };
    let after = kernel.counters();
    // The host decides after the kernel: both buckets see the same history.
    let (host_verdict, host_counter, host_rule) = judge(host, frame);
    let moved: Vec<CounterId> = CounterId::ALL
        .into_iter()
        .filter(|&id| after.get(id).packets != before.get(id).packets)
        .collect();
    let rules_moved: Vec<u16> = after
        .rules
        .iter()
        .filter(|r| {
            let b = before.rules.iter().find(|b| b.rule_id == r.rule_id);
            r.packets != b.map_or(0, |b| b.packets)
        })
        .map(|r| r.rule_id)
        .collect();
    let host_rules: Vec<u16> = if host_rule == NO_RULE {
        vec![]
    } else {
        vec![host_rule]
    };
    if (verdict, moved.as_slice(), rules_moved.as_slice())
        != (host_verdict, &[host_counter][..], host_rules.as_slice())
    {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "{what}: kernel {verdict:#x} {moved:?} rules {rules_moved:?}, \
             host {host_verdict:#x} {host_counter:?} rules {host_rules:?}\n  frame: {hex}"
        ));
    }
    Ok(true)
}

#[test]
fn the_adversarial_corpus_in_kernel_and_host() {
    require_privileges!();
    for table in corpus::all() {
        let mut kernel = Classifier::with_policy(table.policy);
        let host = model(table.policy);
        for k in &table.cases {
            let ran = compare(
                &mut kernel,
                &host,
                &format!("{}: {}", table.name, k.label()),
                &k.frame,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(ran, "{}: test_run refused {}", table.name, k.what);
        }
    }
}

/// Connection attempts from two sources until both buckets refuse, in
/// each scope, enforcing and in dry-run: the limited path, which random
/// frames rarely reach.
#[test]
fn smtp_bucket_sequences_in_kernel_and_host() {
    require_privileges!();
    let syn_from = |src: [u8; 4], dport: u16| {
        let mut h = V4::new(Ipv4Addr::from([198, 51, 100, 25]), IPPROTO_TCP);
        h.src = Ipv4Addr::from(src);
        v4_frame(&h, &tcp(40000, dport, SYN))
    };
    for policy in [
        "[smtp]\nrate = \"1/hour\"\nburst = 3\n",
        "[smtp]\nrate = \"1/hour\"\nburst = 3\nscope = \"per-source\"\n",
        "dry_run = true\n[smtp]\nrate = \"1/hour\"\nburst = 3\nscope = \"per-source\"\n",
    ] {
        let mut kernel = Classifier::with_policy(policy);
        let host = model(policy);
        for i in 0..6 {
            for src in [[172, 17, 0, 2], [172, 17, 0, 3]] {
                let frame = syn_from(src, if i % 2 == 0 { 25 } else { 587 });
                let what = format!("{policy:?}: attempt {i} from {src:?}");
                assert!(
                    compare(&mut kernel, &host, &what, &frame).unwrap_or_else(|e| panic!("{e}"))
                );
            }
        }
        let c = kernel.counters();
        assert!(
            c.get(CounterId::SmtpLimited).packets > 0,
            "{policy:?}: nothing limited"
        );
    }
}

/// The default blocked set, plus a UDP port rule, an IPv4 /8 and an IPv6
/// /32 rule; tight SMTP buckets that do not refill during the test.
const BLOCKS: &str = "\
[[block]]\ncidr = \"169.254.169.254/32\"\n\
[[block]]\ncidr = \"169.254.170.2/32\"\n\
[[block]]\ncidr = \"fd00:ec2::254/128\"\n\
[[block]]\ncidr = \"168.63.129.16/32\"\nprotocol = \"tcp\"\nports = [80, 32526]\n\
[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"udp\"\nports = [53]\n\
[[block]]\ncidr = \"2001:db8::/32\"\nprotocol = \"udp\"\n";

fn random_frames_agree(test: &str, policy: &str) {
    let kernel = std::cell::RefCell::new(Classifier::with_policy(policy));
    let host = model(policy);
    let (ran, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        // A failure is reported with its frame; shrinking would replay
        // frames against buckets the first run already charged.
        max_shrink_iters: 0,
        ..Config::default()
    });
    runner
        .run(&frame_strategy(), |frame| {
            match compare(&mut kernel.borrow_mut(), &host, "random frame", &frame) {
                Ok(true) => ran.set(ran.get() + 1),
                Ok(false) => refused.set(refused.get() + 1),
                Err(e) => return Err(TestCaseError::fail(e)),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: {} frames compared, {} refused by test_run",
        ran.get(),
        refused.get()
    );
    assert!(
        ran.get() > 10 * refused.get(),
        "test_run refused too many frames"
    );
}

#[test]
fn random_frames_enforcing_global_bucket() {
    require_privileges!();
    random_frames_agree(
        test_name!(),
        &format!("{BLOCKS}[smtp]\nrate = \"1/hour\"\nburst = 5\n"),
    );
}

#[test]
fn random_frames_dry_run_per_source_buckets() {
    require_privileges!();
    random_frames_agree(
        test_name!(),
        &format!(
            "dry_run = true\n{BLOCKS}[smtp]\nrate = \"1/hour\"\nburst = 2\nscope = \"per-source\"\n"
        ),
    );
}
