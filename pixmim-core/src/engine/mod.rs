//! The generic training engine and the jobs a method runs through it.
pub mod metrics;
pub mod train;

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::DispatchDevice;

use crate::checkpoint::count_params;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::registry::Composed;
use crate::traits::Autoencoder;
use crate::RunBackend;

pub use train::{TrainOptions, TrainSummary};

/// Work a method is asked to do with its model.
pub enum Job<'a> {
    /// Count (trainable, frozen) parameters.
    Count(&'a Composed),
    /// Train (or resume) a run.
    Train(&'a Composed, &'a TrainOptions),
}

impl Job<'_> {
    pub fn composed(&self) -> &Composed {
        match self {
            Job::Count(c) | Job::Train(c, _) => c,
        }
    }
}

pub enum JobOutput {
    Params { trainable: usize, frozen: usize },
    Trained(TrainSummary),
}

/// Run `job` with a model built by `build(device, seed)`. Method crates call this from
/// `Method::run`; it is the one place the engine is monomorphised for a model type.
pub fn run_job<M, F>(job: Job<'_>, build: F) -> Result<JobOutput>
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
    }
}

/// A fresh run folder name: `runs/<method>-<unix time>`.
pub fn default_out_dir(method: &str) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{method}-{t}"))
}
