//! Frozen encoder features of a labelled dataset: every patch visible, the final norm
//! applied, then the cls token (MAE's linear probe, `global_pool=False`) or the mean of the
//! tokens (ConvMAE, which has no cls token). Computed once and cached on disk, since kNN and
//! the linear probe both use fixed eval-transform views.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::DispatchDevice;

use crate::checkpoint::{self, HostTensor};
use crate::data::loader::{views, Source};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::job::{FeatureOptions, Features, Pool};
use crate::masking::{MaskBatch, MaskTensors};
use crate::registry::Composed;
use crate::traits::{Augmentation, Autoencoder};
use crate::RunBackend;

type B = RunBackend;

impl std::str::FromStr for Pool {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pool::Cls),
            "mean" => Ok(Pool::Mean),
            _ => Err(Error::Usage(format!(
                "--pool must be cls or mean, got `{s}`"
            ))),
        }
    }
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    pub fn num_classes(&self) -> usize {
        self.labels.iter().copied().max().map_or(0, |m| m + 1)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let t = vec![
            (
                "features".to_string(),
                HostTensor {
                    shape: vec![self.len(), self.dim],
                    data: self.data.clone(),
                },
            ),
            (
                "labels".to_string(),
                HostTensor {
                    shape: vec![self.len()],
                    data: self.labels.iter().map(|&l| l as f32).collect(),
                },
            ),
        ];
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        checkpoint::write_safetensors(path, &t, HashMap::new())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (mut t, _) = checkpoint::read_safetensors(path)?;
        let bad = || Error::Checkpoint {
            path: path.into(),
            msg: "is not a pixmim feature cache (features, labels)".into(),
        };
        let f = t.remove("features").ok_or_else(bad)?;
        let l = t.remove("labels").ok_or_else(bad)?;
        if f.shape.len() != 2 || l.shape != [f.shape[0]] {
            return Err(bad());
        }
        Ok(Self {
            dim: f.shape[1],
            data: f.data,
            labels: l.data.iter().map(|&v| v as usize).collect(),
        })
    }
}

/// A mask that removes nothing: every patch visible, in raster order.
pub fn all_visible(batch: usize, num_patches: usize) -> MaskBatch {
    let ids = (0..batch)
        .flat_map(|_| 0..num_patches as i64)
        .collect::<Vec<_>>();
    MaskBatch::from_shuffle(ids, batch, num_patches, num_patches)
}

/// Pool encoder tokens (B, N, D) to (B, D).
pub fn pool_tokens<Bk: Backend>(tokens: Tensor<Bk, 3>, has_cls: bool, pool: Pool) -> Tensor<Bk, 2> {
    let [b, n, d] = tokens.dims();
    match (pool, has_cls) {
        (Pool::Cls, true) => tokens.slice([0..b, 0..1, 0..d]).reshape([b, d]),
        (_, true) => tokens.slice([0..b, 1..n, 0..d]).mean_dim(1).reshape([b, d]),
        (_, false) => tokens.mean_dim(1).reshape([b, d]),
    }
}

/// The identity mask on the device, for a batch of `b`.
pub fn all_visible_tensors(c: &Composed, b: usize, device: &DispatchDevice) -> MaskTensors<B> {
    let (gh, gw) = c.geometry.mask_grid;
    all_visible(b, gh * gw).to_tensors::<B>(device)
}

pub fn extract<M, F>(c: &Composed, opts: &FeatureOptions, build: F) -> Result<Features>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    if opts.transform.output_size() != c.geometry.image {
        return Err(Error::Usage(format!(
            "the eval transform makes {:?} images; the model takes {:?}",
            opts.transform.output_size(),
            c.geometry.image
        )));
    }
    let device = opts.device.train_device()?;
    let model =
        crate::checkpoint::load_weights(build(&device, c.seed), &opts.checkpoint)?.no_grad();
    let bar = crate::log::progress_bar(opts.source.dataset.len() as u64, "features");
    let features = encode_source(
        c,
        &model,
        (&opts.source, opts.transform.as_ref()),
        (opts.batch_size, opts.pool),
        &device,
        |n| bar.inc(n as u64),
    );
    bar.finish_and_clear();
    features
}

/// The pooled features of every image of a labelled `source` through `transform` and an
/// encoder already loaded (no autodiff graph: pass a `no_grad` model), `batch` at a time;
/// `done` hears how many images each batch held.
pub fn encode_source<M: Autoencoder<B>>(
    c: &Composed,
    model: &M,
    (source, transform): (&Source, &dyn Augmentation),
    (batch, pool): (usize, Pool),
    device: &DispatchDevice,
    mut done: impl FnMut(usize),
) -> Result<Features> {
    let ds = &source.dataset;
    let labels = ds.class_labels()?.to_vec();
    let n = ds.len();
    let bs = batch.max(1);
    let mut data = Vec::new();
    let mut dim = 0;
    for start in (0..n).step_by(bs) {
        let items: Vec<(usize, usize)> = (start..(start + bs).min(n)).map(|i| (i, i)).collect();
        let imgs = views(source, transform, 0, &items)?;
        let mask = all_visible_tensors(c, items.len(), device);
        let tokens = model.encode(imgs.to_tensor::<B>(device), &mask);
        let f = pool_tokens(tokens, model.has_cls_token(), pool);
        dim = f.dims()[1];
        data.extend(f.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
        done(items.len());
    }
    Ok(Features { dim, data, labels })
}

/// Where features of (checkpoint, data, transform, pool) are cached: beside the checkpoint,
/// keyed by everything that changes them: the checkpoint's size and modification time (a
/// retrained checkpoint is never served stale features) and every data file's path, size
/// and modification time (images replaced in place are seen, which the folder's own time
/// does not show).
pub fn cache_path(
    checkpoint: &Path,
    data: &Dataset,
    transform: &dyn Augmentation,
    pool: Pool,
) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let canon = std::fs::canonicalize(checkpoint).unwrap_or_else(|_| checkpoint.to_path_buf());
    canon.hash(&mut h);
    if let Ok(m) = std::fs::metadata(checkpoint) {
        m.len().hash(&mut h);
        m.modified().ok().hash(&mut h);
    }
    std::fs::canonicalize(&data.root)
        .unwrap_or_else(|_| data.root.clone())
        .hash(&mut h);
    data.files_stamp().hash(&mut h);
    transform.describe().hash(&mut h);
    pool.hash(&mut h);
    let stem = checkpoint
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    checkpoint
        .parent()
        .unwrap_or(Path::new("."))
        .join("features")
        .join(format!("{stem}-{:016x}.safetensors", h.finish()))
}
