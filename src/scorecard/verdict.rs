//! Is a change real, or noise? The confidence interval of a KPI's change between the baseline and
//! the period, and the verdict it gives (docs/SCORECARD.md has the test and its assumptions).
//!
//! 1. Every efficiency KPI is a mean of per-call values (AHT, ASA, after-call work) or a share of
//!    calls (service level, FCR, repeat contacts, transfers), over calls taken as independent.
//! 2. A mean's change gets Welch's interval: (m1 - m0) +- z * sqrt(s1²/n1 + s0²/n0), from each
//!    period's count, sum and sum of squares. A share's change gets Newcombe's hybrid score
//!    interval (his method 10), built from each side's Wilson interval, which stays inside [0, 1]
//!    and behaves at small counts and at shares near 0 or 1.
//! 3. Seven KPIs are judged at once, so each interval is at 1 - 0.05/7 (Bonferroni): across the
//!    seven, the chance that noise alone shows any change is at most 5%.
//! 4. The verdict is IMPROVED or WORSE only when the whole interval is on one side of zero, and
//!    there is none below [`MIN_CALLS`] calls on either side.

/// How many KPIs share the 5% error rate.
const KPIS: f64 = 7.0;
/// Each interval's confidence.
pub const CONFIDENCE: f64 = 1.0 - 0.05 / KPIS;
/// The standard normal quantile at 1 - (0.05 / 7) / 2.
const Z: f64 = 2.690_109_527_158_866;
/// Fewer calls than this on either side: no verdict.
pub const MIN_CALLS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Improved,
    Worse,
    NoClearChange,
    InsufficientData,
    /// The figure may still move (repeats still to come): no verdict yet.
    Provisional,
}

/// Per-call values of one period: how many, their sum, and the sum of their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: i64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Moments {
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The sample variance of the mean: s² / n (`None` below two values).
    fn variance_of_mean(&self) -> Option<f64> {
        let n = self.n as f64;
        (self.n > 1).then(|| ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0) / n)
    }
}

/// A KPI in the period against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compared {
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub change: Option<f64>,
    /// The interval of `change`.
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub calls: i64,
    pub baseline_calls: i64,
    pub verdict: Verdict,
}

/// A mean KPI (in the units of the moments, times `scale`).
pub fn means(now: Moments, before: Moments, scale: f64, better: Better) -> Compared {
    let (value, baseline) = (now.mean(), before.mean());
    let change = value.zip(baseline).map(|(v, b)| v - b);
    let half = now
        .variance_of_mean()
        .zip(before.variance_of_mean())
        .map(|(a, b)| Z * (a + b).sqrt());
    let interval = change.zip(half).map(|(c, h)| (c - h, c + h));
    compared(
        [value, baseline, change],
        interval,
        (now.n, before.n),
        scale,
        better,
    )
}

/// A share KPI: `now` and `before` are (calls counted, calls in the base).
pub fn shares(now: (i64, i64), before: (i64, i64), better: Better) -> Compared {
    let share = |(k, n): (i64, i64)| (n > 0).then(|| k as f64 / n as f64);
    let (value, baseline) = (share(now), share(before));
    let change = value.zip(baseline).map(|(v, b)| v - b);
    let interval = (now.1 > 0 && before.1 > 0).then(|| newcombe(now, before, Z));
    compared(
        [value, baseline, change],
        interval,
        (now.1, before.1),
        1.0,
        better,
    )
}

fn compared(
    [value, baseline, change]: [Option<f64>; 3],
    interval: Option<(f64, f64)>,
    (calls, baseline_calls): (i64, i64),
    scale: f64,
    better: Better,
) -> Compared {
    let verdict = match interval {
        _ if calls < MIN_CALLS || baseline_calls < MIN_CALLS => Verdict::InsufficientData,
        Some((low, _)) if low > 0.0 => match better {
            Better::Higher => Verdict::Improved,
            Better::Lower => Verdict::Worse,
        },
        Some((_, high)) if high < 0.0 => match better {
            Better::Lower => Verdict::Improved,
            Better::Higher => Verdict::Worse,
        },
        Some(_) => Verdict::NoClearChange,
        None => Verdict::InsufficientData,
    };
    let scaled = |x: Option<f64>| x.map(|x| x * scale);
    Compared {
        value: scaled(value),
        baseline: scaled(baseline),
        change: scaled(change),
        low: scaled(interval.map(|i| i.0)),
        high: scaled(interval.map(|i| i.1)),
        calls,
        baseline_calls,
        verdict,
    }
}

