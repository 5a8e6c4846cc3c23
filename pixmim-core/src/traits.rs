//! The four parts of a MIM method (numerics §0; PixMIM paper §3.1).
use burn::module::Module;
use burn::prelude::*;
use rand::rngs::StdRng;

use crate::object_mask::{Foreground, MaskSource};

use crate::mask::MaskTensors;

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
    /// Images `start..start + n` as their own batch (a data-parallel shard).
    pub fn rows(&self, start: usize, n: usize) -> ImageBatch {
        let per = self.channels * self.height * self.width;
        ImageBatch {
            batch: n,
            data: self.data[start * per..(start + n) * per].to_vec(),
            ..*self
        }
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
    /// [`Self::apply`] to an image not yet decoded: an augmentation that crops decodes only
    /// the part its view reads ([`EncodedImage::pixels_for`]), with the same draws as `apply`. The
    /// default decodes all of it.
    fn apply_encoded(
        &self,
        img: &dyn EncodedImage,
        rng: &mut StdRng,
        out: &mut [f32],
    ) -> crate::Result<()> {
        self.apply(&*img.image()?, rng, out);
        Ok(())
    }
    /// Where the view of a `width` x `height` image comes from, drawn with exactly the RNG
    /// calls `apply` makes, so the same seed gives the same view. The object-coverage
    /// analysis uses it (paper §3.2); `None` when an augmentation cannot say.
    fn view_map(&self, _width: u32, _height: u32, _rng: &mut StdRng) -> Option<ViewMap> {
        None
    }
    /// Where the object masks this augmentation needs come from (`background_crop`); the
    /// data workers then load each image's mask and call [`Self::apply_with_object`].
    fn object_masks(&self) -> Option<&MaskSource> {
        None
    }
    /// [`Self::apply`] knowing the image's object (when [`Self::object_masks`] asks for it).
    fn apply_with_object(
        &self,
        img: &image::RgbImage,
        _object: Option<&Foreground>,
        rng: &mut StdRng,
        out: &mut [f32],
    ) {
        self.apply(img, rng, out)
    }
    /// [`Self::view_map`] knowing the image's object, with the draws of
    /// [`Self::apply_with_object`].
    fn view_map_with_object(
        &self,
        width: u32,
        height: u32,
        _object: Option<&Foreground>,
        rng: &mut StdRng,
    ) -> Option<ViewMap> {
        self.view_map(width, height, rng)
    }
}

/// An image whose size is known and whose pixels are decoded on request, as few of them as
/// asked for ([`crate::data::decode::Encoded`]: a JPEG's crop alone, at reduced scale where
/// the view shrinks it 2x or more).
pub trait EncodedImage {
    /// Names the image in errors.
    fn path(&self) -> &std::path::Path;
    /// (width, height) as shown, EXIF orientation applied.
    fn size(&self) -> (u32, u32);
    /// All of the image.
    fn image(&self) -> crate::Result<std::borrow::Cow<'_, image::RgbImage>>;
    /// Pixels that hold the sub-pixel `region` `[left, top, width, height]` and every pixel a
    /// resize of it to `size` (height, width) reads, with the region in their coordinates.
    fn pixels_for(
        &self,
        region: [f64; 4],
        size: (usize, usize),
    ) -> crate::Result<(std::borrow::Cow<'_, image::RgbImage>, [f64; 4])>;
}

/// View pixel (x, y) is sampled at source position (`x0 + (x + 0.5) * sx`,
/// `y0 + (y + 0.5) * sy`), then mirrored when `flip`: an axis-aligned resize of a crop,
/// which covers RRC, SRC (reflect padding lies outside the source) and centre crops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewMap {
    pub x0: f64,
    pub y0: f64,
    pub sx: f64,
    pub sy: f64,
    pub flip: bool,
    /// View (height, width).
    pub size: (usize, usize),
}

impl ViewMap {
    /// The view pixel whose sample area holds source pixel (x, y), if any.
    pub fn view_pixel(&self, x: usize, y: usize) -> Option<(usize, usize)> {
        let vx = ((x as f64 + 0.5 - self.x0) / self.sx).floor();
        let vy = ((y as f64 + 0.5 - self.y0) / self.sy).floor();
        let (h, w) = self.size;
        if vx < 0.0 || vy < 0.0 || vx >= w as f64 || vy >= h as f64 {
            return None;
        }
        let vx = vx as usize;
        Some((if self.flip { w - 1 - vx } else { vx }, vy as usize))
    }
}

/// Which patches are removed: per-sample ids_shuffle / ids_restore / mask (numerics §0.4), drawn in
/// the data workers so that runs are repeatable and resumable from the step number alone.
pub trait Corruption: Send + Sync {
    fn describe(&self) -> String;
    fn sample(&self, batch: usize, rng: &mut StdRng) -> crate::mask::MaskBatch;
    /// Length of one sample's noise: one value per patch, or per mask unit.
    fn noise_len(&self) -> usize;
    /// The mask that given noise (B x `noise_len`, row-major) decides, exactly as the
    /// official code: argsort ascending, the first ones are kept (numerics §0.4). Used to
    /// reproduce a reference forward pass (`pixmim reconstruct --noise`).
    fn mask_from_noise(&self, batch: usize, noise: &[f32])
        -> crate::Result<crate::mask::MaskBatch>;
}

