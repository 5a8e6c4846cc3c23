//! PSNR per radial frequency band between an image and its reconstruction (PixMIM paper
//! Figures 1 and 5: PixMIM's reconstructions lose high-frequency detail and gain in the low
//! bands).
//!
//! Both images are in [0, 1] pixel space (ImageNet normalisation undone). The spectrum of
//! their difference is split into `bands` rings of equal width in radial frequency
//! sqrt(fx^2 + fy^2), fx, fy in cycles/pixel, from 0 to the corner frequency sqrt(0.5) (so
//! every bin is in some band). By Parseval, the mean squared error of the band-passed
//! difference is `sum over the band of |D(k)|^2 / (H W)^2`, averaged over channels; the
//! band's PSNR is `10 log10(1 / MSE)`.
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::{IMAGENET_MEAN, IMAGENET_STD};

/// Band edges in cycles/pixel: `bands + 1` values from 0 to sqrt(0.5).
pub fn band_edges(bands: usize) -> Vec<f64> {
    let top = 0.5f64.sqrt();
    (0..=bands).map(|i| top * i as f64 / bands as f64).collect()
}

/// Signed frequency of bin `k` of an `n`-point FFT, in cycles/sample.
fn freq(k: usize, n: usize) -> f64 {
    let k = if k <= n / 2 {
        k as f64
    } else {
        k as f64 - n as f64
    };
    k / n as f64
}

/// 2-D FFT of a real (h, w) plane.
fn fft2(plane: &[f64], h: usize, w: usize, planner: &mut FftPlanner<f64>) -> Vec<Complex<f64>> {
    let mut a: Vec<Complex<f64>> = plane.iter().map(|&v| Complex::new(v, 0.0)).collect();
    let rows = planner.plan_fft_forward(w);
    for r in a.chunks_mut(w) {
        rows.process(r);
    }
    let cols = planner.plan_fft_forward(h);
    let mut col = vec![Complex::new(0.0, 0.0); h];
    for x in 0..w {
        for y in 0..h {
            col[y] = a[y * w + x];
        }
        cols.process(&mut col);
        for y in 0..h {
            a[y * w + x] = col[y];
        }
    }
    a
}

/// Per-band mean squared error between two (3, H, W) images in [0, 1].
pub fn band_mse(a: &[f64], b: &[f64], h: usize, w: usize, bands: usize) -> Vec<f64> {
    assert_eq!(a.len(), 3 * h * w);
    assert_eq!(b.len(), a.len());
    let edges = band_edges(bands);
    let mut planner = FftPlanner::new();
    let mut energy = vec![0f64; bands];
    for c in 0..3 {
        let d: Vec<f64> = a[c * h * w..(c + 1) * h * w]
            .iter()
            .zip(&b[c * h * w..(c + 1) * h * w])
            .map(|(x, y)| x - y)
            .collect();
        let spec = fft2(&d, h, w, &mut planner);
        for y in 0..h {
            for x in 0..w {
                let r = (freq(x, w).powi(2) + freq(y, h).powi(2)).sqrt();
                // Band i holds [edge_i, edge_{i+1}); the corner itself goes to the last band.
                let band = ((r / edges[bands] * bands as f64) as usize).min(bands - 1);
                energy[band] += spec[y * w + x].norm_sqr();
            }
        }
    }
    let n = (h * w) as f64;
    energy.iter().map(|e| e / (n * n) / 3.0).collect()
}

/// PSNR (dB, data range 1) from an MSE; a perfect band gives +inf, capped at 100 dB so
/// averages and plots stay finite.
pub fn psnr(mse: f64) -> f64 {
    if mse <= 1e-10 {
        100.0
    } else {
        -10.0 * mse.log10()
    }
}

/// ImageNet-normalised (3, H, W) -> [0, 1] pixels, clamped as an image would be.
pub fn to_unit_pixels(chw: &[f32], h: usize, w: usize) -> Vec<f64> {
    chw.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / (h * w);
            (v as f64 * IMAGENET_STD[c] as f64 + IMAGENET_MEAN[c] as f64).clamp(0.0, 1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane_wave(h: usize, w: usize, fx: f64, amp: f64) -> Vec<f64> {
        (0..3 * h * w)
            .map(|i| {
                let x = (i % w) as f64;
                0.5 + amp * (2.0 * std::f64::consts::PI * fx * x).cos()
            })
            .collect()
    }

    #[test]
    fn bands_sum_to_the_pixel_mse_and_locate_the_error() {
        let (h, w) = (32, 32);
        let a = plane_wave(h, w, 0.0, 0.0);
        // An error at 8 cycles / 32 px = 0.25 cycles/pixel: band 2 of 4 ([0.177, 0.354)).
        let b = plane_wave(h, w, 0.25, 0.1);
        let m = band_mse(&a, &b, h, w, 4);
        let pixel_mse =
            a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            (m.iter().sum::<f64>() - pixel_mse).abs() < 1e-12,
            "{m:?} vs {pixel_mse}"
        );
        assert!((m[1] - pixel_mse).abs() < 1e-12, "{m:?}");
        assert!(m[0] < 1e-20 && m[2] < 1e-20 && m[3] < 1e-20);
        // A cos of amplitude 0.1 has mean square 0.005: PSNR = 10 log10(200).
        assert!((psnr(m[1]) - 10.0 * 200f64.log10()).abs() < 1e-9);
        assert_eq!(psnr(m[0]), 100.0);
    }

    #[test]
    fn the_corner_frequency_falls_in_the_last_band() {
        let (h, w) = (8, 8);
        let a = vec![0.5; 3 * h * w];
        // A checkerboard: (0.5, 0.5) cycles/pixel, radius sqrt(0.5).
        let b: Vec<f64> = (0..3 * h * w)
            .map(|i| {
                0.5 + if ((i % w) + (i / w) % h) % 2 == 0 {
                    0.1
                } else {
                    -0.1
                }
            })
            .collect();
        let m = band_mse(&a, &b, h, w, 3);
        assert!(
            m[0] < 1e-20 && m[1] < 1e-20 && (m[2] - 0.01).abs() < 1e-12,
            "{m:?}"
        );
    }
}
