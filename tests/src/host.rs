//! The host's side of the differential tests: the decision the classifier
//! runs (egress-ebpf-common), run on a byte slice against an in-memory model
//! of the maps that the loader fills from the same policy.

use egress_ebpf_common::{
    counters::CounterId,
    decide::{Action, Decision, PolicyView, decide},
    model::PolicyModel,
    parse::{Parsed, parse},
    reply::{self, Plan, VecFrame},
    route::{self, RouteVerdict},
};
use egress_loader::policy::{Overrides, Policy, apply};

use crate::test_run::{DROP, PASS, REDIRECT};

/// The maps' contents for `policy_toml` (what `policy::apply` writes), as
/// a [`PolicyModel`] with full buckets.
pub fn model(policy_toml: &str) -> PolicyModel {
    let p = Policy::from_toml(policy_toml, &Overrides::default()).expect("valid policy");
    let (v4, v6) = apply::trie_entries(&p).expect("trie entries");
    PolicyModel::new(v4, v6, apply::policy_config(&p))
}

/// What the host decides for `frame`: the tc verdict as BPF_PROG_TEST_RUN
/// returns it, the counter and the rule. A reject is taken to be within
/// the reply budget.
pub fn judge(model: &PolicyModel, frame: &[u8]) -> (u32, CounterId, u16) {
    let parsed = parse(frame);
    let d = decide(&parsed, model);
    // The classifiers hand a packet they pass that may carry a source route
    // to `egress_route`, which judges each address of the route: a blocked
    // one is counted against its rule and dropped (passed in dry-run), with
    // no reply (egress-ebpf/src/route.rs).
    if !d.verdict.drops() && route::may_carry(&parsed) {
        let r = route::judge(frame, model, &parsed);
        if r != RouteVerdict::CLEAN {
            let dry_run = model.config().is_some_and(|c| c.dry_run != 0);
            return (if dry_run { PASS } else { DROP }, r.verdict, r.rule);
        }
    }
    (verdict(&d, frame, &parsed), d.verdict, d.rule)
}

/// The tc return code of a decision: a reject whose reply is sent is a
/// redirect (on the loopback device BPF_PROG_TEST_RUN runs on, whose MAC
/// is zero: a frame to MAC zero is "to this host").
pub fn verdict(d: &Decision, frame: &[u8], parsed: &Parsed) -> u32 {
    match d.action {
        Action::Pass => PASS,
        Action::Drop => DROP,
        Action::Reject => match reply_to(frame, parsed) {
            Some(_) => REDIRECT,
            None => DROP,
        },
    }
}

/// The reply the kernel builds for a rejected `frame` (if it sends one), as
/// the shared builder makes it on the host.
pub fn reply_to(frame: &[u8], parsed: &Parsed) -> Option<Vec<u8>> {
    let mut f = VecFrame::new(frame);
    match reply::plan(&f, parsed) {
        plan @ (Plan::Reset | Plan::Unreachable) => {
            reply::build(&mut f, parsed, plan).then_some(f.bytes)
        }
        Plan::Refused | Plan::Unanswerable => None,
    }
}
