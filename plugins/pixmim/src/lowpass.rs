//! PixMIM's low-frequency target (numerics §2.1; mmselfsup `LowFreqTargetGenerator`).
//!
//! target = normalise(| ifft2( fftshift(fft2(u)) ⊙ M ) |), u the de-normalised image, M the
//! closed disk (i - (H-1)/2)² + (j - (W-1)/2)² ≤ r² on the *shifted* grid, no ifftshift, the
//! complex modulus (not the real part). The missing ifftshift only multiplies the output by a
//! unit-modulus phase, so we filter in natural frequency order with the mask rolled back,
//! M'[k][l] = M[(k + H/2) mod H][(l + W/2) mod W], and take |·|.
//!
//! The high-pass target of the paper's appendix (Table 22, "removing low-freq"; numerics
//! §2.3) is the same pipeline with the complement 1 - M of the disk ([`Band::High`]). The
//! filter is linear and IDFT(DFT(u)) = u, so its complex result is u minus the low band's,
//! before the modulus.
//!
//! Speed: the disk keeps at most 2r+1 frequency columns, so only those columns are transformed
//! (forward and inverse), and pairs of real rows share one complex FFT. `apply_naive` is the
//! plain full 2-D transform, kept for tests and `pixmim bench`.
use std::sync::Arc;

use burn::prelude::*;

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use serde::Deserialize;

use pixmim_core::registry::{Geometry, TargetRegistration};
use pixmim_core::traits::{DeviceTarget, ImageBatch, TargetGenerator};
use pixmim_core::{Error, Result, RunBackend, IMAGENET_MEAN, IMAGENET_STD};

use crate::lowpass_device::{LowPassOnDevice, MatricesCache};

type C = Complex<f32>;

/// Which side of the disk a target keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    /// The frequencies inside the disk: PixMIM's low-frequency target.
    Low,
    /// Those outside it (the appendix's high-pass ablation).
    High,
}

/// The filter for one image size, with its FFT plans (planned once, reused).
pub struct LowPassFilter {
    pub height: usize,
    pub width: usize,
    pub radius: f64,
    /// Natural-order mask M', row-major (H, W).
    mask: Vec<bool>,
    /// Columns l with any kept bin, and for each the kept rows.
    kept: Vec<(usize, Vec<usize>)>,
    row_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
}

/// Default radius: 40 at 224, scaled with the shorter side (numerics §11.1).
pub fn default_radius(height: usize, width: usize) -> f64 {
    40.0 * height.min(width) as f64 / 224.0
}

impl LowPassFilter {
    pub fn new(height: usize, width: usize, radius: f64) -> Self {
        assert!(height > 0 && width > 0 && radius >= 0.0);
        let (ch, cw) = ((height as f64 - 1.0) / 2.0, (width as f64 - 1.0) / 2.0);
        let r2 = radius * radius;
        let mut mask = vec![false; height * width];
        for i in 0..height {
            for j in 0..width {
                let d2 = (i as f64 - ch).powi(2) + (j as f64 - cw).powi(2);
                if d2 <= r2 {
                    // shifted (i, j) holds natural frequency ((i - H/2) mod H, (j - W/2) mod W)
                    let k = (i + height - height / 2) % height;
                    let l = (j + width - width / 2) % width;
                    mask[k * width + l] = true;
                }
            }
        }
        let kept = (0..width)
            .filter_map(|l| {
                let rows: Vec<usize> = (0..height).filter(|&k| mask[k * width + l]).collect();
                (!rows.is_empty()).then_some((l, rows))
            })
            .collect();
        let mut planner = FftPlanner::new();
        Self {
            height,
            width,
            radius,
            row_fwd: planner.plan_fft_forward(width),
            row_inv: planner.plan_fft_inverse(width),
            col_fwd: planner.plan_fft_forward(height),
            col_inv: planner.plan_fft_inverse(height),
            mask,
            kept,
        }
    }

    /// Is natural-order frequency (k, l) kept?
    pub fn keeps(&self, k: usize, l: usize) -> bool {
        self.mask[k * self.width + l]
    }

