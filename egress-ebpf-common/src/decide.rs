//! The per-packet rules, in order: blocked destination, evasive shape,
//! rate-limited connection attempt, otherwise pass. Written once against
//! [`PolicyView`], the policy as the decision sees it: the classifier
//! implements it over its maps, the host over an in-memory model
//! (`model::PolicyModel`), so both run this very code.

use crate::{
    bucket::Gcra,
    config::{OVER_LIMIT_REJECT, PolicyConfig},
    counters::CounterId,
    parse::{Family, Parsed, Transport},
    rules::{BlockRule, NO_RULE, RuleHit},
};

/// What the decision reads and charges. Every method is called at most once
/// per packet, and only on the paths that need it: a packet to an open
/// destination that is no connection attempt to a limited port costs one
/// trie lookup.
pub trait PolicyView {
    /// The longest blocked prefix holding `dst`, if any.
    fn blocked_v4(&self, dst: &[u8; 4]) -> Option<&BlockRule>;
    fn blocked_v6(&self, dst: &[u8; 16]) -> Option<&BlockRule>;
    /// The policy config in force; `None` when none is (the loader never
    /// wrote the active slot). Read by connection attempts to a port that may
    /// be limited, and by drops (for dry-run).
    fn config(&self) -> Option<&PolicyConfig>;
    /// Charges one connection attempt from `src` (v4-mapped for IPv4) to the
    /// SMTP bucket of `scope` (`config::SCOPE_*`); whether it is admitted.
    fn admit_smtp(&self, gcra: &Gcra, scope: u8, src: &[u8; 16]) -> bool;

    /// Whether the sender may reach the destinations of block rule `rule`
    /// anyway (an exception of its endpoint). Asked only after a block rule
    /// matched, so it costs the pass path nothing; a view that cannot tell
    /// who sent the packet (the bridge backstop) keeps the default: no.
    #[inline(always)]
    fn excepted(&self, _rule: u16) -> bool {
        false
    }
}

/// What happens to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Handed on untouched (to the next program on the hook).
    Pass,
    Drop,
    /// Dropped, and the sender answered from the hook (a TCP reset or an
    /// ICMP port unreachable, `reply`), so its `connect()` fails at once. A
    /// reply the hook cannot or must not send leaves a silent drop.
    Reject,
}

impl Action {
    /// Whether the packet goes no further (a drop or a reject).
    #[inline(always)]
    pub const fn stops(self) -> bool {
        !matches!(self, Action::Pass)
    }
}

/// The decision for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'c> {
    /// Which rule decided, as the counter it goes to.
    pub verdict: CounterId,
    /// Block rule that matched, for the per-rule counters, or `NO_RULE`.
    /// Not an `Option`: LLVM may compute with the undefined payload of a
    /// `None`, and the verifier rejects arithmetic on whatever register
    /// (here the ctx pointer) held it.
    pub rule: u16,
    /// Drop or Reject (the matching rule's action, `smtp.over_limit`) for a
    /// dropping verdict, unless the policy is in dry-run.
    pub action: Action,
    /// The config this decision read (a drop's report needs it too: one
    /// lookup per packet at most); `None` if it read none or none is in force.
    pub config: Option<&'c PolicyConfig>,
}

impl Decision<'_> {
    #[inline(always)]
    const fn pass() -> Self {
        Self {
            verdict: CounterId::Passed,
            rule: NO_RULE,
            action: Action::Pass,
            config: None,
        }
    }

    /// A dropping verdict let through because the policy is in dry-run.
    #[inline(always)]
    pub fn is_dry_run(&self) -> bool {
        self.verdict.drops() && self.action == Action::Pass
    }
}

#[inline(always)]
pub fn decide<'v, V: PolicyView + ?Sized>(parsed: &Parsed, view: &'v V) -> Decision<'v> {
    let blocked = match parsed.family {
        Family::NotIp => return Decision::pass(),
        Family::V4 => view.blocked_v4(&parsed.dst_v4()),
        Family::V6 => view.blocked_v6(&parsed.dst),
    };
    judge(
        view,
        blocked,
        &parsed.transport,
        parsed.evasive,
        &parsed.src,
    )
}

#[inline(always)]
fn judge<'v, V: PolicyView + ?Sized>(
    view: &'v V,
    blocked: Option<&BlockRule>,
    t: &Transport,
    evasive: bool,
    src: &[u8; 16],
) -> Decision<'v> {
    let (verdict, rule, reject, config) = rules(view, blocked, t, evasive, src);
    if !verdict.drops() {
        return Decision {
            verdict,
            rule,
            action: Action::Pass,
            config,
        };
    }
    let config = match config {
        Some(c) => Some(c),
        None => view.config(),
    };
    // No config in force: blocked destinations still apply (see PolicyConfig::valid).
    let dry_run = match config {
        Some(c) => c.dry_run != 0,
        None => false,
    };
    let action = if dry_run {
        Action::Pass
    } else if reject {
        Action::Reject
    } else {
        Action::Drop
    };
    Decision {
        verdict,
        rule,
        action,
        config,
    }
}

/// The verdict, the matching rule, whether a drop is to be a reject, and
/// the config if it was read on the way.
#[inline(always)]
fn rules<'v, V: PolicyView + ?Sized>(
    view: &'v V,
    blocked: Option<&BlockRule>,
    t: &Transport,
    evasive: bool,
    src: &[u8; 16],
) -> (CounterId, u16, bool, Option<&'v PolicyConfig>) {
    // A blocked destination the sender's exception opens is judged by the
    // remaining rules like any other; where none applies it counts as
    // `Excepted`, not `Passed`.
    let mut passed = CounterId::Passed;
    let hit = match blocked {
        Some(rule) => rule.matching_rule(t.proto, t.dport),
        None => RuleHit::NONE,
    };
    if hit.is_hit() {
        if !view.excepted(hit.rule) {
            return (CounterId::MetadataBlocked, hit.rule, hit.rejects(), None);
        }
        passed = CounterId::Excepted;
    }
    if evasive {
        return (CounterId::Evasive, NO_RULE, false, None);
    }
    if !t.dport.is_known() || !t.is_connection_attempt() {
        return (passed, NO_RULE, false, None);
    }
    let Some(config) = view.config() else {
        return (passed, NO_RULE, false, None);
    };
    if !config.is_smtp_port(t.dport.value()) {
        return (passed, NO_RULE, false, Some(config));
    }
    let gcra = Gcra {
        emission_ns: config.emission_ns,
        burst_window_ns: config.burst_window_ns,
    };
    if view.admit_smtp(&gcra, config.scope, src) {
        (CounterId::SmtpAllowed, NO_RULE, false, Some(config))
    } else {
        let reject = config.smtp_over_limit == OVER_LIMIT_REJECT;
        (CounterId::SmtpLimited, NO_RULE, reject, Some(config))
    }
}
