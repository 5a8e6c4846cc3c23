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

use super::dataset::{decode, Dataset};
use super::seed::{rng, Purpose};
use crate::error::Result;
use crate::masking::MaskBatch;
use crate::traits::{Augmentation, Corruption, ImageBatch, TargetGenerator};

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

pub struct Parts {
    pub augmentation: Box<dyn Augmentation>,
    pub masking: Box<dyn Corruption>,
    pub target: Box<dyn TargetGenerator>,
}

pub struct Loader {
    rx: Receiver<Result<Batch>>,
    _producer: std::thread::JoinHandle<()>,
}

impl Loader {
    /// Produce iterations `start..end` of `batch_size` images.
    pub fn spawn(
        dataset: Dataset,
        parts: Arc<Parts>,
        seed: u64,
        batch_size: usize,
        start: usize,
        end: usize,
        num_workers: usize,
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
                for it in start..end {
                    let batch = pool
                        .install(|| make_batch(&dataset, &parts, seed, batch_size, it, &mut cache));
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

/// Build iteration `it` (pure function of its arguments).
pub fn make_batch(
    dataset: &Dataset,
    parts: &Parts,
    seed: u64,
    batch_size: usize,
    it: usize,
    cache: &mut Option<(usize, Vec<usize>)>,
) -> Result<Batch> {
    let (h, w) = parts.augmentation.output_size();
    let first = it * batch_size;
    let idx: Vec<(usize, usize)> = (0..batch_size)
        .map(|j| {
            (
                first + j,
                stream_index(seed, dataset.len(), first + j, cache),
            )
        })
        .collect();
    let mut images = ImageBatch::zeros(batch_size, 3, h, w);
    let n = 3 * h * w;
    images
        .data
        .par_chunks_mut(n)
        .zip(idx.par_iter())
        .try_for_each(|(out, &(k, i))| -> Result<()> {
            let img = decode(&dataset.items[i])?;
            let mut r = rng(seed, Purpose::Augment, k as u64);
            parts.augmentation.apply(&img, &mut r, out);
            Ok(())
        })?;
    let mask = parts
        .masking
        .sample(batch_size, &mut rng(seed, Purpose::Mask, it as u64));
    let target = if parts.target.on_device() {
        None // computed next to the model by the engine
    } else {
        parts.target.generate(&images)
    };
    Ok(Batch {
        iteration: it,
        images,
        target,
        mask,
    })
}
