//! The four parts of a MIM method (spec §0; PixMIM paper §3.1).
use burn::module::Module;
use burn::prelude::*;
use rand::rngs::StdRng;

use crate::masking::MaskTensors;

/// A batch of images on the host, (B, C, H, W) row-major f32, ImageNet-normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl ImageBatch {
    pub fn zeros(batch: usize, channels: usize, height: usize, width: usize) -> Self {
        Self {
            batch,
            channels,
            height,
            width,
            data: vec![0.0; batch * channels * height * width],
        }
    }
    /// Values of one image, (C, H, W).
    pub fn image(&self, b: usize) -> &[f32] {
        let n = self.channels * self.height * self.width;
        &self.data[b * n..(b + 1) * n]
    }
    pub fn image_mut(&mut self, b: usize) -> &mut [f32] {
        let n = self.channels * self.height * self.width;
        &mut self.data[b * n..(b + 1) * n]
    }
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        Tensor::from_data(
            TensorData::new(
                self.data.clone(),
                [self.batch, self.channels, self.height, self.width],
            ),
            device,
        )
    }
}

/// Image -> training view. Runs in the data workers, one image at a time.
pub trait Augmentation: Send + Sync {
    /// One line for `pixmim info` and logs.
    fn describe(&self) -> String;
    /// Output (height, width).
    fn output_size(&self) -> (usize, usize);
    /// Write the normalised (3, H, W) view of `img` into `out`.
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]);
}

/// Which patches are removed: per-sample ids_shuffle / ids_restore / mask (spec §0.4), drawn in
/// the data workers so that runs are repeatable and resumable from the step number alone.
pub trait Corruption: Send + Sync {
    fn describe(&self) -> String;
    fn sample(&self, batch: usize, rng: &mut StdRng) -> crate::masking::MaskBatch;
    /// Length of one sample's noise: one value per patch, or per mask unit.
    fn noise_len(&self) -> usize;
    /// The mask that given noise (B x `noise_len`, row-major) decides, exactly as the
    /// official code: argsort ascending, the first ones are kept (spec §0.4). Used to
    /// reproduce a reference forward pass (`pixmim reconstruct --noise`).
    fn mask_from_noise(
        &self,
        batch: usize,
        noise: &[f32],
    ) -> crate::Result<crate::masking::MaskBatch>;
}

/// What the decoder must predict, as an image in the input's normalised space; the loss then
/// patchifies it and applies norm_pix (spec §0.6). Runs on the host, in the data workers.
pub trait TargetGenerator: Send + Sync {
    fn describe(&self) -> String;
    /// The target for a batch, or `None` when the target is the input itself (raw pixels).
    fn generate(&self, images: &ImageBatch) -> Option<ImageBatch>;
    /// Parameters worked out at build time (e.g. a default radius), written back into the
    /// resolved config so `info` and `OUT/config.toml` show what actually runs.
    fn resolved_params(&self) -> toml::Table {
        toml::Table::new()
    }
    /// Compute the target on the training device instead of in the data workers.
    fn on_device(&self) -> bool {
        false
    }
    /// The device path, used when [`on_device`](Self::on_device) is true.
    fn generate_on_device(
        &self,
        images: Tensor<crate::RunBackend, 4>,
    ) -> Tensor<crate::RunBackend, 4> {
        images
    }
}

/// Encoder + decoder. `forward` returns per-patch predictions (B, L, p*p*3) in the spec's
/// (row, col, channel) patch layout.
pub trait Autoencoder<B: Backend>: Module<B> {
    /// Patch size of the prediction (the target is patchified with it).
    fn target_patch_size(&self) -> usize;
    /// Normalise each target patch by its mean and unbiased variance (spec §0.6).
    fn norm_pix(&self) -> bool;
    fn forward(&self, images: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3>;
    /// Extra scalars to log (e.g. MFF's fusion weights).
    fn metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// Masked MSE against `target` (B, 3, H, W), norm_pix if enabled (spec §0.6).
    fn loss(&self, pred: Tensor<B, 3>, target: Tensor<B, 4>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
        let t = crate::patchify::patchify(target, self.target_patch_size());
        let t = if self.norm_pix() {
            crate::loss::norm_pix(t)
        } else {
            t
        };
        crate::loss::masked_mse(pred, t, mask)
    }
}
