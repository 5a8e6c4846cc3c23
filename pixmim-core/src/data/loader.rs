//! Batches are produced off the training thread: a producer thread walks the iterations in
//! order and decodes/augments each batch's images in parallel on a worker pool; a bounded
//! channel keeps a couple of batches ready.
//!
//! Sampling: an endless stream of per-epoch permutations of the dataset; iteration `i` takes
//! stream positions [i*B, (i+1)*B). Each image's augmentation RNG is keyed by its stream
//! position and each batch's mask RNG by `i`, so batch `i` is the same whatever the thread
//! count and whether the run was resumed.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::bad_files::BadFiles;
use super::dataset::Dataset;
use super::seed::{rng, Purpose};
use crate::config::OnError;
use crate::error::{Error, Result};
use crate::mask::MaskBatch;
use crate::object_mask::{Foreground, MaskSource};
use crate::traits::{Augmentation, EncodedImage, ImageBatch, Parts};

/// The rows of each global batch of `size` images that this process builds: all of them, or
/// rank r's `[r*size/W, (r+1)*size/W)` when W processes train one model (`crate::distributed`).
/// A row's images and mask are the same whichever process builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRows {
    pub size: usize,
    pub range: std::ops::Range<usize>,
}

impl BatchRows {
    pub fn all(size: usize) -> Self {
        Self {
            size,
            range: 0..size,
        }
    }

