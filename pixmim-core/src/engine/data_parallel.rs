//! Data parallelism over a device list (`--device cuda:0,cuda:1,...`, or `flex,flex` on a
//! CPU): the threads the shards of a step run on, one per device, and the tagging of each
//! shard's gradients with its device for burn's `MultiGradientsParams` (nothing all-reduced
//! by hand). The step itself is [`crate::engine::step`].
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

/// `shard(d, device d, items[d])` for every device at once, one worker per device as
/// burn-train's multi-device workers, on the threads of [`shard_pool`]: the shards' forward and
/// backward passes run together instead of one host thread launching every device's work in
/// turn. On a 2-core CPU this is also what keeps both cores busy: burn's CPU backends run most
/// elementwise ops on one thread (docs/performance.md, "CPU backends"). A shard that panics
/// is an error naming its device.
pub fn run_shards<T: Send, R: Send>(
    devices: &[DispatchDevice],
    items: Vec<T>,
    shard: impl Fn(usize, &DispatchDevice, T) -> R + Sync,
) -> Result<Vec<R>> {
    let results: Vec<_> = shard_pool(devices.len())?.install(|| {
        items
            .into_par_iter()
            .zip(devices)
            .enumerate()
            .map(|(d, (item, dev))| panic::catch_unwind(AssertUnwindSafe(|| shard(d, dev, item))))
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
/// this pool's threads: a shard thread that handed its products to the global pool and slept
/// until they were done would make `--device flex,flex` on 2 cores switch between four
/// threads (docs/performance.md, "CPU backends").
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
