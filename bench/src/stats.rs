//! Medians, paired ratios and their bootstrap confidence intervals: pure
//! functions, so that the intervals in a report can be recomputed from the
//! raw samples in its JSON, exactly (fixed seed, own generator).
//!
//! The unit of resampling is the *repetition*: every repetition measures
//! every configuration back to back, the ratio is taken within the
//! repetition (configuration ÷ no filter measured minutes or seconds
//! apart, under the same load), and the bootstrap resamples those ratios.
//! Resampling the two configurations' values independently would throw the
//! pairing away and put the machine's drift back into the interval.

use serde::Serialize;

/// Confidence level of every interval in the report.
pub const CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 4000;
/// The generator's seed: the same samples always give the same interval.
pub const SEED: u64 = 0x0014_5EED;

/// Median of `v` (mean of the two middle values for an even count); NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    median_sorted(&s)
}

fn median_sorted(s: &[f64]) -> f64 {
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly
/// between order statistics (Hyndman and Fan's type 7, R's default).
pub fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let h = (s.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (i, frac) = (h.floor() as usize, h - h.floor());
    match s.get(i + 1) {
        Some(next) => s[i] + frac * (next - s[i]),
        None => s[i],
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small generator whose
/// sequence is fixed by its seed for good. `rand`'s `StdRng` does not
/// promise the same sequence across its releases, and a report's intervals
/// should recompute to the same digits.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below
    /// n / 2^32, nothing at the sample counts used here).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in [0, 1).
    #[cfg(test)]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    #[cfg(test)]
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Percentile-bootstrap interval of the median of `v`: `resamples` times,
/// draw `v.len()` values from `v` with replacement and take their median;
/// the interval holds the central `confidence` of those medians. `None`
/// with fewer than two values (nothing to resample).
pub fn bootstrap_median_ci(
    v: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<Interval> {
    if v.len() < 2 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut draw = vec![0.0; v.len()];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for d in draw.iter_mut() {
            *d = v[rng.below(v.len())];
        }
        draw.sort_by(f64::total_cmp);
        medians.push(median_sorted(&draw));
    }
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Some(Interval {
        lo: quantile_sorted(&medians, tail),
        hi: quantile_sorted(&medians, 1.0 - tail),
    })
}

/// The per-repetition ratios of `other` to `base`, matched by repetition
/// number, oriented so that higher is better: `other / base` for rates,
/// `base / other` for latencies and CPU costs. A repetition missing on
/// either side, or giving a non-finite ratio, is left out.
pub fn paired_ratios(
    base: &[(u32, f64)],
    other: &[(u32, f64)],
    higher_is_better: bool,
) -> Vec<f64> {
    other
        .iter()
        .filter_map(|&(rep, v)| {
            let &(_, b) = base.iter().find(|(r, _)| *r == rep)?;
            let r = if higher_is_better { v / b } else { b / v };
            (r.is_finite() && r > 0.0).then_some(r)
        })
        .collect()
}

/// The median of a set of repetitions with its bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Estimate {
    pub median: f64,
    /// The bootstrap interval of the median (`CONFIDENCE`); with a single
    /// repetition, the value itself.
    pub lo: f64,
    pub hi: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Estimate {
    /// `None` if `v` is empty.
    pub fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let m = median(v);
        let ci = bootstrap_median_ci(v, RESAMPLES, CONFIDENCE, SEED)
            .unwrap_or(Interval { lo: m, hi: m });
        Some(Self {
            median: m,
            lo: ci.lo,
            hi: ci.hi,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }

    /// How far the interval reaches from the median, relative to it: the
    /// larger of the two sides (the interval is not symmetric), so
    /// `half_width() <= 0.02` means the whole interval lies within ±2% of
    /// the median. Infinite with fewer than two repetitions: one value
    /// says nothing about its spread.
    pub fn half_width(&self) -> f64 {
        if self.n < 2 || self.median == 0.0 {
            return f64::INFINITY;
        }
        ((self.median - self.lo).max(self.hi - self.median) / self.median.abs()).max(0.0)
    }

    /// Whether the whole interval lies within `±tolerance` of the median.
    pub fn within(&self, tolerance: f64) -> bool {
        self.half_width() <= tolerance
    }
}

/// Median, minimum and maximum of a set of values.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(v: &[f64]) -> Self {
        Self {
            median: median(v),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let s = Summary::of(&[1.0, 5.0, 3.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let sorted = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(quantile_sorted(&sorted, 0.0), 10.0);
        assert_eq!(quantile_sorted(&sorted, 1.0), 50.0);
        assert_eq!(quantile_sorted(&sorted, 0.5), 30.0);
        assert_eq!(quantile_sorted(&sorted, 0.125), 15.0);
    }

    #[test]
    fn generator_is_fixed_by_its_seed() {
        // The first output of SplitMix64 seeded with 0, from the authors'
        // reference implementation: the intervals in old reports must
        // recompute to the same digits.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut r = SplitMix64::new(1);
        let draws: Vec<usize> = (0..10_000).map(|_| r.below(7)).collect();
        assert!(draws.iter().all(|&d| d < 7));
        for k in 0..7 {
            let c = draws.iter().filter(|&&d| d == k).count();
            assert!(
                (1200..1660).contains(&c),
                "value {k} drawn {c} times of 10,000"
            );
        }
        let z: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_median() {
        let v = [0.93, 0.97, 1.01, 0.95, 0.99, 0.96, 1.04, 0.94];
        let a = bootstrap_median_ci(&v, RESAMPLES, CONFIDENCE, SEED).unwrap();
        let b = bootstrap_median_ci(&v, RESAMPLES, CONFIDENCE, SEED).unwrap();
        assert_eq!(a, b);
        let m = median(&v);
        assert!(a.lo <= m && m <= a.hi, "{a:?} around {m}");
        assert!(a.lo >= 0.93 && a.hi <= 1.04, "{a:?} outside the data");
        assert!(bootstrap_median_ci(&[1.0], RESAMPLES, CONFIDENCE, SEED).is_none());
        let one = Estimate::of(&[0.97]).unwrap();
        assert_eq!((one.lo, one.hi, one.n), (0.97, 0.97, 1));
        assert!(
            !one.within(0.02),
            "one repetition cannot meet a precision target"
        );
        assert!(Estimate::of(&[]).is_none());
    }

    /// A benchmark like this one, simulated: every repetition's no-filter
    /// rate carries the machine's load of that moment (a shared factor,
    /// ±15%), the configuration under test runs a few seconds later under
    /// much the same load, with its own ±4% of noise, at a true ratio of
    /// `ratio`. Returns the (base, other) samples of `n` repetitions.
    type Samples = Vec<(u32, f64)>;

    /// The interval of the median of the paired ratios, with fewer
    /// resamples than the report uses (these tests build thousands).
    fn interval(base: &Samples, other: &Samples) -> Interval {
        let r = paired_ratios(base, other, true);
        bootstrap_median_ci(&r, 1000, CONFIDENCE, SEED).unwrap()
    }

    fn simulated(rng: &mut SplitMix64, n: u32, ratio: f64) -> (Samples, Samples) {
        let mut base = Vec::new();
        let mut other = Vec::new();
        for rep in 0..n {
            let load = (0.15 * rng.normal()).exp();
            let b = 500_000.0 * load * (0.04 * rng.normal()).exp();
            let o = 500_000.0 * ratio * load * (0.04 * rng.normal()).exp();
            base.push((rep, b));
            other.push((rep, o));
        }
        (base, other)
    }

    #[test]
    fn interval_covers_a_known_ratio() {
        // The median of the per-repetition ratios has the true ratio as
        // its population median (the noise is symmetric in log space), so
        // about 95% of intervals should cover it. The percentile bootstrap
        // of a median undercovers a little at small n; ask for 90%.
        let mut rng = SplitMix64::new(42);
        let trials = 400;
        for n in [10, 25] {
            let covered = (0..trials)
                .filter(|_| {
                    let (base, other) = simulated(&mut rng, n, 0.95);
                    let ci = interval(&base, &other);
                    ci.lo <= 0.95 && 0.95 <= ci.hi
                })
                .count();
            let rate = covered as f64 / trials as f64;
            assert!(
                rate >= 0.90,
                "n = {n}: covered the true ratio in {rate:.3} of trials"
            );
        }
    }

    #[test]
    fn interval_narrows_with_more_repetitions() {
        let mut rng = SplitMix64::new(43);
        let mean_width = |rng: &mut SplitMix64, n: u32| {
            let trials = 100;
            (0..trials)
                .map(|_| {
                    let (base, other) = simulated(rng, n, 0.97);
                    let ci = interval(&base, &other);
                    ci.hi - ci.lo
                })
                .sum::<f64>()
                / f64::from(trials)
        };
        let (w10, w40) = (mean_width(&mut rng, 10), mean_width(&mut rng, 40));
        // 1/sqrt(n): four times the repetitions, half the width.
        assert!(
            w40 < 0.65 * w10,
            "width at n=10: {w10:.4}, at n=40: {w40:.4}"
        );
        assert!(
            w40 > 0.35 * w10,
            "width at n=10: {w10:.4}, at n=40: {w40:.4}"
        );
    }

    #[test]
    fn pairing_cancels_the_machines_drift() {
        // The load doubles over the run (every configuration slows down
        // alike); the configuration under test is steadily 10% slower.
        // Ratios within a repetition see none of the drift: a tight
        // interval around 0.90 although the raw rates spread by 2×.
        let mut rng = SplitMix64::new(44);
        let n = 12;
        let mut base = Vec::new();
        let mut other = Vec::new();
        for rep in 0..n {
            let load = 1.0 + f64::from(rep) / f64::from(n - 1);
            base.push((rep, 1000.0 / load * (0.003 * rng.normal()).exp()));
            other.push((rep, 900.0 / load * (0.003 * rng.normal()).exp()));
        }
        // Shuffled order and a repetition missing on one side.
        other.reverse();
        base.retain(|&(r, _)| r != 5);
        let ratios = paired_ratios(&base, &other, true);
        assert_eq!(ratios.len(), 11);
        let e = Estimate::of(&ratios).unwrap();
        assert!(
            e.within(0.01) && e.lo <= 0.90 && 0.90 <= e.hi,
            "paired: {:.4} [{:.4}, {:.4}]",
            e.median,
            e.lo,
            e.hi
        );
        // Lower-is-better metrics (latency, CPU per unit) are inverted so
        // that higher is better.
        let inv = paired_ratios(&[(0, 10.0)], &[(0, 12.5)], false);
        assert_eq!(inv, vec![0.8]);
        assert!(paired_ratios(&[(0, 0.0)], &[(0, 1.0)], true).is_empty());
    }

    #[test]
    fn half_width_is_the_wider_side() {
        let e = Estimate {
            median: 1.0,
            lo: 0.99,
            hi: 1.03,
            min: 0.9,
            max: 1.1,
            n: 9,
        };
        assert!((e.half_width() - 0.03).abs() < 1e-12);
        assert!(!e.within(0.02) && e.within(0.031));
    }
}
