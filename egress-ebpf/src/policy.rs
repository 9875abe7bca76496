//! The per-packet rules, in order: blocked destination, evasive shape,
//! rate-limited connection attempt, otherwise pass.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use egress_ebpf_common::{
    bucket::Gcra,
    config::{PolicyConfig, SCOPE_PER_SOURCE},
    counters::CounterId,
    events::{DropEvent, FAMILY_V4, FAMILY_V6},
    packet::Transport,
    rules::{BlockRule, NO_RULE},
};

use crate::{
    Outcome, bucket, events,
    maps::{ACTIVE_CONFIG, BLOCKED_V4, BLOCKED_V6, POLICY_CONFIG},
    parse::{self, Parsed},
};

#[inline(always)]
pub fn classify(ctx: &TcContext) -> Outcome {
    // Only drops read the config (in `report`): most packets pass.
    let (counter, rule, dry_run) = match parse::parse(ctx) {
        Parsed::Other => (CounterId::Passed, NO_RULE, false),
        Parsed::V4(ip) => {
            let mut src = [0u8; 16];
            src[10] = 0xff;
            src[11] = 0xff;
            src[12..].copy_from_slice(&ip.src);
            let blocked = BLOCKED_V4.get(Key::new(32, ip.dst));
            let (counter, rule) = decide(blocked, &ip.transport, ip.evasive, &src);
            let mut dry_run = false;
            if counter.drops() {
                let mut dst = [0u8; 16];
                dst[10] = 0xff;
                dst[11] = 0xff;
                dst[12..].copy_from_slice(&ip.dst);
                dry_run = report(ctx, counter, rule, FAMILY_V4, &src, &dst, &ip.transport);
            }
            (counter, rule, dry_run)
        }
        Parsed::V6(ip) => {
            let blocked = BLOCKED_V6.get(Key::new(128, ip.dst));
            let (counter, rule) = decide(blocked, &ip.transport, ip.evasive, &ip.src);
            let mut dry_run = false;
            if counter.drops() {
                dry_run = report(
                    ctx,
                    counter,
                    rule,
                    FAMILY_V6,
                    &ip.src,
                    &ip.dst,
                    &ip.transport,
                );
            }
            (counter, rule, dry_run)
        }
    };
    Outcome {
        counter,
        rule,
        dry_run,
    }
}

/// Reports a drop (the event is built only here, off the pass path) and
/// says whether the policy is in dry-run: one config lookup for both.
#[inline(always)]
fn report(
    ctx: &TcContext,
    counter: CounterId,
    rule: u16,
    family: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    t: &Transport,
) -> bool {
    let Some(config) = active_config() else {
        return false;
    };
    events::report(
        config,
        DropEvent {
            timestamp_ns: 0,
            ifindex: unsafe { (*ctx.skb.skb).ifindex },
            rule_id: rule,
            sport: t.sport,
            dport: t.dport.value(),
            verdict: counter as u8,
            family,
            proto: t.proto,
            flags: 0,
            _pad: [0; 2],
            src: *src,
            dst: *dst,
        },
    );
    config.dry_run != 0
}

#[inline(always)]
fn active_config() -> Option<&'static PolicyConfig> {
    let slot = *ACTIVE_CONFIG.get(0)?;
    let config = POLICY_CONFIG.get(slot)?;
    // A slot the loader never wrote limits nothing (blocked destinations still apply).
    if config.valid == 0 {
        None
    } else {
        Some(config)
    }
}

#[inline(always)]
fn decide(
    blocked: Option<&BlockRule>,
    t: &Transport,
    evasive: bool,
    src: &[u8; 16],
) -> (CounterId, u16) {
    if let Some(rule) = blocked
        && let Some(id) = rule.matching_rule(t.proto, t.dport)
    {
        return (CounterId::MetadataBlocked, id);
    }
    if evasive {
        return (CounterId::Evasive, NO_RULE);
    }
    if !t.dport.is_known() {
        return (CounterId::Passed, NO_RULE);
    }
    let port = t.dport.value();
    if !t.is_connection_attempt() {
        return (CounterId::Passed, NO_RULE);
    }
    let Some(config) = active_config() else {
        return (CounterId::Passed, NO_RULE);
    };
    if !config.is_smtp_port(port) {
        return (CounterId::Passed, NO_RULE);
    }
    let gcra = Gcra {
        emission_ns: config.emission_ns,
        burst_window_ns: config.burst_window_ns,
    };
    // Refusals on the coarse clock, admissions on the precise one (Clock).
    let mut clock = bucket::Clock::now();
    let admitted = if config.scope == SCOPE_PER_SOURCE {
        bucket::admit_per_source(&gcra, src, &mut clock)
    } else {
        bucket::admit_global(&gcra, &mut clock)
    };
    if admitted {
        (CounterId::SmtpAllowed, NO_RULE)
    } else {
        (CounterId::SmtpLimited, NO_RULE)
    }
}