    /// Columns with at least one kept bin.
    pub fn kept_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.kept.iter().map(|(l, _)| *l)
    }

    /// Number of kept frequency bins.
    pub fn mask_ones(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Filter one channel in pixel space: `out = |IDFT(DFT(u) ⊙ M')|`, both (H, W).
    pub fn apply(&self, u: &[f32], out: &mut [f32]) {
        self.apply_band(u, out, Band::Low)
    }

    /// [`Self::apply`] keeping `band`: for [`Band::High`], `out = |u - IDFT(DFT(u) ⊙ M')|`.
    pub fn apply_band(&self, u: &[f32], out: &mut [f32], band: Band) {
        let (h, w) = (self.height, self.width);
        let k = self.kept.len();
        // 1. Row FFTs, two real rows per complex transform; keep only the kept columns.
        //    spec[c * h + row] holds column kept[c] of the row-transformed image.
        let mut spec = vec![C::default(); k * h];
        let mut buf = vec![C::default(); w];
        let mut scratch = vec![
            C::default();
            self.row_fwd
                .get_inplace_scratch_len()
                .max(self.col_fwd.get_inplace_scratch_len())
                .max(self.row_inv.get_inplace_scratch_len())
                .max(self.col_inv.get_inplace_scratch_len())
        ];
        let mut r = 0;
        while r < h {
            let pair = r + 1 < h;
            for x in 0..w {
                buf[x] = C::new(u[r * w + x], if pair { u[(r + 1) * w + x] } else { 0.0 });
            }
            self.row_fwd.process_with_scratch(&mut buf, &mut scratch);
            for (c, (l, _)) in self.kept.iter().enumerate() {
                let z = buf[*l];
                let zc = buf[(w - l) % w].conj();
                // a = (Z[l] + conj Z[-l]) / 2, b = (Z[l] - conj Z[-l]) / 2i
                spec[c * h + r] = (z + zc) * 0.5;
                if pair {
                    let d = (z - zc) * 0.5;
                    spec[c * h + r + 1] = C::new(d.im, -d.re);
                }
            }
            r += 2;
        }
        // 2. Column FFT, mask, inverse column FFT — kept columns only.
        let mut col = vec![C::default(); h];
        for (c, (_, rows)) in self.kept.iter().enumerate() {
            let s = &mut spec[c * h..(c + 1) * h];
            self.col_fwd.process_with_scratch(s, &mut scratch);
            col.iter_mut().for_each(|v| *v = C::default());
            for &row in rows {
                col[row] = s[row];
            }
            self.col_inv.process_with_scratch(&mut col, &mut scratch);
            s.copy_from_slice(&col);
        }
        // 3. Inverse row FFTs (rows hold non-zeros only in kept columns), modulus, 1/(HW).
        let norm = 1.0 / (h * w) as f32;
        for row in 0..h {
            buf.iter_mut().for_each(|v| *v = C::default());
            for (c, (l, _)) in self.kept.iter().enumerate() {
                buf[*l] = spec[c * h + row];
            }
            self.row_inv.process_with_scratch(&mut buf, &mut scratch);
            for x in 0..w {
                let low = buf[x] * norm;
                out[row * w + x] = match band {
                    Band::Low => low.norm(),
                    Band::High => (C::new(u[row * w + x], 0.0) - low).norm(),
                };
            }
        }
    }

    /// The same filter by the plain full 2-D transform (reference and benchmark baseline).
    pub fn apply_naive(&self, u: &[f32], out: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        let mut a: Vec<C> = u.iter().map(|&v| C::new(v, 0.0)).collect();
        for row in a.chunks_mut(w) {
            self.row_fwd.process(row);
        }
        let mut col = vec![C::default(); h];
        let cols = |a: &mut Vec<C>, f: &Arc<dyn Fft<f32>>, col: &mut Vec<C>| {
            for l in 0..w {
                for k in 0..h {
                    col[k] = a[k * w + l];
                }
                f.process(col);
                for k in 0..h {
                    a[k * w + l] = col[k];
                }
            }
        };
        cols(&mut a, &self.col_fwd, &mut col);
        for (v, &m) in a.iter_mut().zip(&self.mask) {
            if !m {
                *v = C::default();
            }
        }
        cols(&mut a, &self.col_inv, &mut col);
        for row in a.chunks_mut(w) {
            self.row_inv.process(row);
        }
        let norm = 1.0 / (h * w) as f32;
        for (o, v) in out.iter_mut().zip(&a) {
            *o = v.norm() * norm;
        }
    }

    /// The PixMIM target of one normalised (3, H, W) image, in normalised space.
    pub fn target(&self, x: &[f32], out: &mut [f32]) {
        self.target_band(x, out, Band::Low)
    }

    /// [`Self::target`] keeping `band`.
    pub fn target_band(&self, x: &[f32], out: &mut [f32], band: Band) {
        let n = self.height * self.width;
        let mut u = vec![0.0f32; n];
        for c in 0..3 {
            let (m, s) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
            for (d, &v) in u.iter_mut().zip(&x[c * n..(c + 1) * n]) {
                *d = v * s + m;
            }
            let o = &mut out[c * n..(c + 1) * n];
            self.apply_band(&u, o, band);
            for v in o.iter_mut() {
                *v = (*v - m) / s;
            }
        }
    }
}

