//! The host's side of the differential tests: the decision the classifier
//! runs (egress-ebpf-common), run on a byte slice against an in-memory model
//! of the maps that the loader fills from the same policy.

use egress_ebpf_common::{
    counters::CounterId,
    decide::{Action, Decision, decide},
    model::PolicyModel,
    parse::parse,
};
use egress_loader::policy::{Overrides, Policy, apply};

use crate::test_run::{DROP, PASS};

/// The maps' contents for `policy_toml` (what `policy::apply` writes), as
/// a [`PolicyModel`] with full buckets.
pub fn model(policy_toml: &str) -> PolicyModel {
    let p = Policy::from_toml(policy_toml, &Overrides::default()).expect("valid policy");
    let (v4, v6) = apply::trie_entries(&p).expect("trie entries");
    PolicyModel::new(v4, v6, apply::policy_config(&p))
}

/// What the host decides for `frame`: the tc verdict as BPF_PROG_TEST_RUN
/// returns it, the counter and the rule.
pub fn judge(model: &PolicyModel, frame: &[u8]) -> (u32, CounterId, u16) {
    let d = decide(&parse(frame), model);
    (verdict(&d), d.verdict, d.rule)
}

/// The tc return code of a decision.
pub fn verdict(d: &Decision) -> u32 {
    match d.action {
        Action::Pass => PASS,
        Action::Drop => DROP,
    }
}
