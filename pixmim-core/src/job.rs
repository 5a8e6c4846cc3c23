//! What a method can be asked to do with its model, and what it answers: the options and
//! results of the library API ([`crate::registry::Composed::train`] and its siblings). Plain
//! data, below the registry and the code that runs the jobs (the engine, evaluation, import),
//! so that neither imports the other back; their behaviour lives beside the code that makes
//! them (e.g. `impl Reconstruction` in `engine::reconstruct`).
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::loader::Source;
use crate::device::{DeviceMemory, DeviceSpec};
use crate::distributed::ProcessGroup;
use crate::error::Result;
use crate::traits::{Augmentation, ImageBatch};

// Pretraining (`engine::train`).

/// A pretraining run.
pub struct TrainOptions {
    pub out: PathBuf,
    pub device: DeviceSpec,
    /// More devices for data parallelism (`--device cuda:0,cuda:1,...` puts cuda:1.. here).
    /// Each step's batch is split evenly over `device` and these; the effective batch and so
    /// the lr are the same as on one device (docs/performance.md, "GPU").
    pub replicas: Vec<DeviceSpec>,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    pub resume: bool,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    /// Stop after this many iterations as if the process were killed there (tests of resume;
    /// the schedule still spans the full run).
    pub stop_after: Option<usize>,
    /// The processes training this model with this one (`mpirun`), or `None` for one process.
    pub group: Option<Arc<dyn ProcessGroup>>,
}

impl TrainOptions {
    /// A fresh run in `out` on one device, without a progress bar.
    pub fn new(out: impl Into<PathBuf>, device: DeviceSpec) -> Self {
        Self {
            out: out.into(),
            device,
            replicas: Vec::new(),
            resume: false,
            progress: false,
            stop_after: None,
            group: None,
        }
    }
}

/// What a pretraining call did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub start_iteration: usize,
    pub total_iterations: usize,
    /// Loss of each iteration run in this call.
    pub losses: Vec<f64>,
    pub images_per_second: f64,
}

// The step benchmark (`engine::step_bench`).

/// Timing training steps on synthetic images (`pixmim bench`).
#[derive(Clone, Debug)]
pub struct StepBenchOptions {
    pub device: DeviceSpec,
    /// More devices for data parallelism, as `TrainOptions::replicas` (`--device flex,flex`).
    pub replicas: Vec<DeviceSpec>,
    pub batch: usize,
    /// Steps run before timing starts (kernel compilation, allocator warm-up).
    pub warmup: usize,
    /// Timed steps; the median is reported.
    pub steps: usize,
}

#[derive(Clone, Debug)]
pub struct StepTiming {
    pub batch: usize,
    /// Seconds per step, each timed step.
    pub step_s: Vec<f64>,
    /// Seconds per step spent making the target on the host (part of `step_s`).
    pub target_s: Vec<f64>,
    /// A GPU's memory pools, the largest figures seen after the forward pass and after the
    /// step of the warm-up steps: asking waits on the device's queue, so the timed steps
    /// don't. `None` on the CPU backends, without warm-up steps, and for a data-parallel step
    /// (burn-cuda keeps a pool per thread's stream; its shards run on other threads).
    pub device_memory: Option<DeviceMemory>,
}

// Reconstruction (`engine::reconstruct`).

/// One batch to reconstruct and how to mask it.
#[derive(Clone, Debug)]
pub struct ReconstructInput {
    /// Normalised images (B, 3, H, W).
    pub image: ImageBatch,
    /// Per-patch (or per-unit) noise (B x noise_len) deciding the masks; `None` draws them
    /// from `seed`.
    pub noise: Option<Vec<f32>>,
    pub seed: u64,
}

/// Batches through one model loaded once (`pixmim reconstruct`: one batch; `pixmim analyze
/// frequency`: every chunk of a dataset, per checkpoint).
pub struct ReconstructOptions<'a> {
    /// Weights in the official key layout (a pixmim checkpoint, or an exported/imported file).
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    /// The batches, made one at a time as their turn comes.
    pub inputs: Box<dyn Iterator<Item = Result<ReconstructInput>> + Send + 'a>,
    /// Receives each batch with its reconstruction, in order.
    pub each: Box<dyn FnMut(ReconstructInput, Reconstruction) -> Result<()> + Send + 'a>,
}

