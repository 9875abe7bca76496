//! How much to measure: repetitions (a minimum, then more until every ratio
//! is precise enough or the time budget is spent), durations and rule-list
//! sizes for the full run and for `--quick`.

use std::time::Duration;

use serde::Serialize;

/// A part of the run that `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// BPF_PROG_TEST_RUN cost of the classifier minus the empty one.
    ProgCost,
    /// No filter / seed iptables rules / the filter on four workloads.
    Main,
    /// 1..10,000 blocked CIDRs: iptables rules, ipset, the filter.
    Scaling,
    /// In-kernel run time per packet during traffic (BPF_ENABLE_STATS).
    RunTime,
    /// The loader's resident memory and its maps' memory.
    Footprint,
    /// The endpoint program with the bridge's fast exit against the bridge
    /// program alone (test_run and run-time stats), attaching 100
    /// endpoints, memory with 100.
    Endpoints,
    /// The newer paths: host-network CRR and UDP through the cgroup hooks,
    /// the reject path's cost per packet, `docker network create` to
    /// attached.
    Paths,
}

/// The precision every ratio to no filter is repeated for: its 95%
/// bootstrap interval within ±2% of its median.
pub const PRECISION: f64 = 0.02;

/// How many interleaved repetitions a comparison runs: at least `min`,
/// then more until every ratio meets [`PRECISION`], as long as the next
/// repetition still fits in `budget` and `max` is not reached.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Repeat {
    pub min: u32,
    pub max: u32,
    #[serde(serialize_with = "secs")]
    pub budget: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Repeat {
    /// Exactly `n` repetitions, whatever the precision (`--reps N`).
    pub fn fixed(n: u32) -> Self {
        Self {
            min: n,
            max: n,
            budget: Duration::from_secs(86_400),
        }
    }

    pub fn describe(&self) -> String {
        if self.min == self.max {
            format!("{} reps", self.min)
        } else {
            format!(
                "{}..{} reps within {:.0} s",
                self.min,
                self.max,
                self.budget.as_secs_f64()
            )
        }
    }

    /// Whether to run another repetition after `done` of them took
    /// `elapsed`, given whether every ratio is already precise enough.
    pub fn another(&self, done: u32, elapsed: Duration, precise: bool) -> bool {
        if done < self.min {
            return true;
        }
        if done >= self.max || precise {
            return false;
        }
        // The next one must fit: assume it takes as long as the mean so far.
        let per = elapsed / done.max(1);
        elapsed + per <= self.budget
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub sections: Vec<Section>,
    /// Repetitions of the main comparison.
    pub main: Repeat,
    /// Repetitions of the scaling comparison.
    pub scaling: Repeat,
    /// Repetitions of the host-network (cgroup hooks) comparison.
    pub hostnet: Repeat,
    /// Length of one traffic run (UDP, CRR, RR) in the main comparison.
    pub run_main: Duration,
    /// Length of one iperf3 run in the main comparison (whole seconds).
    pub iperf_secs: u32,
    /// Length of one traffic run in the scaling section.
    pub run_scaling: Duration,
    /// Blocked-list sizes for the scaling section.
    pub sizes: Vec<usize>,
    /// BPF_PROG_TEST_RUN repeat count, and how many such runs per frame.
    pub test_run_repeat: u32,
    pub test_run_rounds: u32,
    /// Bridges created to watch the loader reattach.
    pub bridges: usize,
}

impl Plan {
    pub fn new(quick: bool, reps: Option<u32>, only: &[Section]) -> Self {
        let sections = if only.is_empty() {
            vec![
                Section::ProgCost,
                Section::Main,
                Section::Scaling,
                Section::RunTime,
                Section::Footprint,
                Section::Endpoints,
                Section::Paths,
            ]
        } else {
            only.to_vec()
        };
        let adaptive = |min, max, budget_secs| {
            reps.map_or(
                Repeat {
                    min,
                    max,
                    budget: Duration::from_secs(budget_secs),
                },
                Repeat::fixed,
            )
        };
        if quick {
            Self {
                quick,
                sections,
                main: adaptive(3, 12, 30),
                scaling: adaptive(2, 2, 30),
                hostnet: adaptive(3, 12, 12),
                run_main: Duration::from_millis(500),
                iperf_secs: 1,
                run_scaling: Duration::from_millis(500),
                sizes: vec![1, 10_000],
                test_run_repeat: 200_000,
                test_run_rounds: 3,
                bridges: 50,
            }
        } else {
            Self {
                quick,
                sections,
                main: adaptive(5, 40, 300),
                scaling: adaptive(3, 12, 150),
                hostnet: adaptive(5, 40, 45),
                run_main: Duration::from_secs(3),
                iperf_secs: 3,
                run_scaling: Duration::from_secs(2),
                sizes: vec![1, 100, 1000, 10_000],
                test_run_repeat: 1_000_000,
                test_run_rounds: 5,
                bridges: 50,
            }
        }
    }

    pub fn has(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }

    /// The largest blocked list measured (10,000 in both modes).
    pub fn max_size(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(10_000)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} run: main {} x {:.1} s (iperf3 {} s), scaling {} x {:.1} s at {:?} CIDRs, \
             host network {}, test_run {} x {} repeats; repeating until every ratio's 95% interval \
             is within ±{:.0}%",
            if self.quick { "quick" } else { "full" },
            self.main.describe(),
            self.run_main.as_secs_f64(),
            self.iperf_secs,
            self.scaling.describe(),
            self.run_scaling.as_secs_f64(),
            self.sizes,
            self.hostnet.describe(),
            self.test_run_rounds,
            self.test_run_repeat,
            PRECISION * 100.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_until_precise_or_out_of_budget() {
        let r = Repeat {
            min: 3,
            max: 10,
            budget: Duration::from_secs(60),
        };
        let s = Duration::from_secs;
        // Below the minimum: always, even when precise.
        assert!(r.another(2, s(50), true));
        // Precise enough: stop.
        assert!(!r.another(3, s(15), true));
        // Not precise, the next one fits (15 s each, 45 + 15 <= 60).
        assert!(r.another(3, s(45), false));
        // Not precise, the next one would not fit.
        assert!(!r.another(3, s(48), false));
        // The cap.
        assert!(!r.another(10, s(10), false));
        // --reps N: exactly N.
        let f = Repeat::fixed(4);
        assert!(f.another(3, s(1000), true));
        assert!(!f.another(4, s(1), false));
    }
}
