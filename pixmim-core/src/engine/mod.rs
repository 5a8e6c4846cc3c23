//! The generic training engine and the jobs a method runs through it.
pub mod data_parallel;
pub mod reconstruct;
pub mod step;
pub mod step_bench;
pub mod train;

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::DispatchDevice;

use crate::checkpoint::count_params;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::eval::{FeatureOptions, Features, FinetuneOptions, FinetuneSummary};
use crate::interop::{ImportOptions, ImportReport};
use crate::registry::Composed;
use crate::traits::Autoencoder;
use crate::RunBackend;

pub use reconstruct::{ReconstructInput, ReconstructOptions, Reconstruction};
pub use step_bench::{StepBenchOptions, StepTiming};
pub use train::{TrainOptions, TrainSummary};
// Where targets are made is the target generator's business; re-exported for the engine's users.
pub use crate::target::{host_target, target_on_device, target_tensor};

/// Work a method is asked to do with its model.
pub enum Job<'a> {
    /// Count (trainable, frozen) parameters.
    Count(&'a Composed),
    /// Train (or resume) a run.
    Train(&'a Composed, &'a TrainOptions),
    /// Time training steps on synthetic images (`pixmim bench`).
    BenchStep(&'a Composed, &'a StepBenchOptions),
    /// Image batches through trained weights, loaded once (`pixmim reconstruct`, `pixmim
    /// analyze frequency`).
    Reconstruct(&'a Composed, ReconstructOptions<'a>),
    /// Load a foreign state dict into the model and save it (`pixmim import`).
    Import(&'a Composed, &'a ImportOptions),
    /// Frozen encoder features of a labelled dataset (`pixmim eval knn|linear`).
    Features(&'a Composed, &'a FeatureOptions),
    /// Encoder + classifier head trained end to end (`pixmim eval finetune`).
    Finetune(&'a Composed, &'a FinetuneOptions),
}

impl Job<'_> {
    pub fn composed(&self) -> &Composed {
        match self {
            Job::Count(c)
            | Job::Train(c, _)
            | Job::BenchStep(c, _)
            | Job::Reconstruct(c, _)
            | Job::Import(c, _)
            | Job::Features(c, _)
            | Job::Finetune(c, _) => c,
        }
    }
}

pub enum JobOutput {
    Params {
        trainable: usize,
        frozen: usize,
    },
    Trained(TrainSummary),
    StepTiming(StepTiming),
    /// How many batches went through the model (each went to `ReconstructOptions::each`).
    Reconstructed {
        batches: usize,
    },
    Imported(ImportReport),
    Features(Features),
    Finetuned(FinetuneSummary),
}

/// Run `job` with a model built by `build(device, seed)`. Method crates call this from
/// `Method::run`; it is the one place the engine is monomorphised for a model type.
///
/// Every job runs on the step threads ([`data_parallel::on_step_threads`]), so the matrix
/// products and host kernels of its passes share the thread that runs them. Run from the
/// main thread instead, each such op woke rayon's global pool and slept until it finished:
/// one-device training of the tiny MAE 291-293 -> 358-368 img/s when its steps moved there
/// (docs/performance.md, "CPU backends").
pub fn run_job<M, F>(job: Job<'_>, build: F) -> Result<JobOutput>
where
    M: Autoencoder<RunBackend> + AutodiffModule<RunBackend> + 'static,
    F: Fn(&DispatchDevice, u64) -> M + Send,
{
    data_parallel::on_step_threads(move || run_job_here(job, build))?
}

fn run_job_here<M, F>(job: Job<'_>, build: F) -> Result<JobOutput>
where
    M: Autoencoder<RunBackend> + AutodiffModule<RunBackend> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    match job {
        Job::Count(c) => {
            let device = DeviceSpec::NdArray.train_device()?;
            let model = build(&device, c.seed);
            let (trainable, frozen) = count_params(&model);
            Ok(JobOutput::Params { trainable, frozen })
        }
        Job::Train(c, opts) => train::train(c, opts, build).map(JobOutput::Trained),
        Job::Import(c, opts) => {
            crate::interop::import_into(c, opts, build).map(JobOutput::Imported)
        }
        Job::Reconstruct(c, opts) => reconstruct::reconstruct(c, opts, build)
            .map(|batches| JobOutput::Reconstructed { batches }),
        Job::BenchStep(c, opts) => {
            step_bench::time_steps(c, opts, build).map(JobOutput::StepTiming)
        }
        Job::Features(c, opts) => {
            crate::eval::features::extract(c, opts, build).map(JobOutput::Features)
        }
        Job::Finetune(c, opts) => {
            crate::eval::finetune::finetune(c, opts, build).map(JobOutput::Finetuned)
        }
    }
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

/// The memory of a training step of `c` on `specs`, for a model with `(trainable, frozen)`
/// parameters ([`crate::memory`]).
pub fn memory_plan(
    c: &Composed,
    specs: &[&DeviceSpec],
    (trainable, frozen): (usize, usize),
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
        batch: c.train.batch_size,
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

/// The memory pre-flight of `train`: refuse (exit 2, naming the estimate, what is available
/// and what fits) a step that cannot fit, unless `train.memory_check = false`.
pub fn memory_preflight(c: &Composed, specs: &[&DeviceSpec], counts: (usize, usize)) -> Result<()> {
    if !c.train.memory_check {
        return Ok(());
    }
    let plan = memory_plan(c, specs, counts)?;
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
