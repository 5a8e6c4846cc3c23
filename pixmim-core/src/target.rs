//! The raw-pixel target (MAE): the normalised input itself. Plugins register others
//! (PixMIM's low-pass target lives in `plugins/pixmim`).
use crate::component::{Geometry, TargetRegistration};
use burn::module::{Module, Param};
use burn::prelude::*;

use crate::error::Result;
use crate::traits::{ImageBatch, TargetGenerator};
use crate::RunBackend;

pub struct PixelTarget;

impl TargetGenerator for PixelTarget {
    fn describe(&self) -> String {
        "raw pixels (the normalised input)".into()
    }
    fn generate(&self, _images: &ImageBatch) -> Option<ImageBatch> {
        None
    }
}

fn build_pixel(params: &toml::Table, _g: &Geometry) -> Result<Box<dyn TargetGenerator>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = crate::config::parse_params(params, "target")?;
    Ok(Box::new(PixelTarget))
}

inventory::submit! {
    TargetRegistration {
        name: "pixel",
        description: "raw normalised pixels (MAE)",
        params: &[],
        build: build_pixel,
    }
}

/// The target's trainable parameters, `theta` (the adaptive low-pass target's radius
/// logit), or none for a fixed target. They are trained with the model's AdamW (no weight
/// decay, no gradient clipping: they are not the model's), saved in checkpoints as
/// `target.theta` with their moments, and resumed exactly.
#[derive(Module, Debug)]
pub struct TargetParams<B: Backend> {
    pub theta: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> TargetParams<B> {
    /// The initial parameters of `generator` on `device`.
    pub fn new(generator: &dyn TargetGenerator, device: &B::Device) -> Self {
        let theta = generator.trainable().map(|init| {
            let n = init.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(init, [n]), device))
        });
        Self { theta }
    }

    /// The current values (a device read), `None` for a fixed target.
    pub fn values(&self) -> Option<Vec<f32>> {
        self.theta.as_ref().map(|t| {
            t.val()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 values")
        })
    }
}

/// The training target for input `x`: the host target the data workers made, else the
/// generator's device path (for raw pixels, the input itself; for a trainable target, with
/// its parameters). One rule for training, `bench` and `reconstruct`.
pub fn target_tensor(
    generator: &dyn TargetGenerator,
    host: Option<&ImageBatch>,
    params: &TargetParams<RunBackend>,
    x: Tensor<RunBackend, 4>,
) -> Tensor<RunBackend, 4> {
    match (host, &params.theta) {
        (Some(t), _) => t.to_tensor::<RunBackend>(&x.device()),
        (None, Some(theta)) => generator.generate_trainable(x, theta.val()),
        (None, None) => generator.generate_on_device(x),
    }
}

/// Where this run makes the target: where the generator's config says, else on the device
/// when it is a GPU (the device path is cheap there and saves uploading a second batch of
/// images; docs/performance.md, "GPU") and on the host (the data
/// workers, in parallel with the step) on a CPU. A trainable target is always made on the
/// device: its parameters change every step.
pub fn target_on_device(
    generator: &dyn TargetGenerator,
    device: &crate::device::DeviceSpec,
) -> bool {
    generator.trainable().is_some() || generator.on_device().unwrap_or(!device.is_cpu())
}

/// A host target only when the target is not made on the device.
pub fn host_target(
    generator: &dyn TargetGenerator,
    images: &ImageBatch,
    on_device: bool,
) -> Option<ImageBatch> {
    if on_device {
        None
    } else {
        generator.generate(images)
    }
}
