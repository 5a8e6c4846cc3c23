//! Is a difference between two variants bigger than the seed-to-seed noise? Mean and sample
//! standard deviation over seeds, and the difference to a baseline with a 95% Student-t
//! interval and a sign test: paired over the seeds both ran (the same seed gives both the
//! same initial weights, data order and masks, so pairing removes that shared noise).

/// Mean and sample standard deviation (n - 1); the deviation is `None` below two values.
pub fn mean_std(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() >= 2).then(|| {
        let ss = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        (ss / (n - 1.0)).sqrt()
    });
    (mean, std)
}

/// A difference of means, its two-sided 95% interval, and the sign test of its pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Difference {
    pub mean: f64,
    /// Half-width of the 95% interval; `None` with fewer than two pairs.
    pub half_width: Option<f64>,
    pub pairs: usize,
    pub sign: SignTest,
}

/// The paired sign test: how many pairs the variant won and lost (ties are dropped), and the
/// exact two-sided p-value of so lopsided a split if each pair were a fair coin. It assumes
/// nothing about the differences' distribution, which the t interval does (normality).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignTest {
    pub wins: usize,
    pub losses: usize,
    pub p: f64,
}

impl SignTest {
    pub fn of(differences: &[f64]) -> Self {
        let wins = differences.iter().filter(|d| **d > 0.0).count();
        let losses = differences.iter().filter(|d| **d < 0.0).count();
        let n = wins + losses;
        // P(X <= min(wins, losses)) for X ~ Binomial(n, 1/2), doubled and capped at 1.
        let tail: f64 = (0..=wins.min(losses))
            .map(|k| (ln_choose(n, k) - n as f64 * std::f64::consts::LN_2).exp())
            .sum();
        Self {
            wins,
            losses,
            p: (2.0 * tail).min(1.0),
        }
    }
}

/// ln C(n, k).
fn ln_choose(n: usize, k: usize) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

impl Difference {
    /// Does the 95% interval exclude 0?
    pub fn significant(&self) -> bool {
        self.half_width.is_some_and(|h| self.mean.abs() > h)
    }
}

/// `variant - baseline` over paired values (one pair per seed): the mean difference and
/// t(0.975, n - 1) x sd / sqrt(n).
pub fn paired_difference(pairs: &[(f64, f64)]) -> Difference {
    let d: Vec<f64> = pairs.iter().map(|(v, b)| v - b).collect();
    let (mean, sd) = mean_std(&d);
    let n = d.len();
    Difference {
        mean,
        half_width: sd.map(|sd| t_quantile_975((n - 1) as f64) * sd / (n as f64).sqrt()),
        pairs: n,
        sign: SignTest::of(&d),
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (bisection on the CDF).
pub fn t_quantile_975(df: f64) -> f64 {
    assert!(df > 0.0);
    let (mut lo, mut hi) = (0.0f64, 1000.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < 0.975 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(T <= t) for t >= 0: 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t²).
fn t_cdf(t: f64, df: f64) -> f64 {
    1.0 - 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz),
/// using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x), x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printed t tables (two-sided 95%) and the normal limit.
    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, want) in [
            (1.0, 12.706),
            (2.0, 4.303),
            (3.0, 3.182),
            (4.0, 2.776),
            (9.0, 2.262),
            (30.0, 2.042),
            (1e6, 1.960),
        ] {
            let got = t_quantile_975(df);
            assert!((got - want).abs() < 1e-3, "df {df}: {got} vs {want}");
        }
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (x, fact) in [(1.0, 1.0f64), (2.0, 1.0), (5.0, 24.0), (11.0, 3_628_800.0)] {
            assert!((ln_gamma(x) - fact.ln()).abs() < 1e-12, "{x}");
        }
        let half = ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln();
        assert!(half.abs() < 1e-12);
    }

    /// Worked by hand: differences 1, 2, 3 -> mean 2, sd 1, half-width 4.303 / sqrt(3) =
    /// 2.48, so the interval holds 0; differences 2, 3, 4 have the same width and exclude it.
    #[test]
    fn paired_difference_by_hand() {
        let d = paired_difference(&[(11.0, 10.0), (12.0, 10.0), (13.0, 10.0)]);
        assert_eq!(d.mean, 2.0);
        assert_eq!(d.pairs, 3);
        let h = d.half_width.unwrap();
        assert!((h - 4.302_652_7 / 3f64.sqrt()).abs() < 1e-6, "{h}");
        assert!(!d.significant());
        let d = paired_difference(&[(12.0, 10.0), (13.0, 10.0), (14.0, 10.0)]);
        assert_eq!(d.mean, 3.0);
        assert!(d.significant());
        let one = paired_difference(&[(1.0, 0.0)]);
        assert_eq!(one.half_width, None);
        assert!(!one.significant());
        // A difference inside its own noise is not significant.
        assert!(!paired_difference(&[(1.0, 0.0), (-0.5, 0.0)]).significant());
        assert_eq!(mean_std(&[2.0, 4.0]), (3.0, Some(2f64.sqrt())));
        assert_eq!(mean_std(&[2.0]), (2.0, None));
    }

    /// Binomial tails by hand: 8 of 8 -> 2 / 256; 7 of 8 -> 2 x 9 / 256; 4 of 8 -> 1 (capped);
    /// a tie is dropped, so 5 wins, 1 tie, 0 losses is 5 of 5 -> 2 / 32.
    #[test]
    fn sign_test_by_hand() {
        let t = SignTest::of(&[1.0; 8]);
        assert_eq!((t.wins, t.losses), (8, 0));
        assert!((t.p - 2.0 / 256.0).abs() < 1e-12, "{}", t.p);
        let mut seven = vec![0.5; 7];
        seven.push(-3.0);
        let t = SignTest::of(&seven);
        assert_eq!((t.wins, t.losses), (7, 1));
        assert!((t.p - 18.0 / 256.0).abs() < 1e-12, "{}", t.p);
        let t = SignTest::of(&[1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0]);
        assert_eq!(t.p, 1.0);
        let t = SignTest::of(&[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!((t.wins, t.losses), (5, 0));
        assert!((t.p - 2.0 / 32.0).abs() < 1e-12, "{}", t.p);
        assert_eq!(SignTest::of(&[]).p, 1.0);
        // The paired difference carries it, variant minus baseline.
        let d = paired_difference(&[(1.0, 2.0), (1.0, 3.0), (5.0, 4.0)]);
        assert_eq!((d.sign.wins, d.sign.losses), (1, 2));
    }
}
