//! How much to measure: repetitions, durations and rule-list sizes for the
//! full run and for `--quick`.

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub sections: Vec<Section>,
    /// Repetitions of each configuration in the main comparison.
    pub reps_main: u32,
    /// Repetitions of each configuration in the scaling runs.
    pub reps_scaling: u32,
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
            ]
        } else {
            only.to_vec()
        };
        if quick {
            Self {
                quick,
                sections,
                reps_main: reps.unwrap_or(2),
                reps_scaling: reps.unwrap_or(2),
                run_main: Duration::from_millis(1500),
                iperf_secs: 2,
                run_scaling: Duration::from_millis(1000),
                sizes: vec![1, 1000, 10_000],
                test_run_repeat: 200_000,
                test_run_rounds: 3,
                bridges: 50,
            }
        } else {
            Self {
                quick,
                sections,
                reps_main: reps.unwrap_or(7),
                reps_scaling: reps.unwrap_or(5),
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
            "{} run: main {} reps x {:.1} s (iperf3 {} s), scaling {} reps x {:.1} s at {:?} CIDRs, \
             test_run {} x {} repeats",
            if self.quick { "quick" } else { "full" },
            self.reps_main,
            self.run_main.as_secs_f64(),
            self.iperf_secs,
            self.reps_scaling,
            self.run_scaling.as_secs_f64(),
            self.sizes,
            self.test_run_rounds,
            self.test_run_repeat,
        )
    }
}
