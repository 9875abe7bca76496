//! The SMTP token bucket as GCRA: one "theoretical arrival time" (TAT) per
//! bucket, so an update is a single compare-and-swap of a u64.
//!
//! Contract (docs/design.md, the SMTP bucket): starting from a full bucket,
//! over any window of length `t`, admitted <= burst + rate * t; traffic
//! within the rate is never dropped.

/// How far `bpf_ktime_get_coarse_ns` may trail `bpf_ktime_get_ns` for the
/// coarse clock's "refused" to be trusted without the precise one: two ticks
/// at the slowest common HZ (100). The coarse clock is the timekeeper's value
/// at the last tick, so it normally trails by less than one; see
/// [`Gcra::refuses_through`] for why a longer lag cannot break the contract.
pub const COARSE_CLOCK_SLACK_NS: u64 = 20_000_000;

/// Parameters: one token every `emission_ns`, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    pub emission_ns: u64,
    /// `burst * emission_ns`.
    pub burst_window_ns: u64,
}

impl Gcra {
    /// `rate` tokens per `period_ns`, `burst` at once. Rounds the emission
    /// interval up, so rounding never admits more than the configured rate.
    /// `None` if the arguments are zero or overflow.
    pub fn new(rate: u64, period_ns: u64, burst: u64) -> Option<Self> {
        if rate == 0 || burst == 0 || period_ns == 0 {
            return None;
        }
        let emission_ns = period_ns.div_ceil(rate);
        let burst_window_ns = emission_ns.checked_mul(burst)?;
        Some(Self {
            emission_ns,
            burst_window_ns,
        })
    }

    /// Decides one arrival at `now` against a bucket whose TAT is `tat`
    /// (0 = never used = full). `Some(new_tat)` admits it and gives the value
    /// to store; `None` refuses it and the bucket stays as it was.
    #[inline(always)]
    pub fn admit(&self, tat: u64, now: u64) -> Option<u64> {
        let start = if tat > now { tat } else { now };
        let new_tat = start.saturating_add(self.emission_ns);
        if new_tat - now <= self.burst_window_ns {
            Some(new_tat)
        } else {
            None
        }
    }

    /// The earliest instant at which a bucket with this TAT admits an
    /// arrival: `admit(tat, t)` is `Some` exactly when `t >= earliest_admission(tat)`.
    #[inline(always)]
    pub fn earliest_admission(&self, tat: u64) -> u64 {
        tat.saturating_add(self.emission_ns)
            .saturating_sub(self.burst_window_ns)
    }

    /// Whether the bucket refuses every arrival up to `now + slack`. The
    /// classifier asks this with the coarse clock, which trails real time, so
    /// it can refuse a flood without reading the precise clock; when the
    /// answer is "no" it decides with the precise clock. A coarse clock that
    /// trails by more than `slack` can only refuse what the precise clock
    /// would admit, never admit more than the contract.
    #[inline(always)]
    pub fn refuses_through(&self, tat: u64, now: u64, slack: u64) -> bool {
        self.earliest_admission(tat) > now.saturating_add(slack)
    }

