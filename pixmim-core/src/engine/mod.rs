//! The generic engine a method's jobs run through (`method_def::MethodDef` monomorphises it
//! for each model): the training step and loop, the step bench, reconstruction, and the
//! threads data parallelism runs on.
pub mod data_parallel;
mod monitor;
pub mod reconstruct;
pub mod step;
pub mod step_bench;
pub mod train;

use std::path::PathBuf;

use burn::DispatchDevice;

use crate::config::ActivationCheckpointing;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::registry::Composed;
use crate::traits::Autoencoder;
use crate::RunBackend;

// Where targets are made is the target generator's business; re-exported for the engine's users.
pub use crate::target::{host_target, target_on_device, target_tensor};

/// The devices of a training run or bench: `first` then `more` (data parallel), each
/// checked (a missing CUDA driver is an error, not a panic), with the run's activation
/// checkpointing, and `batch` split evenly over them.
pub fn training_devices<'a>(
    first: &'a DeviceSpec,
    more: &'a [DeviceSpec],
    batch: usize,
    checkpointing: ActivationCheckpointing,
) -> Result<(Vec<&'a DeviceSpec>, Vec<DispatchDevice>)> {
    let specs: Vec<&DeviceSpec> = std::iter::once(first).chain(more).collect();
    let devices: Vec<DispatchDevice> = specs
        .iter()
        .map(|d| d.train_device_with(checkpointing.strategy()))
        .collect::<Result<_>>()?;
    if !batch.is_multiple_of(devices.len()) {
        return Err(crate::Error::config(
            "train.batch_size",
            format!(
                "{batch} does not split evenly over {} devices",
                devices.len()
            ),
        ));
    }
    Ok((specs, devices))
}

/// The model a training run (or the step bench) starts from: built on `device` from `seed`,
/// its matrix products in `train.precision`, which every device of the run (`specs`) must be
/// able to compute in (else a config error naming the key). One rule for `train` and `bench`.
pub fn model_for_training<M, F>(
    c: &Composed,
    specs: &[&DeviceSpec],
    device: &DispatchDevice,
    seed: u64,
    build: &F,
) -> Result<M>
where
    M: Autoencoder<RunBackend>,
    F: Fn(&DispatchDevice, u64) -> M,
{
    for d in specs {
        d.check_precision(c.train.precision)?;
    }
    Ok(build(device, seed).with_precision(c.train.precision))
}

/// A run's AdamW (`optim.*`) for `model` and a trainable target's parameters (no weight
/// decay), one place for training and the bench.
pub fn optimiser<M: Autoencoder<RunBackend> + burn::module::AutodiffModule<RunBackend>>(
    c: &Composed,
    model: &M,
    target: &crate::target::TargetParams<RunBackend>,
) -> crate::optim::AdamW<RunBackend> {
    let mut optim = crate::optim::AdamW::new(&c.optim, model);
    optim.add_undecayed(target, crate::checkpoint::TARGET_PREFIX);
    optim
}

/// The memory of a training step of `c` on `specs`, for a model with `(trainable, frozen)`
/// parameters ([`crate::memory`]), in one of `processes` that share each batch evenly.
pub fn memory_plan(
    c: &Composed,
    specs: &[&DeviceSpec],
    (trainable, frozen): (usize, usize),
    processes: usize,
) -> Result<crate::memory::Plan> {
    use rand::SeedableRng;
    let visible = c
        .parts
        .masking
        .sample(1, &mut rand::rngs::StdRng::seed_from_u64(0))
        .len_keep;
    let host = specs.iter().all(|d| d.is_cpu());
    Ok(crate::memory::Plan {
        step: crate::memory::StepMemory {
            trainable,
            frozen,
            activation_floats_per_image: c
                .method
                .activation_floats_per_image(&c.model_table(), visible)?,
            accumulates: c.train.accum_iter > 1,
            host,
        },
        devices: specs.len(),
        batch: c.train.batch_size / processes.max(1),
        processes: processes.max(1),
        accum_iter: c.train.accum_iter,
        shared_host: host,
    })
}

/// What the plan is compared with: the host's available memory when every device is a CPU
/// backend, else the smallest GPU's memory; `None` when it cannot be told.
pub fn available_memory(specs: &[&DeviceSpec]) -> Result<Option<(u64, String)>> {
    let host = specs.iter().all(|d| d.is_cpu());
    if host || std::env::var_os(crate::memory::AVAILABLE_ENV).is_some() {
        let what = if host { "this host" } else { "each GPU" };
        return Ok(crate::memory::available_host_bytes()?.map(|b| (b, what.into())));
    }
    let mut least: Option<(u64, String)> = None;
    for d in specs {
        if let DeviceSpec::Cuda(i) = d {
            let Some(total) = crate::device::cuda_total_memory(*i) else {
                return Ok(None);
            };
            if least.as_ref().is_none_or(|(b, _)| total < *b) {
                least = Some((total, format!("cuda:{i}")));
            }
        }
    }
    Ok(least)
}

/// The memory pre-flight of `train` (each process of a distributed run for its share of the
/// batch): refuse (exit 2, naming the estimate, what is available
/// and what fits) a step that cannot fit, unless `train.memory_check = false`.
pub fn memory_preflight(
    c: &Composed,
    specs: &[&DeviceSpec],
    counts: (usize, usize),
    processes: usize,
) -> Result<()> {
    if !c.train.memory_check {
        return Ok(());
    }
    let plan = memory_plan(c, specs, counts, processes)?;
    if let Some((available, what)) = available_memory(specs)? {
        crate::memory::check(&plan, available, &what)?;
    }
    Ok(())
}

/// A fresh run folder name: `runs/<method>-<unix time>`.
pub fn default_out_dir(method: &str) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{method}-{t}"))
}