/// `[target] name = "lowpass"` (or `"highpass"`), `radius` (optional: 40 at 224, scaled with
/// the image), `on_device` (true: next to the model as DFT matrix products; false: with rustfft
/// in the data workers; unset: on the device when it is a GPU, see docs/performance.md, "The
/// low-pass target").
pub struct FrequencyTarget {
    pub filter: LowPassFilter,
    pub band: Band,
    pub on_device: Option<bool>,
    matrices: MatricesCache,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LowPassParams {
    #[serde(default)]
    radius: Option<f64>,
    #[serde(default)]
    on_device: Option<bool>,
}

impl FrequencyTarget {
    pub fn new(height: usize, width: usize, radius: Option<f64>, band: Band) -> Result<Self> {
        let radius = radius.unwrap_or_else(|| default_radius(height, width));
        if !(radius.is_finite() && radius >= 0.0) {
            return Err(Error::config(
                "target.radius",
                format!("must be >= 0, got {radius}"),
            ));
        }
        Ok(Self {
            filter: LowPassFilter::new(height, width, radius),
            band,
            on_device: None,
            matrices: MatricesCache::default(),
        })
    }
}

impl TargetGenerator for FrequencyTarget {
    fn describe(&self) -> String {
        let f = &self.filter;
        let (what, kept) = match self.band {
            Band::Low => ("low-pass (PixMIM)", f.mask_ones()),
            Band::High => (
                "high-pass (PixMIM appendix)",
                f.height * f.width - f.mask_ones(),
            ),
        };
        format!(
            "{what}, radius {} at {}x{} ({kept} of {} frequency bins kept)",
            f.radius,
            f.height,
            f.width,
            f.height * f.width
        )
    }
    fn resolved_params(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("radius".into(), self.filter.radius.into());
        if let Some(d) = self.on_device {
            t.insert("on_device".into(), d.into());
        }
        t
    }
    fn on_device(&self) -> Option<bool> {
        self.on_device
    }
    fn device_path(&self) -> Option<&dyn DeviceTarget> {
        Some(self)
    }
    fn generate(&self, images: &ImageBatch) -> Option<ImageBatch> {
        assert_eq!(
            (images.height, images.width),
            (self.filter.height, self.filter.width)
        );
        let mut out = ImageBatch::zeros(images.batch, images.channels, images.height, images.width);
        let n = images.channels * images.height * images.width;
        out.data
            .par_chunks_mut(n)
            .zip(images.data.par_chunks(n))
            .for_each(|(o, x)| self.filter.target_band(x, o, self.band));
        Some(out)
    }
}

impl DeviceTarget for FrequencyTarget {
    fn generate_on_device(&self, images: Tensor<RunBackend, 4>) -> Tensor<RunBackend, 4> {
        let device = images.device();
        self.matrices
            .get(&device, || LowPassOnDevice::new(&self.filter, &device))
            .target(images, self.band)
    }
}

fn build(band: Band, params: &toml::Table, g: &Geometry) -> Result<Box<dyn TargetGenerator>> {
    let p: LowPassParams = pixmim_core::config::parse_params(params, "target")?;
    let mut t = FrequencyTarget::new(g.image.0, g.image.1, p.radius, band)?;
    t.on_device = p.on_device;
    Ok(Box::new(t))
}

inventory::submit! {
    TargetRegistration {
        name: "lowpass",
        description: "PixMIM low-frequency target: ideal circular low-pass filter (numerics §2.1)",
        params: &["radius", "on_device"],
        build: |p, g| build(Band::Low, p, g),
    }
}

inventory::submit! {
    TargetRegistration {
        name: "highpass",
        description: "the low-pass pipeline with the complement of its disk (PixMIM Table 22)",
        params: &["radius", "on_device"],
        build: |p, g| build(Band::High, p, g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32
            })
            .collect()
    }