/// Everything for the batch, flattened row-major.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    /// The batch's masked loss.
    pub loss: f32,
    pub batch: usize,
    /// (B, L, p*p*3) in (row, col, channel) patch order.
    pub pred: Vec<f32>,
    /// (B, L), 1 = removed.
    pub mask: Vec<f32>,
    /// (B, L, p*p*3), after norm_pix when the model uses it.
    pub target: Vec<f32>,
    /// (B, L, p*p*3): the target before norm_pix (the input's patches, or the low-pass target).
    pub target_pixels: Vec<f32>,
    pub patch: usize,
    pub grid: (usize, usize),
    pub norm_pix: bool,
}

// Import of foreign checkpoints (`interop`).

/// A state dict in the official names, to load into the model and save as a pixmim checkpoint.
pub struct ImportOptions {
    pub input: PathBuf,
    pub tensors: crate::state_dict::StateDict,
    pub out: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ImportReport {
    /// Parameters left at their fresh initialisation (the decoder of an encoder-only file).
    pub fresh: Vec<String>,
    /// File entries that were not loaded (a classifier head), by name.
    pub ignored: Vec<String>,
    pub loaded: usize,
}

// Evaluation (`eval`).

/// How tokens become one vector per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The cls token (models without one fall back to `mean`).
    Cls,
    /// The mean of the patch tokens (the cls token excluded).
    Mean,
}

/// Frozen encoder features of a labelled dataset.
pub struct FeatureOptions {
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    pub source: Arc<Source>,
    /// The eval transform (no randomness is used).
    pub transform: Arc<dyn Augmentation>,
    pub batch_size: usize,
    pub pool: Pool,
}

/// (N, D) features, row-major, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub dim: usize,
    pub data: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Encoder + classifier head trained end to end (`pixmim eval finetune`).
pub struct FinetuneOptions {
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    /// Metrics (`metrics.jsonl`) and the fine-tuned weights (`finetuned.safetensors`).
    pub out: PathBuf,
    pub train: Arc<Source>,
    pub val: Arc<Source>,
    pub train_transform: Arc<dyn Augmentation>,
    pub val_transform: Arc<dyn Augmentation>,
    pub epochs: usize,
    pub warmup_epochs: f64,
    pub batch_size: usize,
    pub blr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub layer_decay: f64,
    pub drop_path: f64,
    pub label_smoothing: f64,
    /// Mixup / CutMix of each training batch.
    pub mixup: crate::augment::mixup::Mixup,
    pub pool: Pool,
    pub seed: u64,
}

#[derive(Clone, Debug)]
pub struct FinetuneSummary {
    pub epochs: Vec<EpochResult>,
    pub weights: PathBuf,
}

/// A fine-tuned classifier applied to every image of `data` under each view (the classify job,
/// which robustness and shape bias are computed from).
pub struct ClassifyOptions {
    /// `finetuned.safetensors` from `pixmim eval finetune` (encoder, `fc_norm.*`, `head.*`).
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    /// Labels, when it has them, must be below the head's class count.
    pub data: Arc<Source>,
    pub views: Vec<View>,
    pub batch_size: usize,
    pub pool: Pool,
}

/// One pass over a set: each image through `transform`, its draws keyed by (`seed`, image).
pub struct View {
    pub transform: Arc<dyn Augmentation>,
    pub seed: u64,
}

/// One view's logits, (N, classes) row-major, in the set's order.
pub struct ViewLogits<'a> {
    /// Its index in `ClassifyOptions::views`.
    pub view: usize,
    pub classes: usize,
    pub logits: &'a [f32],
}

/// A fine-tuned classifier's top-1 on a labelled set under common corruptions
/// (`pixmim eval robustness`).
pub struct RobustnessOptions {
    /// `finetuned.safetensors` from `pixmim eval finetune` (encoder, `fc_norm.*`, `head.*`).
    pub checkpoint: PathBuf,
    pub device: DeviceSpec,
    pub val: Arc<Source>,
    /// The eval transform (centre crop); corruptions apply to its 8-bit output.
    pub transform: Arc<dyn Augmentation>,
    pub corruptions: Vec<&'static str>,
    pub severities: Vec<usize>,
    pub batch_size: usize,
    pub pool: Pool,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RobustnessReport {
    /// Top-1 in [0, 1] on the uncorrupted images.
    pub clean_top1: f64,
    /// (corruption, severity, top-1 in [0, 1]).
    pub top1: Vec<(String, usize, f64)>,
}

/// One epoch of a linear probe or fine-tuning.
#[derive(Clone, Debug, Serialize)]
pub struct EpochResult {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    /// Validation accuracy in [0, 1].
    pub top1: f64,
    pub top5: f64,
}