/// What the decoder must predict, as an image in the input's normalised space; the loss then
/// patchifies it and applies norm_pix (numerics §0.6). [`Self::generate`] is the host path, run
/// in the data workers; a generator may also have a device path ([`Self::device_path`]). A
/// generator with only a host path runs on the host on every device: nothing is ever replaced
/// by raw pixels because a path is missing.
pub trait TargetGenerator: Send + Sync {
    fn describe(&self) -> String;
    /// The target for a batch, or `None` when the target is the input itself (raw pixels; no
    /// other generator may answer `None`).
    fn generate(&self, images: &ImageBatch) -> Option<ImageBatch>;
    /// Parameters worked out at build time (e.g. a default radius), written back into the
    /// resolved config so `info` and `OUT/config.toml` show what actually runs.
    fn resolved_params(&self) -> toml::Table {
        toml::Table::new()
    }
    /// Where the generator's config asks for the target: on the training device
    /// (`Some(true)`, refused at compose time without a [`Self::device_path`]) or in the data
    /// workers (`Some(false)`); `None` lets the run decide among the paths the generator has
    /// ([`crate::target::target_on_device`]).
    fn on_device(&self) -> Option<bool> {
        None
    }
    /// The same target computed on the training device, if the generator has that path
    /// (usually `Some(self)`); `None`, the default, keeps it on the host.
    fn device_path(&self) -> Option<&dyn DeviceTarget> {
        None
    }
}

/// A target generator's device path: the target of [`TargetGenerator::generate`] computed
/// next to the model (to the tolerance the generator's tests state), or a target with
/// trainable parameters, which exists only here.
pub trait DeviceTarget: Send + Sync {
    /// The target of normalised images (B, 3, H, W) on their device.
    fn generate_on_device(
        &self,
        images: Tensor<crate::RunBackend, 4>,
    ) -> Tensor<crate::RunBackend, 4>;
    /// Initial values of the target's trainable parameters (the adaptive low-pass target's
    /// radius logit), `None` for a fixed target. A trainable target is trained with the model
    /// ([`crate::target::TargetParams`]).
    fn trainable(&self) -> Option<Vec<f32>> {
        None
    }
    /// The target with trainable parameters `theta`, the gradient flowing into them; only
    /// called when [`Self::trainable`] is `Some`.
    fn generate_trainable(
        &self,
        images: Tensor<crate::RunBackend, 4>,
        _theta: Tensor<crate::RunBackend, 1>,
    ) -> Tensor<crate::RunBackend, 4> {
        self.generate_on_device(images)
    }
    /// Scalars to log for parameter values `theta` (e.g. the radius they stand for).
    fn trainable_metrics(&self, _theta: &[f32]) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Encoder + decoder: [`encode`](Self::encode) the visible patches, [`decode`](Self::decode)
/// the latent back to per-patch predictions (B, L, p*p*3) in the official (row, col, channel)
/// patch layout; `forward` is the two in turn.
pub trait Autoencoder<B: Backend>: Module<B> {
    /// Patch size of the prediction (the target is patchified with it).
    fn target_patch_size(&self) -> usize;
    /// Normalise each target patch by its mean and unbiased variance (numerics §0.6).
    fn norm_pix(&self) -> bool;
    /// Predictions (B, L, p*p*3) for `images` with `mask` applied.
    fn forward(&self, images: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3> {
        let latent = self.encode(images, mask);
        self.decode(latent, mask.ids_restore.clone())
    }
    /// The encoder alone, after its final norm: (B, N, D) tokens for the visible patches of
    /// `mask` (every patch, for evaluation; see [`crate::eval::features`]), in ascending-noise
    /// order, after the cls token where [`Self::has_cls_token`].
    fn encode(&self, images: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3>;
    /// The decoder: the latent of [`Self::encode`] and the mask's `ids_restore` to per-patch
    /// predictions (B, L, p*p*3).
    fn decode(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3>;
    /// Whether token 0 of [`encode`](Self::encode) is a cls token (ViT) or not (ConvMAE).
    fn has_cls_token(&self) -> bool;
    /// Set the stochastic-depth rate of the encoder's blocks, rising linearly with depth to
    /// `rate` as timm does (fine-tuning, paper Table 9). Pretraining uses none (numerics §0.5).
    fn with_drop_path(self, rate: f64) -> Self
    where
        Self: Sized;
    /// Run the transformer blocks' matrix products (encoder and decoder) in `precision`
    /// ([`crate::nn::precision`]); everything else stays f32.
    fn with_precision(self, precision: crate::nn::Precision) -> Self
    where
        Self: Sized;
    /// Extra scalars to log (e.g. MFF's fusion weights).
    fn metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// Masked MSE against `target` (B, 3, H, W), norm_pix if enabled (numerics §0.6).
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

/// A run's augmentation, masking and target generator, shared with the data workers.
pub struct Parts {
    pub augmentation: Box<dyn Augmentation>,
    pub masking: Box<dyn Corruption>,
    pub target: Box<dyn TargetGenerator>,
}
