//! The adaptive low-pass target of PixMIM's appendix (Table 21; numerics §2.3): the radius
//! is learnt with the model instead of fixed at 40.
//!
//! r = lo + (hi - lo) * sigmoid(theta), so r stays in [lo, hi] (20 and 60 at 224, scaled with
//! the shorter side as the fixed radius is) and starts at `radius_init` (40 at 224). The ideal
//! disk has no gradient in r, so the disk is a smooth one, sigmoid((r - d) / width), d a bin's
//! distance from the centre; as width -> 0 it is the ideal (closed) disk wherever no bin lies
//! exactly on the circle. theta is a trainable target parameter
//! ([`pixmim_core::target::TargetParams`]): trained by the model's AdamW without weight decay,
//! saved in checkpoints as `target.theta`, logged as `target_radius`.
//!
//! The target is made on the device (its parameter changes every step), by the DFT products
//! of [`LowPassOnDevice::smooth_target`] on the bins within hi + 16 width of the centre (the
//! sigmoid is below 1.2e-7 beyond).

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::DispatchDevice;
use serde::Deserialize;

use pixmim_core::device::DeviceSpec;
use pixmim_core::registry::{Geometry, TargetRegistration};
use pixmim_core::traits::{DeviceTarget, ImageBatch, TargetGenerator};
use pixmim_core::{Error, Result, RunBackend};

use crate::lowpass::{default_radius, LowPassFilter};
use crate::lowpass_device::{LowPassOnDevice, MatricesCache};

/// How far beyond the largest radius the support reaches, in edge widths.
const SUPPORT_WIDTHS: f64 = 16.0;

pub struct AdaptiveLowPass {
    pub height: usize,
    pub width: usize,
    /// The radius's range and start, in frequency bins.
    pub radius_min: f64,
    pub radius_max: f64,
    pub radius_init: f64,
    /// The smooth disk's edge width, in frequency bins.
    pub edge_width: f64,
    support: LowPassFilter,
    matrices: MatricesCache,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveParams {
    #[serde(default)]
    radius_min: Option<f64>,
    #[serde(default)]
    radius_max: Option<f64>,
    #[serde(default)]
    radius_init: Option<f64>,
    #[serde(default = "default_width")]
    width: f64,
}

/// One bin: a sharp edge that still passes a gradient to the radius.
fn default_width() -> f64 {
    1.0
}

impl AdaptiveLowPass {
    /// `radius_*` unset: 20, 60 and 40 at 224, scaled with the shorter side.
    pub fn new(
        (height, width): (usize, usize),
        (radius_min, radius_max, radius_init): (Option<f64>, Option<f64>, Option<f64>),
        edge_width: f64,
    ) -> Result<Self> {
        let at_224 = |r: f64| default_radius(height, width) * r / 40.0;
        let lo = radius_min.unwrap_or_else(|| at_224(20.0));
        let hi = radius_max.unwrap_or_else(|| at_224(60.0));
        let init = radius_init.unwrap_or_else(|| at_224(40.0));
        if !(lo.is_finite() && lo >= 0.0) {
            return Err(Error::config(
                "target.radius_min",
                format!("must be >= 0, got {lo}"),
            ));
        }
        if !(hi.is_finite() && hi > lo) {
            return Err(Error::config(
                "target.radius_max",
                format!("must be above radius_min ({lo}), got {hi}"),
            ));
        }
        if !(init > lo && init < hi) {
            return Err(Error::config(
                "target.radius_init",
                format!(
                    "must lie strictly between radius_min ({lo}) and radius_max ({hi}), got {init}"
                ),
            ));
        }
        if !(edge_width.is_finite() && edge_width > 0.0) {
            return Err(Error::config(
                "target.width",
                format!("must be > 0, got {edge_width}"),
            ));
        }
        let support_radius = hi + SUPPORT_WIDTHS * edge_width;
        Ok(Self {
            height,
            width,
            radius_min: lo,
            radius_max: hi,
            radius_init: init,
            edge_width,
            support: LowPassFilter::new(height, width, support_radius),
            matrices: MatricesCache::default(),
        })
    }

