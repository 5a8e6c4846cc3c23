//! The raw-pixel target (MAE): the normalised input itself. Plugins register others
//! (PixMIM's low-pass target lives in `plugins/pixmim`).
use crate::component::{Geometry, TargetRegistration};
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

/// The training target for input `x`: the host target the data workers made, else the
/// generator's device path (for raw pixels, the input itself). One rule for training,
/// `bench` and `reconstruct`.
pub fn target_tensor(
    generator: &dyn crate::traits::TargetGenerator,
    host: Option<&crate::traits::ImageBatch>,
    x: burn::prelude::Tensor<RunBackend, 4>,
) -> burn::prelude::Tensor<RunBackend, 4> {
    match host {
        Some(t) => t.to_tensor::<RunBackend>(&x.device()),
        None => generator.generate_on_device(x),
    }
}

/// Where this run makes the target: where the generator's config says, else on the device
/// when it is a GPU (the device path is cheap there and saves uploading a second batch of
/// images; docs/performance.md, "GPU") and on the host (the data
/// workers, in parallel with the step) on a CPU.
pub fn target_on_device(
    generator: &dyn crate::traits::TargetGenerator,
    device: &crate::device::DeviceSpec,
) -> bool {
    generator.on_device().unwrap_or(!device.is_cpu())
}

/// A host target only when the target is not made on the device.
pub fn host_target(
    generator: &dyn crate::traits::TargetGenerator,
    images: &crate::traits::ImageBatch,
    on_device: bool,
) -> Option<crate::traits::ImageBatch> {
    if on_device {
        None
    } else {
        generator.generate(images)
    }
}
