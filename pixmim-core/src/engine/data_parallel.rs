//! Data parallelism over a device list (`--device cuda:0,cuda:1,...`, or `flex,flex` on a
//! CPU): the threads the shards of a step run on, one per device, and the tagging of each
//! shard's gradients with its device for burn's `MultiGradientsParams` (nothing all-reduced
//! by hand). The step itself is [`crate::engine::step`].
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::backend::DeviceOps as InnerDevice;
use burn::DispatchDevice;
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
///
/// Shard `d` runs on the pool's thread `d` (a broadcast), never on a thread that is itself
/// inside another shard: a thread waiting on a matrix product steals whatever work its pool
/// holds, and a second backward pass started inside a first one blocks forever on burn's
/// autodiff graph lock, which the first one holds ([`on_step_threads`] says more).
pub fn run_shards<T: Send, R: Send>(
    devices: &[DispatchDevice],
    items: Vec<T>,
    shard: impl Fn(usize, &DispatchDevice, T) -> R + Sync,
) -> Result<Vec<R>> {
    assert_eq!(items.len(), devices.len(), "one item per device");
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results = shard_pool(devices.len())?.broadcast(|ctx| {
        let d = ctx.index();
        let item = items
            .get(d)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(panic::catch_unwind(AssertUnwindSafe(|| {
            shard(d, &devices[d], item)
        })))
    });
    results
        .into_iter()
        .take(devices.len())
        .enumerate()
        .map(|(d, r)| match r {
            Some(Ok(r)) => Ok(r),
            _ => Err(Error::Training(format!(
                "the shard on device {d} panicked (see above)"
            ))),
        })
        .collect()
}

/// Run `op` on the step threads: the pool of [`shard_pool`] that one device uses, where the
/// matrix products and host kernels `op` starts run beside it. Called from outside any pool,
/// every rayon op would wake the global pool's threads and put the caller to sleep until
/// they finish, one context switch each way per op. `crate::engine::run_job` runs every job
/// here; a data-parallel step inside it that needs no more threads stays on the same pool.
///
/// Jobs of one process run one at a time (a job started inside a job runs inline). A thread
/// of the pool that waits on a matrix product inside a backward pass takes other work from
/// the pool meanwhile; were that another job's step, its backward pass would wait for burn's
/// autodiff graph lock (`GraphMutexClient`, which every backward pass takes for every graph
/// when it clears up) held further down the same thread's stack: a hang. Two trainings
/// started from two threads (tests, a library user) would meet this.
pub fn on_step_threads<R: Send>(op: impl FnOnce() -> R + Send) -> Result<R> {
    static ONE_JOB: Mutex<()> = Mutex::new(());
    let pool = shard_pool(1)?;
    if pool.current_thread_index().is_some() {
        return Ok(op());
    }
    let _job = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    Ok(pool.install(op))
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
    use rayon::prelude::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    thread_local! {
        /// How many job or shard bodies the current thread is inside.
        static DEPTH: Cell<usize> = const { Cell::new(0) };
    }

    /// A body that, like a backward pass, must not have another body start inside it on its
    /// own thread: counts how often one did, while waiting on rayon work that gives the
    /// pool's threads the chance to steal.
    fn body(nested: &AtomicUsize) -> u64 {
        if DEPTH.with(|d| d.replace(d.get() + 1)) > 0 {
            nested.fetch_add(1, Ordering::Relaxed);
        }
        let sum = (0..200u64)
            .into_par_iter()
            .map(|i| (0..2_000u64).map(|j| (i * j) % 7).sum::<u64>())
            .sum();
        DEPTH.with(|d| d.set(d.get() - 1));
        sum
    }

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

    /// Jobs started from several threads at once never run inside one another.
    #[test]
    fn concurrent_jobs_never_nest_on_one_thread() {
        let nested = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        on_step_threads(|| body(&nested)).unwrap();
                    }
                });
            }
        });
        assert_eq!(nested.into_inner(), 0, "a job ran inside another");
    }

    /// More shards than the machine has cores: each on its own thread, none inside another.
    #[test]
    fn shards_never_nest_on_one_thread() {
        let devices = vec![DispatchDevice::default(); rayon::current_num_threads() + 2];
        let nested = AtomicUsize::new(0);
        for _ in 0..20 {
            let threads = on_step_threads(|| {
                run_shards(&devices, vec![(); devices.len()], |_, _, ()| {
                    body(&nested);
                    std::thread::current().id()
                })
            })
            .unwrap()
            .unwrap();
            let distinct: std::collections::HashSet<_> = threads.iter().collect();
            assert_eq!(distinct.len(), devices.len(), "one thread per shard");
        }
        assert_eq!(nested.into_inner(), 0, "a shard ran inside another");
    }
}
