//! `pixmim reconstruct`: one image through trained weights with a chosen mask; a four-panel
//! PNG and, with `--dump`, the tensors a reference implementation can be checked against.
use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use pixmim::augment::CenterCrop;
use pixmim::checkpoint::HostTensor;
use pixmim::device::DeviceSpec;
use pixmim::image_grid::write_grid;
use pixmim::job::{ReconstructInput, ReconstructOptions};
use pixmim::registry::Composed;
use pixmim::traits::ImageBatch;
use pixmim::{Error, Result};

use crate::Compose;

#[derive(Args)]
pub struct ReconstructArgs {
    /// Weights: a pixmim checkpoint (its method and config are used unless given), or any
    /// safetensors file in the official key layout (then pass --method and --preset/--set).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    compose: Compose,
    /// An image file (resized on the short side and centre-cropped, then normalised), or a
    /// `.npy` float32 (3, H, W) already ImageNet-normalised (used as is).
    #[arg(long)]
    image: PathBuf,
    /// `.npy` float32 of shape (L,) or (1, L): the per-patch (LSMAE: per-unit) noise whose
    /// ascending argsort decides the mask, as in the official code (numerics §0.4).
    #[arg(long, conflicts_with = "seed")]
    noise: Option<PathBuf>,
    /// Seed of the mask when no --noise is given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mask ratio (default: the config's).
    #[arg(long)]
    mask_ratio: Option<f64>,
    /// The PNG: original | masked input | reconstruction | reconstruction + visible patches.
    #[arg(long)]
    out: PathBuf,
    /// Also write `loss`, `pred`, `mask`, `target` (after norm_pix) as safetensors.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// cpu (= flex), flex, ndarray, cuda, cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn config(a: &ReconstructArgs) -> Result<Composed> {
    let mut sets = Vec::new();
    if let Some(r) = a.mask_ratio {
        sets.push(format!("masking.ratio={r}"));
    }
    crate::checkpoint_config(&a.checkpoint, &a.compose, sets)
}

fn load_image(a: &ReconstructArgs, (h, w): (usize, usize)) -> Result<ImageBatch> {
    let data = if a.image.extension().and_then(|e| e.to_str()) == Some("npy") {
        let (shape, v) = pixmim::npy::read(&a.image)?;
        if shape[..] != [3, h, w] && shape[..] != [1, 3, h, w] {
            return Err(Error::data(
                &a.image,
                format!("expected shape (3, {h}, {w}) for this model, got {shape:?}"),
            ));
        }
        v
    } else {
        let img = pixmim::data::decode::decode(&a.image)?;
        // The evaluation transform without a border: the short side to the model's size
        // (bicubic), the centre kept.
        let mut out = vec![0.0; 3 * h * w];
        CenterCrop::eval((h, w), 1.0)?.view(&img, &mut out);
        out
    };
    Ok(ImageBatch {
        batch: 1,
        channels: 3,
        height: h,
        width: w,
        data,
    })
}

fn read_noise(path: &PathBuf) -> Result<Vec<f32>> {
    let (shape, v) = pixmim::npy::read(path)?;
    match shape[..] {
        [_] | [1, _] => Ok(v),
        _ => Err(Error::data(
            path,
            format!("expected shape (L,) or (1, L), got {shape:?}"),
        )),
    }
}

pub fn run(a: &ReconstructArgs) -> Result<()> {
    let device = DeviceSpec::parse(&a.device)?;
    device.device()?;
    let c = config(a)?;
    let image = load_image(a, c.geometry.image)?;
    let noise = a.noise.as_ref().map(read_noise).transpose()?;
    let input = ReconstructInput {
        image: image.clone(),
        noise,
        seed: a.seed,
    };
    let mut rec = None;
    c.reconstruct(ReconstructOptions {
        checkpoint: a.checkpoint.clone(),
        device,
        inputs: Box::new(std::iter::once(Ok(input))),
        each: Box::new(|_, r| {
            rec = Some(r);
            Ok(())
        }),
    })?;
    let rec = rec.expect("one batch in, one reconstruction out");
    let (p, grid) = (rec.patch, rec.grid);
    write_grid(&[rec.panels(0, &image.data)], &a.out)?;
    if let Some(dump) = &a.dump {
        let l = grid.0 * grid.1;
        let d = p * p * 3;
        let t = |shape: Vec<usize>, data: Vec<f32>| HostTensor { shape, data };
        let tensors = vec![
            ("loss".to_string(), t(vec![], vec![rec.loss])),
            ("pred".to_string(), t(vec![1, l, d], rec.pred.clone())),
            ("mask".to_string(), t(vec![1, l], rec.mask.clone())),
            ("target".to_string(), t(vec![1, l, d], rec.target.clone())),
        ];
        let meta = HashMap::from([
            ("method".to_string(), c.method.name().to_string()),
            ("norm_pix".to_string(), rec.norm_pix.to_string()),
        ]);
        pixmim::checkpoint::write_safetensors(dump, &tensors, meta)?;
    }
    let kept = rec.mask.iter().filter(|&&m| m == 0.0).count();
    eprintln!(
        "{}: loss {:.6}, {kept} of {} patches visible{}; wrote {}",
        c.method.name(),
        rec.loss,
        rec.mask.len(),
        if rec.norm_pix {
            " (norm_pix: predictions un-normalised with the visible patches' mean and std)"
        } else {
            ""
        },
        a.out.display()
    );
    println!("loss={:.6}", rec.loss);
    Ok(())
}