    /// Whether a bucket with this TAT is indistinguishable from a fresh one at
    /// `now` (full): such a bucket can be forgotten without giving anything away.
    pub fn is_full(&self, tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    const MINUTE: u64 = 60_000_000_000;

    #[test]
    fn like_iptables_limit_5_per_minute_burst_5() {
        let g = Gcra::new(5, MINUTE, 5).unwrap();
        assert_eq!(g.emission_ns, 12_000_000_000);
        let mut tat = 0;
        let now = 1_000;
        let mut admitted = 0;
        for _ in 0..10 {
            if let Some(t) = g.admit(tat, now) {
                tat = t;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        // One token comes back after one emission interval, not before.
        assert!(g.admit(tat, now + g.emission_ns - 1).is_none());
        assert!(g.admit(tat, now + g.emission_ns).is_some());
    }

    #[test]
    fn zero_parameters_are_refused() {
        assert!(Gcra::new(0, MINUTE, 5).is_none());
        assert!(Gcra::new(5, MINUTE, 0).is_none());
        assert!(Gcra::new(1, u64::MAX, 2).is_none());
    }

    #[test]
    fn emission_rounds_up() {
        let g = Gcra::new(3, 1_000_000_000, 1).unwrap();
        assert_eq!(g.emission_ns, 333_333_334);
    }

    fn run(g: &Gcra, times: &[u64]) -> Vec<bool> {
        let mut tat = 0u64;
        times
            .iter()
            .map(|&t| match g.admit(tat, t) {
                Some(n) => {
                    tat = n;
                    true
                }
                None => false,
            })
            .collect()
    }

    proptest! {
        /// Over every window [a, b] of arrivals: admitted <= burst + rate * (b - a).
        #[test]
        fn never_admits_more_than_burst_plus_rate(
            rate in 1u64..100,
            burst in 1u64..20,
            gaps in proptest::collection::vec(0u64..5_000_000_000, 1..200),
        ) {
            let g = Gcra::new(rate, MINUTE, burst).unwrap();
            let mut t = 1u64;
            let times: Vec<u64> = gaps.iter().map(|d| { t += d; t }).collect();
            let ok = run(&g, &times);
            for a in 0..times.len() {
                let mut admitted = 0u64;
                for b in a..times.len() {
                    if ok[b] { admitted += 1; }
                    let window = times[b] - times[a];
                    // rate * window / period, as a real number: compare scaled.
                    let allowed_scaled = burst as u128 * MINUTE as u128 + rate as u128 * window as u128;
                    prop_assert!(admitted as u128 * MINUTE as u128 <= allowed_scaled,
                        "window {}..{}: admitted {} > burst {} + rate {} * {}ns", a, b, admitted, burst, rate, window);
                }
            }
        }

        /// Arrivals spaced at least one emission interval apart are all admitted.
        #[test]
        fn sparse_traffic_within_the_rate_is_never_dropped(
            rate in 1u64..100,
            burst in 1u64..20,
            extra in proptest::collection::vec(0u64..1_000_000_000, 1..100),
        ) {
            let g = Gcra::new(rate, MINUTE, burst).unwrap();
            let mut t = 1u64;
            let times: Vec<u64> = extra.iter().map(|d| { t += g.emission_ns + d; t }).collect();
            prop_assert!(run(&g, &times).iter().all(|&x| x));
        }

        /// `earliest_admission` is exactly where `admit` starts to say yes.
        #[test]
        fn earliest_admission_is_exact(
            rate in 1u64..1000,
            burst in 1u64..50,
            tat in 0u64..1_000_000_000_000,
            now in 0u64..1_000_000_000_000,
        ) {
            let g = Gcra::new(rate, MINUTE, burst).unwrap();
            prop_assert_eq!(g.admit(tat, now).is_some(), now >= g.earliest_admission(tat));
        }

        /// A coarse stamp that trails real time by at most the slack: when it
        /// says "refused", the precise clock refuses too, and it says so
        /// exactly when the bucket would still refuse at the end of the slack.
        /// Stamps are drawn around the bucket's earliest admission, where the
        /// answer changes.
        #[test]
        fn a_coarse_refusal_is_a_precise_refusal(
            rate in 1u64..1000,
            burst in 1u64..50,
            tat in 0u64..1_000_000_000_000,
            before in 0u64..3 * COARSE_CLOCK_SLACK_NS,
            lag in 0u64..=COARSE_CLOCK_SLACK_NS,
        ) {
            let g = Gcra::new(rate, MINUTE, burst).unwrap();
            let coarse = g.earliest_admission(tat).saturating_sub(before);
            let refused = g.refuses_through(tat, coarse, COARSE_CLOCK_SLACK_NS);
            prop_assert_eq!(refused, g.admit(tat, coarse + COARSE_CLOCK_SLACK_NS).is_none());
            if refused {
                prop_assert!(g.admit(tat, coarse + lag).is_none());
            }
        }

        /// A burst at one instant admits exactly `burst`.
        #[test]
        fn a_full_bucket_admits_exactly_burst_at_once(burst in 1u64..50, n in 0u64..100) {
            let g = Gcra::new(5, MINUTE, burst).unwrap();
            let times: Vec<u64> = (0..n).map(|_| 42).collect();
            let admitted = run(&g, &times).iter().filter(|&&x| x).count() as u64;
            prop_assert_eq!(admitted, n.min(burst));
        }
    }
}
