//! The raw-pixel target (MAE): the normalised input itself. Plugins register others
//! (PixMIM's low-pass target lives in `plugins/pixmim`).
use crate::component::{Geometry, TargetRegistration};
use burn::module::{Module, Param};
use burn::prelude::*;

use crate::error::Result;
use crate::traits::{DeviceTarget, ImageBatch, TargetGenerator};
use crate::RunBackend;

pub struct PixelTarget;

impl DeviceTarget for PixelTarget {
    fn generate_on_device(&self, images: Tensor<RunBackend, 4>) -> Tensor<RunBackend, 4> {
        images
    }
}

impl TargetGenerator for PixelTarget {
    fn describe(&self) -> String {
        "raw pixels (the normalised input)".into()
    }
    fn generate(&self, _images: &ImageBatch) -> Option<ImageBatch> {
        None
    }
    fn device_path(&self) -> Option<&dyn DeviceTarget> {
        Some(self)
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
        let theta = trainable(generator).map(|init| {
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

/// Initial values of the generator's trainable parameters, if it has any (on its device path).
pub fn trainable(generator: &dyn TargetGenerator) -> Option<Vec<f32>> {
    generator.device_path()?.trainable()
}

/// The training target for input `x`: the host target the data workers made, else the
/// generator's device path (with its parameters when trainable), else the input itself (the
/// host path said the target is the input). One rule for training, `bench` and `reconstruct`.
pub fn target_tensor(
    generator: &dyn TargetGenerator,
    host: Option<&ImageBatch>,
    params: &TargetParams<RunBackend>,
    x: Tensor<RunBackend, 4>,
) -> Tensor<RunBackend, 4> {
    if let Some(t) = host {
        return t.to_tensor::<RunBackend>(&x.device());
    }
    match (generator.device_path(), &params.theta) {
        (Some(d), Some(theta)) => d.generate_trainable(x, theta.val()),
        (Some(d), None) => d.generate_on_device(x),
        (None, _) => x,
    }
}

/// Where this run makes the target. A generator with only a host path: on the host. A
/// trainable target: on the device (its parameters change every step). Otherwise where the
/// generator's config says, else on the device when it is a GPU (the device path is cheap
/// there and saves uploading a second batch of images; docs/performance.md, "GPU") and on the
/// host (the data workers, in parallel with the step) on a CPU.
pub fn target_on_device(
    generator: &dyn TargetGenerator,
    device: &crate::device::DeviceSpec,
) -> bool {
    match generator.device_path() {
        None => false,
        Some(d) if d.trainable().is_some() => true,
        Some(_) => generator.on_device().unwrap_or(!device.is_cpu()),
    }
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

/// Refuse a config that asks for the device path of a generator without one (`name`: the
/// registered name, for the message).
pub fn check_paths(generator: &dyn TargetGenerator, name: &str) -> Result<()> {
    if generator.on_device() == Some(true) && generator.device_path().is_none() {
        return Err(crate::Error::config(
            "target.on_device",
            format!("the `{name}` target has no device path; it is made on the host"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceSpec;

    /// A generator written for the host alone (a box blur of each row's neighbours).
    struct HostOnly;
    impl TargetGenerator for HostOnly {
        fn describe(&self) -> String {
            "host only".into()
        }
        fn generate(&self, images: &ImageBatch) -> Option<ImageBatch> {
            let mut out = images.clone();
            for (o, w) in out.data.iter_mut().skip(1).zip(images.data.windows(2)) {
                *o = 0.5 * (w[0] + w[1]);
            }
            Some(out)
        }
    }

    #[test]
    fn a_generator_with_only_a_host_path_is_made_on_the_host_on_every_device() {
        let gpu = DeviceSpec::Cuda(0);
        for device in [DeviceSpec::Flex, DeviceSpec::NdArray, gpu] {
            assert!(!target_on_device(&HostOnly, &device), "{device}");
        }
        // The pixel target has a device path: the input itself, on a GPU.
        assert!(target_on_device(&PixelTarget, &gpu));
        assert!(!target_on_device(&PixelTarget, &DeviceSpec::Flex));
    }

    #[test]
    fn without_a_host_target_the_device_path_or_the_input_is_the_target() {
        let device = DeviceSpec::Flex.train_device().unwrap();
        let images = ImageBatch {
            data: (0..2 * 3 * 4 * 4)
                .map(|i| (i as f32 * 0.37).sin())
                .collect(),
            ..ImageBatch::zeros(2, 3, 4, 4)
        };
        let x = images.to_tensor::<RunBackend>(&device);
        let host = HostOnly.generate(&images).unwrap();
        let params = TargetParams::new(&HostOnly, &device);
        let from_host = target_tensor(&HostOnly, Some(&host), &params, x.clone());
        assert_eq!(from_host.into_data().to_vec::<f32>().unwrap(), host.data);
        let params = TargetParams::new(&PixelTarget, &device);
        let pixels = target_tensor(&PixelTarget, None, &params, x);
        assert_eq!(pixels.into_data().to_vec::<f32>().unwrap(), images.data);
    }

    #[test]
    fn asking_for_a_missing_device_path_is_refused_by_key() {
        struct Asks;
        impl TargetGenerator for Asks {
            fn describe(&self) -> String {
                String::new()
            }
            fn generate(&self, images: &ImageBatch) -> Option<ImageBatch> {
                Some(images.clone())
            }
            fn on_device(&self) -> Option<bool> {
                Some(true)
            }
        }
        let e = check_paths(&Asks, "blur").unwrap_err().to_string();
        assert!(
            e.contains("target.on_device") && e.contains("`blur`"),
            "{e}"
        );
        assert!(check_paths(&PixelTarget, "pixel").is_ok());
    }
}