    /// theta at the start: the logit of where `radius_init` sits in [lo, hi].
    pub fn theta_init(&self) -> f64 {
        let p = (self.radius_init - self.radius_min) / (self.radius_max - self.radius_min);
        (p / (1.0 - p)).ln()
    }

    /// The radius theta stands for (host side, for logs).
    pub fn radius(&self, theta: f64) -> f64 {
        self.radius_min + (self.radius_max - self.radius_min) / (1.0 + (-theta).exp())
    }

    fn initial_theta(&self, device: &DispatchDevice) -> Tensor<RunBackend, 1> {
        Tensor::from_floats([self.theta_init() as f32], device)
    }
}

impl TargetGenerator for AdaptiveLowPass {
    fn describe(&self) -> String {
        format!(
            "adaptive low-pass (PixMIM appendix): radius learnt in [{}, {}] from {}, smooth edge {} bins, at {}x{}",
            self.radius_min, self.radius_max, self.radius_init, self.edge_width, self.height, self.width
        )
    }
    fn resolved_params(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("radius_min".into(), self.radius_min.into());
        t.insert("radius_max".into(), self.radius_max.into());
        t.insert("radius_init".into(), self.radius_init.into());
        t.insert("width".into(), self.edge_width.into());
        t
    }
    fn on_device(&self) -> Option<bool> {
        Some(true)
    }
    fn device_path(&self) -> Option<&dyn DeviceTarget> {
        Some(self)
    }
    /// At the initial radius, on the CPU (`pixmim preview`): training makes it on the device.
    fn generate(&self, images: &ImageBatch) -> Option<ImageBatch> {
        let device = DeviceSpec::Flex.train_device().ok()?;
        let y = self.generate_on_device(images.to_tensor::<RunBackend>(&device));
        Some(ImageBatch {
            data: y.into_data().convert::<f32>().to_vec().ok()?,
            ..images.clone()
        })
    }
}

impl DeviceTarget for AdaptiveLowPass {
    fn trainable(&self) -> Option<Vec<f32>> {
        Some(vec![self.theta_init() as f32])
    }
    fn generate_trainable(
        &self,
        images: Tensor<RunBackend, 4>,
        theta: Tensor<RunBackend, 1>,
    ) -> Tensor<RunBackend, 4> {
        let device = images.device();
        let radius = sigmoid(theta) * (self.radius_max - self.radius_min) + self.radius_min;
        self.matrices
            .get(&device, || LowPassOnDevice::new(&self.support, &device))
            .smooth_target(images, radius, self.edge_width)
    }
    /// At the initial radius (`pixmim bench`'s target timing).
    fn generate_on_device(&self, images: Tensor<RunBackend, 4>) -> Tensor<RunBackend, 4> {
        let theta = self.initial_theta(&images.device());
        self.generate_trainable(images, theta)
    }
    fn trainable_metrics(&self, theta: &[f32]) -> Vec<(String, f64)> {
        theta
            .first()
            .map(|&t| vec![("target_radius".to_string(), self.radius(t as f64))])
            .unwrap_or_default()
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn TargetGenerator>> {
    let p: AdaptiveParams = pixmim_core::config::parse_params(params, "target")?;
    let radii = (p.radius_min, p.radius_max, p.radius_init);
    Ok(Box::new(AdaptiveLowPass::new(g.image, radii, p.width)?))
}

inventory::submit! {
    TargetRegistration {
        name: "adaptive_lowpass",
        description: "low-pass target with a learnt radius in [20, 60] at 224 and a smooth disk (PixMIM Table 21)",
        params: &["radius_min", "radius_max", "radius_init", "width"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowpass::{Band, FrequencyTarget};

    fn image(h: usize, w: usize, seed: u32) -> ImageBatch {
        let mut s = seed;
        let data = (0..3 * h * w)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 3.0
            })
            .collect();
        ImageBatch {
            batch: 1,
            channels: 3,
            height: h,
            width: w,
            data,
        }
    }

    fn device() -> DispatchDevice {
        DeviceSpec::Flex.train_device().unwrap()
    }

    /// theta = 0 puts r in the middle of [lo, hi]; a width far below a bin makes the smooth
    /// disk the ideal one, so the target is the fixed low-pass target at that radius (no bin
    /// lies on these circles: half-integer offsets on the even size, r² not an integer on
    /// the odd one).
    #[test]
    fn a_vanishing_edge_width_gives_the_fixed_low_pass_target() {
        for (h, w, lo, hi) in [(16, 16, 2.0, 8.0), (15, 13, 3.0, 6.0), (20, 12, 1.0, 4.0)] {
            let r = (lo + hi) / 2.0;
            let t = AdaptiveLowPass::new((h, w), (Some(lo), Some(hi), Some(r)), 1e-4).unwrap();
            assert_eq!(t.theta_init(), 0.0);
            let x = image(h, w, (h * w) as u32);
            let got = t.generate(&x).unwrap();
            let fixed = FrequencyTarget::new(h, w, Some(r), Band::Low).unwrap();
            let want = fixed.generate(&x).unwrap();
            let err = got
                .data
                .iter()
                .zip(&want.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-4, "{h}x{w} r={r}: {err}");
        }
    }

    /// The gradient of sum(target * weights) in theta, by autodiff through the DFT products,
    /// equals central finite differences of the forward pass.
    #[test]
    fn the_gradient_in_the_radius_matches_finite_differences() {
        let (h, w) = (16, 12);
        let t = AdaptiveLowPass::new((h, w), (Some(2.0), Some(7.0), Some(4.3)), 1.5).unwrap();
        let dev = device();
        let x = image(h, w, 3).to_tensor::<RunBackend>(&dev);
        let weights = image(h, w, 11).to_tensor::<RunBackend>(&dev);
        let objective = |theta: f64, grad: bool| {
            let mut th = Tensor::<RunBackend, 1>::from_floats([theta as f32], &dev);
            if grad {
                th = th.require_grad();
            }
            let y = t.generate_trainable(x.clone(), th.clone());
            ((y * weights.clone()).sum(), th)
        };
        for theta in [t.theta_init(), -1.0, 0.8] {
            let (loss, th) = objective(theta, true);
            let g = th.grad(&loss.backward()).unwrap().into_scalar() as f64;
            let step = 1e-2;
            let at = |d: f64| objective(theta + d, false).0.into_scalar() as f64;
            let fd = (at(step) - at(-step)) / (2.0 * step);
            assert!(
                (g - fd).abs() <= 1e-2 * fd.abs().max(1.0),
                "theta {theta}: autodiff {g} vs finite differences {fd}"
            );
            assert!(fd.abs() > 1e-3, "the radius should matter: {fd}");
        }
    }

    #[test]
    fn radii_default_to_20_40_60_at_224_scaled_and_bad_ones_name_their_key() {
        let t = AdaptiveLowPass::new((112, 112), (None, None, None), 1.0).unwrap();
        assert_eq!(
            (t.radius_min, t.radius_init, t.radius_max),
            (10.0, 20.0, 30.0)
        );
        assert!((t.radius(t.theta_init()) - 20.0).abs() < 1e-12);
        for (radii, width, key) in [
            ((Some(5.0), Some(4.0), None), 1.0, "target.radius_max"),
            ((Some(-1.0), None, None), 1.0, "target.radius_min"),
            ((None, None, Some(30.0)), 1.0, "target.radius_init"),
            ((None, None, None), 0.0, "target.width"),
        ] {
            let err = AdaptiveLowPass::new((112, 112), radii, width)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
