//! One image through a trained model with a given (or seeded) mask: the prediction, the
//! target and the loss, as the official forward pass computes them (`pixmim reconstruct`).
use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::DispatchDevice;

use crate::checkpoint::{self, HostTensor};
use crate::data::seed::{rng, Purpose};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::registry::Composed;
use crate::traits::{Autoencoder, ImageBatch};
use crate::RunBackend;

type B = RunBackend;

pub struct ReconstructOptions {
    /// Weights in the official key layout (a pixmim checkpoint, or an exported/imported file).
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    /// One normalised image (1, 3, H, W).
    pub image: ImageBatch,
    /// Per-patch (or per-unit) noise deciding the mask; `None` draws it from `seed`.
    pub noise: Option<Vec<f32>>,
    pub seed: u64,
}

/// Everything for one image, flattened row-major.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    pub loss: f32,
    /// (L, p*p*3) in (row, col, channel) patch order.
    pub pred: Vec<f32>,
    /// (L,), 1 = removed.
    pub mask: Vec<f32>,
    /// (L, p*p*3), after norm_pix when the model uses it.
    pub target: Vec<f32>,
    /// (L, p*p*3): the target before norm_pix (the input's patches, or the low-pass target).
    pub target_pixels: Vec<f32>,
    pub patch: usize,
    pub grid: (usize, usize),
    pub norm_pix: bool,
}

/// Load `checkpoint` into the model; every model parameter must be in the file with its shape.
pub fn load_weights<M: AutodiffModule<B>>(model: M, path: &std::path::Path) -> Result<M> {
    let (tensors, _) = checkpoint::read_safetensors(path)?;
    let params: HashMap<String, HostTensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .collect();
    let (model, unused) = checkpoint::import_params(model, &params, path)?;
    if !unused.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "has tensors this model lacks (another method or preset?): {}",
                unused.join(", ")
            ),
        });
    }
    Ok(model)
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 tensor")
}

pub fn reconstruct<M, F>(
    c: &Composed,
    opts: &ReconstructOptions,
    build: F,
) -> Result<Reconstruction>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    let device = opts.device.train_device()?;
    let (h, w) = c.geometry.image;
    let img = &opts.image;
    if (img.batch, img.channels, img.height, img.width) != (1, 3, h, w) {
        return Err(Error::Usage(format!(
            "the image is {}x{}x{}x{}; this model takes 1x3x{h}x{w}",
            img.batch, img.channels, img.height, img.width
        )));
    }
    let model = load_weights(build(&device, c.seed), &opts.checkpoint)?;
    let mask = match &opts.noise {
        Some(noise) => c.parts.masking.mask_from_noise(1, noise)?,
        None => c
            .parts
            .masking
            .sample(1, &mut rng(opts.seed, Purpose::Mask, 0)),
    };
    let mask_t = mask.to_tensors::<B>(&device);
    let x = img.to_tensor::<B>(&device);
    let host_t = super::host_target(c.parts.target.as_ref(), img);
    let target_img = super::target_tensor(c.parts.target.as_ref(), host_t.as_ref(), x.clone());
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
        pred: host(pred),
        mask: host(mask_t.mask),
        target: host(target),
        target_pixels: host(pixels),
        patch: p,
        grid: (h / p, w / p),
        norm_pix: model.norm_pix(),
    })
}
