//! `exp` and `erf` for f32 that vectorise, and the GELU and softmax kernels built on them:
//! the transcendental work of a ViT block on burn-flex ([`super::activation`]).
//!
//! burn-flex and burn-ndarray 0.21 call libm once per element (`erff` 3-11 ns, `expf` 2-3
//! ns): GELU and softmax were a fifth to a third of a tiny MAE block's forward + backward on
//! flex. These are branch-free polynomials, so a loop over a slice compiles to AVX-512 or
//! AVX2 code (the `multiversion` crate picks at run time; plain `x86-64` otherwise). They use
//! no fused multiply-adds, so the results are the same on every CPU.
//!
//! Accuracy, checked by the tests below against f64: [`exp_nonpositive`] within 2 ulp on
//! [-87, 0]; [`erf`] within 1.5e-7 absolute (2.5 ulp of values near 1) everywhere.
use multiversion::multiversion;
use rayon::prelude::*;

/// `e^x` for `x <= 0` (softmax after its max shift, the Gaussian in erf and GELU's slope);
/// 0 below -87, where the true value is under f32's smallest normal.
///
/// `x = k ln 2 + r` with |r| <= ln2 / 2 (Cody-Waite: ln 2 in two parts so `r` is exact),
/// `e^r` by its Taylor series to degree 7 (truncation 5e-9 relative), times `2^k` built in
/// the exponent bits.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with trailing zero bits so k * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let z = xc * LOG2_E + ROUND;
    let k = z - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ki = z.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((ki + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// The Maclaurin coefficients of erf(x) / x in x^2: 2/sqrt(pi) (-1)^n / (n! (2n + 1)),
/// n = 0..=10.
const ERF_SERIES: [f32; 11] = {
    let mut c = [0f32; 11];
    let mut n = 0;
    let mut factorial = 1f64;
    while n < 11 {
        if n > 0 {
            factorial *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = (sign * std::f64::consts::FRAC_2_SQRT_PI / (factorial * (2 * n + 1) as f64)) as f32;
        n += 1;
    }
    c
};

/// erfc(x) e^{x^2} on [3/4, 4] as a polynomial in t = 1 / (1 + x/2), fitted by
/// `tools/fit_erfc_tail.py` (max relative error 5.9e-10 in f64).
const ERFC_TAIL: [f32; 8] = [
    -1.515_050_3e-4,
    2.848_745_6e-1,
    2.599_167e-1,
    3.470_398_8e-1,
    -1.020_961_4e-1,
    5.614_735e-1,
    -4.700_263_4e-1,
    1.190_222_6e-1,
];

/// The error function. |x| < 3/4: the Maclaurin series x P(x^2) to x^21 (truncation 1e-12);
/// otherwise 1 - e^{-x^2} G(x) with the fitted tail `G`; |x| > 4 gives +-1 (erfc(4) = 1.5e-8
/// is under half an ulp of 1).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_and_gauss(x).0
}

/// `(erf(x), e^{-x^2})`: GELU needs the Gaussian too, and erf's tail computes it anyway.
#[inline(always)]
fn erf_and_gauss(x: f32) -> (f32, f32) {
    let a = x.abs();
    let gauss = exp_nonpositive(-(a * a));
    let a = a.min(4.0);
    let a2 = a * a;
    let mut s = ERF_SERIES[10];
    for c in ERF_SERIES[..10].iter().rev() {
        s = s * a2 + c;
    }
    let small = a * s;
    let t = 1.0 / (1.0 + 0.5 * a);
    let mut g = ERFC_TAIL[7];
    for c in ERFC_TAIL[..7].iter().rev() {
        g = g * t + c;
    }
    let large = 1.0 - gauss * g;
    let v = if a < 0.75 { small } else { large };
    (v.copysign(x), gauss)
}

/// Elements per parallel task: below this a slice is done on the calling thread.
const CHUNK: usize = 1 << 15;

/// GELU of `x` into `y`, and its derivative into `slope`:
/// `y = x Phi(x)`, `slope = Phi(x) + x phi(x)`, with Phi(x) = (1 + erf(x / sqrt 2)) / 2 as
/// `nn.GELU()` computes it and phi the standard normal density.
pub fn gelu_and_slope(x: &[f32], y: &mut [f32], slope: &mut [f32]) {
    assert!(x.len() == y.len() && x.len() == slope.len());
    x.par_chunks(CHUNK)
        .zip(y.par_chunks_mut(CHUNK))
        .zip(slope.par_chunks_mut(CHUNK))
        .for_each(|((x, y), s)| gelu_chunk(x, y, s));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_chunk(x: &[f32], y: &mut [f32], slope: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((&v, y), s) in x.iter().zip(y.iter_mut()).zip(slope.iter_mut()) {
        // phi(v) = e^{-(v / sqrt 2)^2} / sqrt(2 pi): erf's Gaussian, reused.
        let (erf, gauss) = erf_and_gauss(v * FRAC_1_SQRT_2);
        let cdf = 0.5 * (1.0 + erf);
        let pdf = INV_SQRT_2PI * gauss;
        *y = v * cdf;
        *s = cdf + v * pdf;
    }
}

/// Softmax of each `row`-long row of `x`, in place: `e^{x - max} / sum`, as PyTorch does it.
pub fn softmax_rows(x: &mut [f32], row: usize) {
    assert!(row > 0 && x.len().is_multiple_of(row));
    let rows_per_task = (CHUNK / row).max(1);
    x.par_chunks_mut(rows_per_task * row)
        .for_each(|c| softmax_chunk(c, row));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn softmax_chunk(x: &mut [f32], row: usize) {
    for r in x.chunks_exact_mut(row) {
        let max = lanes_fold(r, f32::NEG_INFINITY, f32::max);
        for v in r.iter_mut() {
            *v = exp_nonpositive(*v - max);
        }
        let inv = 1.0 / lanes_fold(r, 0.0, |a, b| a + b);
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

/// `f` folded over `r` in 16 interleaved lanes, then across them: one vector register's
/// worth of independent chains instead of one serial chain (float folds are not reordered
/// by the compiler). Sums in this order, as PyTorch's vectorised reductions do.
#[inline(always)]
fn lanes_fold(r: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let mut chunks = r.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    f(acc.iter().fold(init, |a, &v| f(a, v)), tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between an f32 and the f64 truth.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulp_on_the_non_positive_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            worst = worst.max(ulps(exp_nonpositive(x), (x as f64).exp()));
            x += 1.3e-4;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn erf_is_within_1_5e_7_of_the_f64_erf() {
        let mut worst = (0f64, 0f32);
        let mut x = -6.0f32;
        while x <= 6.0 {
            let err = (erf(x) as f64 - libm::erf(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
            x += 3.7e-5;
        }
        assert!(worst.0 <= 1.5e-7, "worst {} at {}", worst.0, worst.1);
        // Odd, and exact where it must be.
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(-0.7), -erf(0.7));
        assert_eq!(erf(9.0), 1.0);
        // Small arguments keep their relative accuracy (erf x ~ 2x / sqrt(pi)).
        assert!(ulps(erf(1e-6), libm::erf(1e-6)) <= 1.0);
    }

    #[test]
    fn gelu_kernel_gives_value_and_exact_slope() {
        let x: Vec<f32> = (0..100_001)
            .map(|i| (i as f32 - 50_000.0) * 1.2e-4)
            .collect();
        let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_and_slope(&x, &mut y, &mut s);
        for ((&v, &yv), &sv) in x.iter().zip(&y).zip(&s) {
            let v = v as f64;
            let cdf = 0.5 * (1.0 + libm::erf(v / 2f64.sqrt()));
            let pdf = (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((yv as f64 - v * cdf).abs() <= 5e-7, "gelu({v}) = {yv}");
            assert!(
                (sv as f64 - (cdf + v * pdf)).abs() <= 5e-7,
                "gelu'({v}) = {sv}"
            );
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_f64_softmax() {
        let row = 65;
        let mut x: Vec<f32> = (0..row * 1000)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.02)
            .collect();
        let orig = x.clone();
        softmax_rows(&mut x, row);
        for (r, o) in x.chunks(row).zip(orig.chunks(row)) {
            let max = o.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = o.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (&got, want) in r.iter().zip(e.iter().map(|v| v / sum)) {
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * want.max(1e-3),
                    "{got} vs {want}"
                );
            }
            let total: f32 = r.iter().sum();
            assert!((total - 1.0).abs() < 1e-5);
        }
    }
}