/// Wilson's score interval of k out of n.
fn wilson((k, n): (i64, i64), z: f64) -> (f64, f64) {
    let (p, n) = (k as f64 / n as f64, n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (centre - half, centre + half)
}

/// Newcombe's hybrid score interval of p1 - p0 (Statistics in Medicine 17, 1998, method 10).
fn newcombe(one: (i64, i64), zero: (i64, i64), z: f64) -> (f64, f64) {
    let (p1, p0) = (one.0 as f64 / one.1 as f64, zero.0 as f64 / zero.1 as f64);
    let ((l1, u1), (l0, u0)) = (wilson(one, z), wilson(zero, z));
    let d = p1 - p0;
    (
        d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(values: &[f64]) -> Moments {
        Moments {
            n: values.len() as i64,
            sum: values.iter().sum(),
            sum_sq: values.iter().map(|v| v * v).sum(),
        }
    }

    #[test]
    fn z_is_the_normal_quantile_of_the_bonferroni_confidence() {
        // Φ(2.6901) = 0.996429 = 1 - (0.05/7)/2, to the precision of the erf series below.
        let phi = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        assert!((phi(Z) - (1.0 - (1.0 - CONFIDENCE) / 2.0)).abs() < 1e-7);
    }

    /// erf by its Taylor series (converges fast enough for |x| < 3).
    fn erf(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn newcombes_published_example_is_reproduced() {
        // Newcombe (1998), table II, example (a): 56/70 against 48/80 at 95%: 0.0524 to 0.3339.
        let (low, high) = newcombe((56, 70), (48, 80), 1.959_963_985);
        assert!((low - 0.0524).abs() < 5e-5, "{low}");
        assert!((high - 0.3339).abs() < 5e-5, "{high}");
        // Example (b): 9/10 against 3/10: 0.1705 to 0.8090.
        let (low, high) = newcombe((9, 10), (3, 10), 1.959_963_985);
        assert!((low - 0.1705).abs() < 5e-5, "{low}");
        assert!((high - 0.8090).abs() < 5e-5, "{high}");
    }

    #[test]
    fn a_mean_that_moved_within_its_noise_is_no_clear_change() {
        // Handle times of 200 and 400 s alternating (sd 101 s), then of 190 and 390 s.
        let before = moments(&[200.0, 400.0].repeat(20));
        let now = moments(&[190.0, 390.0].repeat(20));
        let c = means(now, before, 1.0, Better::Lower);
        assert_eq!(c.change, Some(-10.0));
        let half = Z * (2.0 * 101.273_936_f64.powi(2) / 40.0).sqrt();
        assert!((c.low.unwrap_or_default() - (-10.0 - half)).abs() < 1e-3);
        assert_eq!(c.verdict, Verdict::NoClearChange);
    }

    #[test]
    fn a_real_improvement_is_improved_and_a_real_loss_worse() {
        let before = moments(&[30.0, 50.0].repeat(20));
        let now = moments(&[5.0, 15.0].repeat(20));
        assert_eq!(
            means(now, before, 1.0, Better::Lower).verdict,
            Verdict::Improved
        );
        assert_eq!(
            means(now, before, 1.0, Better::Higher).verdict,
            Verdict::Worse
        );
        assert_eq!(
            shares((36, 40), (20, 40), Better::Higher).verdict,
            Verdict::Improved
        );
        assert_eq!(
            shares((36, 40), (20, 40), Better::Lower).verdict,
            Verdict::Worse
        );
        assert_eq!(
            shares((22, 40), (20, 40), Better::Higher).verdict,
            Verdict::NoClearChange
        );
    }

    #[test]
    fn too_few_calls_give_no_verdict_but_still_the_values() {
        let c = shares((29, 29), (0, 40), Better::Higher);
        assert_eq!(c.verdict, Verdict::InsufficientData);
        assert_eq!(c.change, Some(1.0));
        let c = means(Moments::default(), moments(&[1.0; 40]), 1.0, Better::Lower);
        assert_eq!((c.value, c.verdict), (None, Verdict::InsufficientData));
    }

    #[test]
    fn moments_in_milliseconds_come_out_in_seconds() {
        let c = means(
            moments(&[1000.0, 3000.0].repeat(20)),
            moments(&[2000.0, 4000.0].repeat(20)),
            0.001,
            Better::Lower,
        );
        assert_eq!(
            (c.value, c.baseline, c.change),
            (Some(2.0), Some(3.0), Some(-1.0))
        );
    }
}