    /// `on_device` unset: the device path on a GPU, the data workers on a CPU; set, as set.
    #[test]
    fn target_placement_follows_the_config_else_the_device() {
        use pixmim_core::device::DeviceSpec;
        use pixmim_core::engine::target_on_device;
        let g = Geometry {
            image: (32, 32),
            mask_grid: (8, 8),
        };
        let gpu = DeviceSpec::Cuda(0);
        let cpu = DeviceSpec::NdArray;
        let auto = build(Band::Low, &toml::Table::new(), &g).unwrap();
        assert!(target_on_device(auto.as_ref(), &gpu));
        assert!(!target_on_device(auto.as_ref(), &cpu));
        assert!(!auto.resolved_params().contains_key("on_device"));
        for set in [true, false] {
            let mut t = toml::Table::new();
            t.insert("on_device".into(), set.into());
            let lp = build(Band::Low, &t, &g).unwrap();
            assert_eq!(target_on_device(lp.as_ref(), &gpu), set);
            assert_eq!(target_on_device(lp.as_ref(), &cpu), set);
            assert_eq!(lp.resolved_params()["on_device"].as_bool(), Some(set));
        }
    }

    #[test]
    fn mask_counts_match_mmselfsup() {
        for (h, r, ones) in [
            (224, 10.0, 316),
            (224, 40.0, 5024),
            (224, 112.0, 39428),
            (64, 10.0, 316),
            (64, 40.0, 3984),
            (64, 112.0, 4096),
        ] {
            assert_eq!(LowPassFilter::new(h, h, r).mask_ones(), ones, "{h} r={r}");
        }
        assert_eq!(default_radius(448, 448), 80.0);
        assert_eq!(LowPassFilter::new(448, 448, 80.0).mask_ones(), 20108);
    }

