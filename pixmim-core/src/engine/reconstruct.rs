//! Images through a trained model with a given (or seeded) mask: the prediction, the
//! target and the loss, as the official forward pass computes them (`pixmim reconstruct`).
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::DispatchDevice;

use crate::augment::to_rgb_image;
use crate::checkpoint;
use crate::data::seed::{rng, Purpose};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::job::{ReconstructInput, ReconstructOptions, Reconstruction};
use crate::patchify::{patchify_host, unpatchify_host};
use crate::preview::grey_out_masked;
use crate::registry::Composed;
use crate::target::TargetParams;
use crate::traits::Autoencoder;
use crate::RunBackend;

type B = RunBackend;

impl Reconstruction {
    fn patch_len(&self) -> usize {
        self.patch * self.patch * 3
    }
    fn num_patches(&self) -> usize {
        self.grid.0 * self.grid.1
    }
    /// Image `b`'s mask (L,), 1 = removed.
    pub fn mask_of(&self, b: usize) -> &[f32] {
        let l = self.num_patches();
        &self.mask[b * l..(b + 1) * l]
    }

    /// Image `b`'s prediction as pixels (L, p*p*3) in the input's normalised space. With
    /// norm_pix the model predicts each patch normalised by its own mean and std, which a
    /// masked patch does not reveal; as the official demo, predictions are mapped back with
    /// the mean and std of the visible patches (averaged over them).
    pub fn predicted_pixels(&self, b: usize) -> Vec<f32> {
        let (n, l) = (self.patch_len(), self.num_patches());
        let pred = &self.pred[b * l * n..(b + 1) * l * n];
        if !self.norm_pix {
            return pred.to_vec();
        }
        let pixels = &self.target_pixels[b * l * n..(b + 1) * l * n];
        let mask = self.mask_of(b);
        let (mut mean, mut std, mut k) = (0.0f64, 0.0f64, 0usize);
        for (t, patch) in pixels.chunks(n).enumerate() {
            if mask[t] == 0.0 {
                let m = patch.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var =
                    patch.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64;
                mean += m;
                std += (var + 1e-6).sqrt();
                k += 1;
            }
        }
        let (mean, std) = (mean / k.max(1) as f64, std / k.max(1) as f64);
        pred.iter()
            .map(|&v| (v as f64 * std + mean) as f32)
            .collect()
    }

    /// MAE's "reconstruction + visible": the input's own patches where visible, the
    /// prediction where masked. `input_patches` is image `b` patchified (L, p*p*3).
    pub fn pasted(&self, b: usize, input_patches: &[f32]) -> Vec<f32> {
        let n = self.patch_len();
        let mask = self.mask_of(b);
        self.predicted_pixels(b)
            .chunks(n)
            .zip(input_patches.chunks(n))
            .enumerate()
            .flat_map(|(t, (pr, inp))| {
                if mask[t] == 1.0 {
                    pr.to_vec()
                } else {
                    inp.to_vec()
                }
            })
            .collect()
    }

    /// MAE's demo row for image `b` (its normalised (C, H, W) pixels `chw`): original |
    /// masked | reconstruction | reconstruction + visible.
    pub fn panels(&self, b: usize, chw: &[f32]) -> Vec<image::RgbImage> {
        let (p, grid) = (self.patch, self.grid);
        let (h, w) = (grid.0 * p, grid.1 * p);
        let recon = unpatchify_host(&self.predicted_pixels(b), p, grid);
        let pasted = self.pasted(b, &patchify_host(chw, 3, h, w, p));
        let original = to_rgb_image(chw, h, w);
        let masked = grey_out_masked(original.clone(), self.mask_of(b), grid);
        vec![
            original,
            masked,
            to_rgb_image(&recon, h, w),
            to_rgb_image(&unpatchify_host(&pasted, p, grid), h, w),
        ]
    }
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 tensor")
}

/// Load the checkpoint once, then run every input batch through it; returns the number of
/// batches.
pub fn reconstruct<M, F>(c: &Composed, opts: ReconstructOptions<'_>, build: F) -> Result<usize>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    let ReconstructOptions {
        checkpoint,
        device: spec,
        inputs,
        mut each,
    } = opts;
    let device = spec.train_device()?;
    let model = checkpoint::load_weights(build(&device, c.seed), &checkpoint)?;
    let target = TargetParams::new(c.parts.target.as_ref(), &device);
    let target = checkpoint::load_target_params(target, &checkpoint)?;
    let mut n = 0;
    for input in inputs {
        let input = input?;
        let rec = reconstruct_batch(c, (&model, &target), &spec, &device, &input)?;
        each(input, rec)?;
        n += 1;
    }
    Ok(n)
}

pub(super) fn reconstruct_batch<M: Autoencoder<B>>(
    c: &Composed,
    (model, target): (&M, &TargetParams<B>),
    spec: &DeviceSpec,
    device: &DispatchDevice,
    input: &ReconstructInput,
) -> Result<Reconstruction> {
    let (h, w) = c.geometry.image;
    let img = &input.image;
    if (img.channels, img.height, img.width) != (3, h, w) || img.batch == 0 {
        return Err(Error::Usage(format!(
            "the images are {}x{}x{}x{}; this model takes Bx3x{h}x{w}",
            img.batch, img.channels, img.height, img.width
        )));
    }
    let mask = match &input.noise {
        Some(noise) => c.parts.masking.mask_from_noise(img.batch, noise)?,
        None => c
            .parts
            .masking
            .sample(img.batch, &mut rng(input.seed, Purpose::Mask, 0)),
    };
    let mask_t = mask.to_tensors::<B>(device);
    let x = img.to_tensor::<B>(device);
    let on_device = super::target_on_device(c.parts.target.as_ref(), spec);
    let host_t = super::host_target(c.parts.target.as_ref(), img, on_device);
    let target_img =
        super::target_tensor(c.parts.target.as_ref(), host_t.as_ref(), target, x.clone());
    let pred = model.forward(x, &mask_t);
    let loss = model.loss(pred.clone(), target_img.clone(), mask_t.mask.clone());
    let p = model.target_patch_size();
    let pixels = crate::patchify::patchify(target_img, p);
    let target = if model.norm_pix() {
        crate::loss::norm_pix(pixels.clone())
    } else {
        pixels.clone()
    };
    Ok(Reconstruction {
        loss: host(loss)[0],
        batch: img.batch,
        pred: host(pred),
        mask: host(mask_t.mask),
        target: host(target),
        target_pixels: host(pixels),
        patch: p,
        grid: (h / p, w / p),
        norm_pix: model.norm_pix(),
    })
}