    /// Rank `rank`'s share of `world` equal shares (the caller checks that `size` splits).
    pub fn share(size: usize, rank: usize, world: usize) -> Self {
        let per = size / world.max(1);
        Self {
            size,
            range: rank * per..(rank + 1) * per,
        }
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

pub struct Batch {
    pub iteration: usize,
    pub images: ImageBatch,
    /// `None`: the target is the input itself.
    pub target: Option<ImageBatch>,
    pub mask: MaskBatch,
}

/// Dataset index of stream position `k`.
pub fn stream_index(
    seed: u64,
    len: usize,
    k: usize,
    cache: &mut Option<(usize, Vec<usize>)>,
) -> usize {
    let epoch = k / len;
    if cache.as_ref().map(|c| c.0) != Some(epoch) {
        let mut perm: Vec<usize> = (0..len).collect();
        perm.shuffle(&mut rng(seed, Purpose::Shuffle, epoch as u64));
        *cache = Some((epoch, perm));
    }
    cache.as_ref().unwrap().1[k % len]
}

/// A dataset with its bad-file policy: where a batch's images come from.
pub struct Source {
    pub dataset: Dataset,
    pub on_error: OnError,
    pub bad: Arc<BadFiles>,
    /// May a crop that shrinks 2x or more decode its JPEG at a reduced scale
    /// (`data.scaled_decode`; [`super::decode::Encoded::pixels_for`])?
    pub scaled_decode: bool,
}

impl Source {
    /// Fail on any unreadable file, keeping no record (evaluation, the kNN monitor, previews);
    /// JPEGs decoded at full size, as the references evaluate, so scores compare with theirs
    /// (a crop is still decoded alone, which changes no pixel).
    pub fn strict(dataset: Dataset) -> Self {
        Self {
            dataset,
            on_error: OnError::Fail,
            bad: Arc::new(BadFiles::in_memory()),
            scaled_decode: false,
        }
    }

    /// Decode dataset item `i`; under `skip`, an unreadable item is recorded and the next
    /// readable item (in dataset order, wrapping) takes its place. Decoding is deterministic,
    /// so the replacement is the same in every run and after every resume.
    pub fn load(&self, i: usize) -> Result<image::RgbImage> {
        self.load_with_object(i, None).map(|(img, _)| img)
    }

    /// [`Self::load`], with the item's object mask from `masks` when given; a missing or
    /// unreadable mask counts as an unreadable item.
    pub fn load_with_object(
        &self,
        i: usize,
        masks: Option<&MaskSource>,
    ) -> Result<(image::RgbImage, Option<Foreground>)> {
        self.first_readable(i, |j| {
            let img = self.dataset.read(j)?;
            let path = &self.dataset.items[j];
            let encoded = || self.dataset.encoded(j).map(|(bytes, _)| bytes);
            let object = masks.map(|m| m.load(path, &img, encoded)).transpose()?;
            Ok((img, object))
        })
    }

    /// `read(j)` for the first item `j` from `i` on (in dataset order, wrapping) it succeeds
    /// on: only `i` under `fail` (its error then says how to train past it), every item not
    /// known to be bad under `skip`, recording each that fails.
    pub fn first_readable<T>(
        &self,
        i: usize,
        mut read: impl FnMut(usize) -> Result<T>,
    ) -> Result<T> {
        let items = &self.dataset.items;
        let mut first_error = None;
        for j in (0..items.len()).map(|d| (i + d) % items.len()) {
            let path = &items[j];
            if self.on_error == OnError::Skip && self.bad.is_known(path) {
                continue;
            }
            match read(j) {
                Ok(sample) => return Ok(sample),
                Err(e) if self.on_error == OnError::Fail => {
                    return Err(match e {
                        Error::Data { path, msg } => Error::data(
                            path,
                            format!("{msg} (set data.on_error = \"skip\" to train past it)"),
                        ),
                        other => other,
                    })
                }
                Err(e) => {
                    self.bad.record(path, &e)?;
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(Error::data(
            &self.dataset.root,
            format!(
                "no readable image in the dataset ({} files all failed{})",
                items.len(),
                first_error
                    .map(|e| format!("; first: {e}"))
                    .unwrap_or_default()
            ),
        ))
    }
}

pub struct Loader {
    rx: Receiver<Result<Batch>>,
    _producer: std::thread::JoinHandle<()>,
}

impl Loader {
    /// Produce `rows` of the global batch for each of `iterations`; the workers make the target too unless
    /// it is made on the device ([`crate::target::target_on_device`]).
    pub fn spawn(
        source: Arc<Source>,
        parts: Arc<Parts>,
        seed: u64,
        rows: BatchRows,
        iterations: std::ops::Range<usize>,
        num_workers: usize,
        target_on_device: bool,
    ) -> Self {
        let (tx, rx) = sync_channel(2);
        let producer = std::thread::Builder::new()
            .name("pixmim-data".into())
            .spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(num_workers)
                    .thread_name(|i| format!("pixmim-worker-{i}"))
                    .build()
                    .expect("worker pool");
                let mut cache = None;
                for it in iterations {
                    let batch = pool.install(|| {
                        make_batch(
                            &source,
                            &parts,
                            seed,
                            &rows,
                            it,
                            target_on_device,
                            &mut cache,
                        )
                    });
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return; // the trainer hung up, or we reported an error
                    }
                }
            })
            .expect("spawn data thread");
        Self {
            rx,
            _producer: producer,
        }
    }

    pub fn next(&self) -> Option<Result<Batch>> {
        self.rx.recv().ok()
    }
}

/// Build `rows` of iteration `it` (pure function of its arguments); the host target only
/// when it is not made on the device.
pub fn make_batch(
    source: &Source,
    parts: &Parts,
    seed: u64,
    rows: &BatchRows,
    it: usize,
    target_on_device: bool,
    cache: &mut Option<(usize, Vec<usize>)>,
) -> Result<Batch> {
    let first = it * rows.size;
    let idx: Vec<(usize, usize)> = rows
        .range
        .clone()
        .map(|j| {
            (
                first + j,
                stream_index(seed, source.dataset.len(), first + j, cache),
            )
        })
        .collect();
    let images = views(source, parts.augmentation.as_ref(), seed, &idx)?;
    // The whole batch's masks are drawn, so a row's mask does not depend on the share.
    let mut mask = parts
        .masking
        .sample(rows.size, &mut rng(seed, Purpose::Mask, it as u64));
    if rows.len() != rows.size {
        mask = mask.rows(rows.range.start, rows.len());
    }
    let target = crate::target::host_target(parts.target.as_ref(), &images, target_on_device);
    Ok(Batch {
        iteration: it,
        images,
        target,
        mask,
    })
}

/// Decode and transform `items` = (RNG key, dataset index) in parallel into one batch. The
/// key seeds each image's augmentation, so a view depends only on (seed, key).
pub fn views(
    source: &Source,
    augmentation: &dyn Augmentation,
    seed: u64,
    items: &[(usize, usize)],
) -> Result<ImageBatch> {
    let (h, w) = augmentation.output_size();
    let mut images = ImageBatch::zeros(items.len(), 3, h, w);
    let n = 3 * h * w;
    images
        .data
        .par_chunks_mut(n)
        .zip(items.par_iter())
        .try_for_each(|(out, &(k, i))| -> Result<()> {
            // An augmentation bug on an odd image must not kill a worker thread silently, nor
            // count as a bad file: a panic is an error of its own, outside the skip policy.
            let failed = |path: &std::path::Path, (w, h): (u32, u32)| {
                Error::data(
                    path,
                    format!("the augmentation failed on this {w}x{h} image"),
                )
            };
            let guarded = |f: &mut dyn FnMut() -> Result<()>| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            };
            if let Some(masks) = augmentation.object_masks() {
                let (img, object) = source.load_with_object(i, Some(masks))?;
                let mut r = rng(seed, Purpose::Augment, k as u64);
                let path = &source.dataset.items[i];
                return guarded(&mut || {
                    augmentation.apply_with_object(&img, object.as_ref(), &mut r, out);
                    Ok(())
                })
                .map_err(|_| failed(path, img.dimensions()))?;
            }
            // The image is read, its headers checked, then only what the view needs decoded;
            // a decode error there is a bad file like any other.
            source.first_readable(i, |j| {
                let img = source.dataset.read_encoded(j, source.scaled_decode)?;
                let mut r = rng(seed, Purpose::Augment, k as u64);
                match guarded(&mut || augmentation.apply_encoded(&img, &mut r, out)) {
                    Ok(decoded) => decoded.map(Ok),
                    Err(_) => Ok(Err(failed(img.path(), img.size()))),
                }
            })?
        })?;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pack::{pack, PackOptions};
    use std::path::Path;

    /// Object masks of images in shards come as for the files they were packed from: from
    /// each member's alpha channel, and from a mask folder by the member's key.
    #[test]
    fn object_masks_come_with_images_from_shards_as_from_files() {
        let dir = std::env::temp_dir().join(format!("pixmim-loader-masks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (data, masks) = (dir.join("data/a"), dir.join("masks"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        // Image k is opaque in its columns below 3 + 4k, transparent elsewhere.
        let inside = |k: u32, x: u32| x < 3 + 4 * k;
        for k in 0..2u32 {
            let img = image::RgbaImage::from_fn(12, 8, |x, _| {
                image::Rgba([200, 100, 50, if inside(k, x) { 255 } else { 0 }])
            });
            img.save(data.join(format!("{k}.png"))).unwrap();
            let mask = image::GrayImage::from_fn(12, 8, |x, _| {
                image::Luma([if inside(k, x) { 255 } else { 0 }])
            });
            // By the file's stem for the folder, by the member's key (its position) for shards.
            mask.save(masks.join(format!("{k}.png"))).unwrap();
            mask.save(masks.join(format!("{k:08}.png"))).unwrap();
        }
        let folder = Dataset::open(&dir.join("data")).unwrap();
        let options = PackOptions {
            out: dir.join("shards"),
            prefix: "train".into(),
            per_shard: 1,
            shuffle_seed: None,
        };
        let packed = pack(&folder, &options).unwrap();
        let shards = Dataset::open(Path::new(&packed.spec)).unwrap();
        for ds in [folder, shards] {
            let source = Source::strict(ds);
            for masks in [MaskSource::Alpha, MaskSource::Folder(masks.clone())] {
                for k in 0..2 {
                    let (_, object) = source.load_with_object(k, Some(&masks)).unwrap();
                    let object = object.unwrap();
                    let want: Vec<bool> = (0..8)
                        .flat_map(|_| (0..12).map(move |x| inside(k as u32, x)))
                        .collect();
                    assert_eq!(
                        object.inside,
                        want,
                        "{:?} of {}",
                        masks,
                        source.dataset.items[k].display()
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
