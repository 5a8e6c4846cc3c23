//! Data parallelism over a device list (`--device cuda:0,cuda:1,...`, or `flex,flex` on a
//! CPU): the batch split evenly, one replica and one thread per device, each shard's
//! gradients kept on its device for burn's `MultiGradientsParams` (nothing all-reduced by
//! hand). Training and `pixmim bench` run their steps through this one function.
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::backend::DeviceOps as InnerDevice;
use burn::DispatchDevice;
use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::masking::MaskBatch;
use crate::traits::{Autoencoder, ImageBatch, TargetGenerator};
use crate::RunBackend;

type B = RunBackend;

/// One step's inputs on the host: the batch, its host-made target (None when the target is
/// made on the device or is the input), and its masks.
pub struct StepInputs<'a> {
    pub images: &'a ImageBatch,
    pub target: Option<&'a ImageBatch>,
    pub mask: &'a MaskBatch,
}

/// What one device computed: its replica (for the gradients' parameter ids), its share of
/// the batch loss, and the gradients of that share.
pub struct Shard<M> {
    pub replica: M,
    /// The shard's mean loss over the number of devices: the shards' losses sum to the
    /// batch's mean loss, and their gradients to the batch's gradient.
    pub loss: Tensor<B, 1>,
    pub grads: GradientsParams,
}

/// Forward and backward of `inputs` split evenly over `devices`, shard d on device d.
///
/// Each shard's loss is scaled by 1/devices, so the summed gradients are the full batch's
/// (every sample masks the same number of patches, so the mean of the shard means is the
/// batch mean), and its gradients additionally by 1/`accum` (train.accum_iter).
///
/// One worker per device, as burn-train's multi-device workers: a replica forked with
/// `fork` gets fresh leaf parameters and so its own autodiff graph, and the
/// shards' forward and backward passes run at once instead of one host thread launching
/// every device's work in turn. On a 2-core CPU this is also what keeps both cores busy:
/// burn's CPU backends run most elementwise ops on one thread (docs/performance.md, "CPU backends").
/// The workers are the threads of [`shard_pool`].
pub fn forward_backward<M>(
    model: &M,
    devices: &[DispatchDevice],
    inputs: &StepInputs,
    target_gen: &dyn TargetGenerator,
    accum: usize,
) -> Result<Vec<Shard<M>>>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
{
    let n = devices.len();
    let batch = inputs.images.batch;
    if n == 0 || !batch.is_multiple_of(n) {
        return Err(Error::config(
            "train.batch_size",
            format!("{batch} does not split evenly over {n} devices"),
        ));
    }
    let per = batch / n;
    let replicas: Vec<M> = devices.iter().map(|dev| model.clone().fork(dev)).collect();
    let results: Vec<_> = shard_pool(n)?.install(|| {
        replicas
            .into_par_iter()
            .zip(devices)
            .enumerate()
            .map(|(d, (replica, dev))| {
                let (images, mask) = (
                    inputs.images.rows(d * per, per),
                    inputs.mask.rows(d * per, per),
                );
                let target = inputs.target.map(|t| t.rows(d * per, per));
                let shard = StepInputs {
                    images: &images,
                    target: target.as_ref(),
                    mask: &mask,
                };
                panic::catch_unwind(AssertUnwindSafe(|| {
                    shard_forward_backward(replica, dev, &shard, target_gen, n, accum)
                }))
            })
            .collect()
    });
    results
        .into_iter()
        .enumerate()
        .map(|(d, r)| {
            r.map_err(|_| Error::Training(format!("the shard on device {d} panicked (see above)")))
        })
        .collect()
}

/// One device's share: its rows of the batch through its replica, loss and gradients.
fn shard_forward_backward<M>(
    replica: M,
    dev: &DispatchDevice,
    inputs: &StepInputs,
    target_gen: &dyn TargetGenerator,
    devices: usize,
    accum: usize,
) -> Shard<M>
where
    M: Autoencoder<B> + AutodiffModule<B>,
{
    let images = inputs.images.to_tensor::<B>(dev);
    let target = super::target_tensor(target_gen, inputs.target, images.clone());
    let mask = inputs.mask.to_tensors::<B>(dev);
    let pred = replica.forward(images, &mask);
    let loss = replica.loss(pred, target, mask.mask.clone()) / devices as f64;
    let scaled = if accum > 1 {
        loss.clone() / accum as f64
    } else {
        loss.clone()
    };
    let grads = GradientsParams::from_grads(scaled.backward(), &replica);
    Shard {
        replica,
        loss,
        grads,
    }
}

/// Run `op` on the step threads: the pool of [`shard_pool`] that one device uses, where the
/// matrix products and host kernels `op` starts run beside it. Called from outside any pool,
/// every rayon op would wake the global pool's threads and put the caller to sleep until
/// they finish, one context switch each way per op. `crate::engine::run_job` runs every job
/// here; a data-parallel step inside it that needs no more threads stays on the same pool.
pub fn on_step_threads<R: Send>(op: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(shard_pool(1)?.install(op))
}

/// The threads the shards run on: a rayon pool with a thread per device and at least as
/// many as rayon's global pool (one per core), kept for the process and shared by every
/// device list that needs that many threads.
///
/// The shards' matrix products and pixmim's host kernels are rayon work too, and run on
/// this pool's threads. Before, each step spawned a thread per shard that handed its
/// products to the global pool and slept until they were done, so `--device flex,flex`
/// on 2 cores switched between four threads; the tiny MAE step went 0.22-0.23 s ->
/// 0.18-0.20 s when the shards and their products shared two threads
/// (bench/results/2026-11-28-cpu2-shard-pool.md).
fn shard_pool(devices: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let threads = devices.max(rayon::current_num_threads());
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.get(&threads) {
        return Ok(pool.clone());
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pixmim-shard-{i}"))
        .build()
        .map_err(|e| Error::Training(format!("cannot start the shard threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(pool)
}

/// Each device's gradients tagged with that device, for `AdamW::step_multi`.
pub fn multi_gradients(
    grads: impl IntoIterator<Item = GradientsParams>,
    devices: &[DispatchDevice],
) -> MultiGradientsParams {
    let mut multi = MultiGradientsParams::default();
    for (g, dev) in grads.into_iter().zip(devices) {
        // The inner device's id: burn 0.21 encodes an autodiff DispatchDevice's id twice,
        // which `from_id` cannot decode.
        multi.grads.push((g, InnerDevice::inner(dev).to_id()));
    }
    multi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// A step handed to `on_step_threads` runs on a shard-pool thread, and the rayon work it
    /// starts (as gemm and the host kernels do) runs on that pool, not on the global one.
    #[test]
    fn a_step_and_its_rayon_work_run_on_the_step_threads() {
        let (step, work) = on_step_threads(|| {
            let work: Vec<String> = (0..256).into_par_iter().map(|_| thread_name()).collect();
            (thread_name(), work)
        })
        .unwrap();
        assert!(
            step.starts_with("pixmim-shard-"),
            "the step ran on `{step}`"
        );
        assert!(
            work.iter().all(|n| n.starts_with("pixmim-shard-")),
            "rayon work ran on {:?}",
            work.iter().find(|n| !n.starts_with("pixmim-shard-"))
        );
    }
}