    #[test]
    fn pruned_transform_equals_the_full_one_on_odd_and_non_square_sizes() {
        for (h, w, r) in [
            (224, 224, 40.0),
            (31, 20, 5.0),
            (17, 33, 0.0),
            (9, 9, 100.0),
            (1, 8, 2.0),
        ] {
            let f = LowPassFilter::new(h, w, r);
            let u = pseudo_random(h * w, (h * w) as u32);
            let (mut a, mut b) = (vec![0.0; h * w], vec![0.0; h * w]);
            f.apply(&u, &mut a);
            f.apply_naive(&u, &mut b);
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5, "{h}x{w} r={r}: {err}");
        }
    }

    #[test]
    fn radius_zero_gives_a_constant_and_a_huge_radius_the_input() {
        let (h, w) = (12, 10);
        let u = pseudo_random(h * w, 5);
        let mut out = vec![0.0; h * w];
        // r = 0 keeps nothing of the half-pixel-centred disk for even sizes... except nothing:
        // the centre (5.5, 4.5) is 0.5+ away from every bin, so the output is all zero.
        LowPassFilter::new(h, w, 0.0).apply(&u, &mut out);
        assert!(out.iter().all(|&v| v.abs() < 1e-7));
        // Odd sizes have a bin at the centre: r = 0 keeps exactly DC, the image mean.
        let (h, w) = (9, 7);
        let u = pseudo_random(h * w, 6);
        let mean = u.iter().sum::<f32>() / (h * w) as f32;
        let mut out = vec![0.0; h * w];
        let f = LowPassFilter::new(h, w, 0.0);
        assert_eq!(f.mask_ones(), 1);
        f.apply(&u, &mut out);
        assert!(out.iter().all(|&v| (v - mean.abs()).abs() < 1e-6));
        // r at least the half diagonal keeps every bin: the input comes back (it is >= 0).
        let f = LowPassFilter::new(h, w, ((h * h + w * w) as f64).sqrt() / 2.0 + 1.0);
        f.apply(&u, &mut out);
        assert!(out.iter().zip(&u).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn target_is_never_below_minus_mean_over_std() {
        let t = FrequencyTarget::new(32, 32, Some(6.0), Band::Low).unwrap();
        let x: Vec<f32> = pseudo_random(3 * 32 * 32, 9)
            .iter()
            .map(|v| (v - 0.5) * 8.0)
            .collect();
        let batch = ImageBatch {
            batch: 1,
            channels: 3,
            height: 32,
            width: 32,
            data: x,
        };
        let y = t.generate(&batch).unwrap();
        for c in 0..3 {
            let floor = -IMAGENET_MEAN[c] / IMAGENET_STD[c] - 1e-5;
            assert!(y.data[c * 1024..(c + 1) * 1024].iter().all(|&v| v >= floor));
        }
        assert!(FrequencyTarget::new(8, 8, Some(-1.0), Band::Low).is_err());
    }

    /// The plain 2-D DFT in f64: X[k][l] = sum x[a][b] e^{sign 2 pi i (k a / H + l b / W)},
    /// unnormalised (the inverse is sign = +1 over H W).
    fn dft2(x: &[(f64, f64)], h: usize, w: usize, sign: f64) -> Vec<(f64, f64)> {
        use std::f64::consts::PI;
        let mut out = vec![(0.0, 0.0); h * w];
        for k in 0..h {
            for l in 0..w {
                let (mut re, mut im) = (0.0, 0.0);
                for a in 0..h {
                    for b in 0..w {
                        let t = sign
                            * 2.0
                            * PI
                            * ((k * a) as f64 / h as f64 + (l * b) as f64 / w as f64);
                        let (xr, xi) = x[a * w + b];
                        re += xr * t.cos() - xi * t.sin();
                        im += xr * t.sin() + xi * t.cos();
                    }
                }
                out[k * w + l] = (re, im);
            }
        }
        out
    }

    /// The high-pass target as its definition states it, in f64: de-normalise, fft2,
    /// fftshift, keep the complement of the closed disk (i - (H-1)/2)^2 + (j - (W-1)/2)^2 <= r^2,
    /// ifft2 without ifftshift, complex modulus, re-normalise (numerics §2.1 with 1 - M).
    fn highpass_f64(x: &[f32], h: usize, w: usize, r: f64) -> Vec<f64> {
        let n = h * w;
        let mut out = vec![0.0; 3 * n];
        for c in 0..3 {
            let (m, s) = (IMAGENET_MEAN[c] as f64, IMAGENET_STD[c] as f64);
            let u: Vec<f64> = x[c * n..(c + 1) * n]
                .iter()
                .map(|&v| v as f64 * s + m)
                .collect();
            // F = fft2(u)
            let f = dft2(&u.iter().map(|&v| (v, 0.0)).collect::<Vec<_>>(), h, w, -1.0);
            // fftshift: S[i][j] = F[(i - H/2) mod H][(j - W/2) mod W]; keep outside the disk.
            let (ch, cw) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
            let mut sp = vec![(0.0, 0.0); n];
            for i in 0..h {
                for j in 0..w {
                    let inside = (i as f64 - ch).powi(2) + (j as f64 - cw).powi(2) <= r * r;
                    if !inside {
                        sp[i * w + j] = f[((i + h - h / 2) % h) * w + (j + w - w / 2) % w];
                    }
                }
            }
            // ifft2 of the shifted, masked spectrum (no ifftshift), modulus, re-normalise.
            let y = dft2(&sp, h, w, 1.0);
            for a in 0..h {
                for b in 0..w {
                    let (re, im) = y[a * w + b];
                    let y = (re * re + im * im).sqrt() / n as f64;
                    out[c * n + a * w + b] = (y - m) / s;
                }
            }
        }
        out
    }

    /// The high-pass target, on the host and on the device, equals its f64 statement on odd,
    /// even and non-square sizes, with r = 0, a middle radius and r beyond the corner (where
    /// nothing is left: the target is the normalised black image).
    #[test]
    fn highpass_equals_its_definition_in_f64() {
        use pixmim_core::device::DeviceSpec;
        let device = DeviceSpec::NdArray.device().unwrap();
        for (h, w) in [(7, 9), (8, 8), (6, 10), (5, 5)] {
            let x = pseudo_random(3 * h * w, (h * 31 + w) as u32);
            for r in [0.0, 1.5, 3.0, 100.0] {
                let want = highpass_f64(&x, h, w, r);
                let t = FrequencyTarget::new(h, w, Some(r), Band::High).unwrap();
                let img = ImageBatch {
                    batch: 1,
                    channels: 3,
                    height: h,
                    width: w,
                    data: x.clone(),
                };
                let host = t.generate(&img).unwrap().data;
                let xt = Tensor::<RunBackend, 4>::from_data(
                    TensorData::new(x.clone(), [1, 3, h, w]),
                    &device,
                );
                let dev: Vec<f32> = t.generate_on_device(xt).into_data().to_vec().unwrap();
                for (path, got) in [("host", &host), ("device", &dev)] {
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(&g, &e)| (g as f64 - e).abs())
                        .fold(0.0, f64::max);
                    assert!(err < 2e-5, "{path} {h}x{w} r={r}: max abs error {err:.2e}");
                }
                if r >= 100.0 {
                    let black = -IMAGENET_MEAN[0] as f64 / IMAGENET_STD[0] as f64;
                    assert!((want[0] - black).abs() < 1e-9);
                }
            }
        }
    }

    /// Low and high bands split the image: low complex + high complex = the image, so where
    /// one band is everything the other is nothing.
    #[test]
    fn low_and_high_pass_are_complements() {
        let (h, w) = (8, 12);
        let x = pseudo_random(3 * h * w, 7);
        let img = ImageBatch {
            batch: 1,
            channels: 3,
            height: h,
            width: w,
            data: x.clone(),
        };
        let everything = FrequencyTarget::new(h, w, Some(100.0), Band::Low).unwrap();
        let nothing = FrequencyTarget::new(h, w, Some(100.0), Band::High).unwrap();
        let low = everything.generate(&img).unwrap().data;
        let high = nothing.generate(&img).unwrap().data;
        // The whole spectrum gives |u| = u back (u >= 0 once de-normalised for these inputs).
        for (i, (&l, &v)) in low.iter().zip(&x).enumerate() {
            let c = i / (h * w);
            let u = v * IMAGENET_STD[c] + IMAGENET_MEAN[c];
            if u >= 0.0 {
                assert!((l - v).abs() < 1e-5, "{i}: {l} vs {v}");
            }
        }
        let black: Vec<f32> = (0..3)
            .map(|c| -IMAGENET_MEAN[c] / IMAGENET_STD[c])
            .collect();
        for (i, &v) in high.iter().enumerate() {
            assert!((v - black[i / (h * w)]).abs() < 1e-5, "{i}: {v}");
        }
    }
}
