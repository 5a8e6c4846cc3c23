//! A Gaussian-blur target: the decoder predicts the input blurred with a Gaussian of standard
//! deviation `sigma` pixels (at the training size), in the input's normalised space; the
//! loss then patchifies it and applies norm_pix as for any target. A low-pass target of
//! another shape than PixMIM's ideal disk, written as a user would.
//!
//! It has a host path only: the data workers make it, on every device (a generator without
//! a device path is never replaced by raw pixels).
use pixmim::registry::{Geometry, TargetRegistration};
use pixmim::traits::{ImageBatch, TargetGenerator};
use pixmim::{Error, Result};
use serde::Deserialize;

/// `[target] name = "blur"`, `sigma` (pixels; default 1.0).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlurParams {
    #[serde(default = "default_sigma")]
    sigma: f64,
}

fn default_sigma() -> f64 {
    1.0
}

pub struct BlurTarget {
    pub sigma: f64,
    /// The normalised 1-D kernel, taps -r..=r.
    kernel: Vec<f32>,
}

impl BlurTarget {
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma > 0.0 && sigma <= 64.0) {
            return Err(Error::config(
                "target.sigma",
                format!("must be in (0, 64] pixels, got {sigma}"),
            ));
        }
        let r = (3.0 * sigma).ceil() as i64;
        let taps: Vec<f64> = (-r..=r)
            .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let sum: f64 = taps.iter().sum();
        Ok(Self {
            sigma,
            kernel: taps.iter().map(|t| (t / sum) as f32).collect(),
        })
    }

    /// One channel (H, W) blurred along rows then columns, borders reflected (PIL/OpenCV's
    /// "reflect 101": the edge pixel is not repeated).
    fn blur_plane(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let r = (self.kernel.len() / 2) as i64;
        let reflect = |i: i64, n: usize| -> usize {
            let n = n as i64;
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let i = i.rem_euclid(period);
            (if i < n { i } else { period - i }) as usize
        };
        let mut rows = vec![0.0f32; h * w];
        for y in 0..h {
            for xx in 0..w {
                rows[y * w + xx] = (-r..=r)
                    .zip(&self.kernel)
                    .map(|(d, k)| k * x[y * w + reflect(xx as i64 + d, w)])
                    .sum();
            }
        }
        for y in 0..h {
            for xx in 0..w {
                out[y * w + xx] = (-r..=r)
                    .zip(&self.kernel)
                    .map(|(d, k)| k * rows[reflect(y as i64 + d, h) * w + xx])
                    .sum();
            }
        }
    }
}

impl TargetGenerator for BlurTarget {
    fn describe(&self) -> String {
        format!(
            "Gaussian blur, sigma {} px (examples/custom_target)",
            self.sigma
        )
    }
    fn resolved_params(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("sigma".into(), self.sigma.into());
        t
    }
    fn generate(&self, images: &ImageBatch) -> Option<ImageBatch> {
        let (h, w) = (images.height, images.width);
        let mut out = images.clone();
        for (src, dst) in images.data.chunks(h * w).zip(out.data.chunks_mut(h * w)) {
            self.blur_plane(src, h, w, dst);
        }
        Some(out)
    }
}

fn build(params: &toml::Table, _geometry: &Geometry) -> Result<Box<dyn TargetGenerator>> {
    let p: BlurParams = pixmim::config::parse_params(params, "target")?;
    Ok(Box::new(BlurTarget::new(p.sigma)?))
}

pixmim::inventory::submit! {
    TargetRegistration {
        name: "blur",
        description: "Gaussian-blurred image (examples/custom_target)",
        params: &["sigma"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmim::device::DeviceSpec;
    use pixmim::target::target_on_device;

    fn batch(h: usize, w: usize) -> ImageBatch {
        let mut b = ImageBatch::zeros(2, 3, h, w);
        for (i, v) in b.data.iter_mut().enumerate() {
            *v = ((i * 37) % 11) as f32 / 5.0 - 1.0;
        }
        b
    }

    #[test]
    fn a_constant_image_stays_constant_and_the_mean_is_kept() {
        let t = BlurTarget::new(1.5).unwrap();
        let mut flat = ImageBatch::zeros(1, 3, 9, 7);
        flat.data.iter_mut().for_each(|v| *v = 0.25);
        let y = t.generate(&flat).unwrap();
        assert!(y.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
        // The kernel sums to one, so an image's mean moves little (borders aside).
        let x = batch(16, 16);
        let y = t.generate(&x).unwrap();
        let mean = |d: &[f32]| d.iter().sum::<f32>() / d.len() as f32;
        assert!((mean(&x.data) - mean(&y.data)).abs() < 0.02);
    }

    #[test]
    fn it_smooths_detail_and_grows_with_sigma() {
        let x = batch(16, 16);
        // Total variation along rows: the detail the blur removes.
        let tv = |d: &[f32]| d.windows(2).map(|p| (p[1] - p[0]).abs()).sum::<f32>();
        let (small, large) = (BlurTarget::new(0.5).unwrap(), BlurTarget::new(2.0).unwrap());
        let (a, b) = (small.generate(&x).unwrap(), large.generate(&x).unwrap());
        assert!(tv(&b.data) < tv(&a.data) && tv(&a.data) < tv(&x.data));
    }

    #[test]
    fn its_keys_are_checked_by_name() {
        let g = Geometry {
            image: (16, 16),
            mask_grid: (4, 4),
        };
        let mut p = toml::Table::new();
        p.insert("sigma".into(), (-1.0).into());
        let e = pixmim::registry::build_target("blur", &p, &g)
            .err()
            .unwrap();
        assert!(e.to_string().contains("target.sigma"), "{e}");
        let mut p = toml::Table::new();
        p.insert("radius".into(), 3.into());
        let e = pixmim::registry::build_target("blur", &p, &g)
            .err()
            .unwrap();
        assert!(e.to_string().contains("radius"), "{e}");
    }

    /// Host path only: made in the data workers on every device, the GPU's included.
    #[test]
    fn it_is_made_on_the_host_everywhere() {
        let t = BlurTarget::new(1.0).unwrap();
        for device in [
            DeviceSpec::Flex,
            DeviceSpec::Cuda(0),
            DeviceSpec::Wgpu(None),
        ] {
            assert!(!target_on_device(&t, &device), "{device}");
        }
    }

    /// The framework's own check of every registered target, this one included: not the
    /// input, and (had it a device path) the same on the device.
    #[test]
    fn it_passes_the_check_every_registered_target_passes() {
        let seen = pixmim_tests::check_every_target_generator(&DeviceSpec::Flex);
        assert!(seen.iter().any(|s| s.0 == "blur" && !s.1), "{seen:?}");
    }
}
