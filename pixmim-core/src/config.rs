//! Run configuration: TOML tables resolved in layers, then checked section by section.
//!
//! Order (later wins): method preset -> plugins -> `--config FILE` -> `--set key=value`.
//! Every section is deserialised with unknown keys denied and validated (linfa style: one
//! rule, one message), so a typo fails before training starts with the key named.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

use crate::error::{Error, Result};

/// Deep-merge `overlay` into `base`: tables merge key by key, anything else is replaced.
pub fn merge(base: &mut Table, overlay: &Table) {
    for (k, v) in overlay {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Apply one `key.path=value` override. The value is parsed as TOML (`0.5`, `true`, `[1, 2]`,
/// `"x"`); anything that does not parse is taken as a bare string.
pub fn set_dotted(table: &mut Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("--set expects key=value, got `{assignment}`")))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(Error::Usage(format!(
            "--set has an empty key in `{assignment}`"
        )));
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(Error::config(
                    parts[..=i].join("."),
                    "is a value, not a section, so it has no sub-keys",
                ))
            }
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Read a TOML file into a table, naming the file on error.
pub fn read_toml(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.parse::<Table>()
        .map_err(|e| Error::data(path, format!("not valid TOML: {e}")))
}

/// Deserialise `table[key]` into `T`, with errors that name the key.
pub fn section<T: DeserializeOwned>(table: &Table, key: &str) -> Result<T> {
    let value = table
        .get(key)
        .cloned()
        .unwrap_or_else(|| Value::Table(Table::new()));
    value.clone().try_into::<T>().map_err(|e| {
        let msg = e.message().trim().to_string();
        Error::config(offending_key(&value, key, &msg), msg)
    })
}

/// `section.key` for the one key of `section` whose value the TOML error quotes (`unknown
/// variant `f16``, `invalid type: string "x"`), else `section`: toml's errors for a value
/// do not say which key held it.
fn offending_key(section: &Value, name: &str, msg: &str) -> String {
    let quoted: Vec<&str> = msg
        .split(['`', '"'])
        .skip(1)
        .step_by(2)
        .filter(|q| !q.is_empty())
        .collect();
    let Some(table) = section.as_table() else {
        return name.to_string();
    };
    // A value is the quoted one if its text is, or it is the same number (toml prints 1e20
    // as `100000000000000000000.0`, serde quotes `1e20`), or an array holding it.
    let same = |v: &Value, q: &str| -> bool {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let number = match v {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        };
        text == q
            || matches!((number, q.parse::<f64>()), (Some(a), Ok(b)) if a == b || (a.is_nan() && b.is_nan()))
    };
    let hits: Vec<&String> = table
        .iter()
        .filter(|(_, v)| {
            quoted.iter().any(|q| match v {
                Value::Array(items) => same(v, q) || items.iter().any(|x| same(x, q)),
                _ => same(v, q),
            })
        })
        .map(|(k, _)| k)
        .collect();
    match hits.as_slice() {
        [one] => format!("{name}.{one}"),
        _ => name.to_string(),
    }
}

/// A named, swappable component (`augmentation`, `masking`, `target`): `name` picks the
/// registered implementation, the other keys are its parameters.
pub fn component_name(table: &Table, key: &str) -> Result<String> {
    match table.get(key).and_then(|v| v.get("name")) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::config(format!("{key}.name"), "must be a string")),
        None => Err(Error::config(format!("{key}.name"), "is missing")),
    }
}

/// Parameters of a component without its `name`.
pub fn component_params(table: &Table, key: &str) -> Table {
    let mut t = table
        .get(key)
        .and_then(|v| v.as_table())
        .cloned()
        .unwrap_or_default();
    t.remove("name");
    t
}

/// Deserialise a component's parameters, naming `section.key` on error.
pub fn parse_params<T: DeserializeOwned>(params: &Table, section: &str) -> Result<T> {
    let value = Value::Table(params.clone());
    value.clone().try_into::<T>().map_err(|e| {
        let msg = e.message().trim().to_string();
        Error::config(offending_key(&value, section, &msg), msg)
    })
}

/// Which parameters skip weight decay (numerics §0.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoDecayRule {
    /// timm `add_weight_decay`: 1-D parameters and `.bias`; cls/mask tokens ARE decayed.
    Official,
    /// mmengine custom keys: names containing ln, bias, pos_embed, mask_token or cls_token.
    Mm,
}

/// `[optim]`: AdamW, set explicitly (burn's defaults differ from PyTorch's).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Base learning rate; the real one is blr x effective batch / 256 (numerics §0.11).
    pub blr: f64,
    /// Absolute learning rate; overrides `blr` when set.
    #[serde(default)]
    pub lr: Option<f64>,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub no_decay: NoDecayRule,
    /// Clip the gradients to this global L2 norm before each update (the references'
    /// `--clip_grad`, `torch.nn.utils.clip_grad_norm_`); off unless set, as in every
    /// reference's pretraining recipe. A guard against the NaN losses users of MAE and
    /// ConvMAE report (numerics §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
}

impl OptimConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.blr.is_finite() && self.blr > 0.0) {
            return Err(Error::config(
                "optim.blr",
                format!("must be > 0, got {}", self.blr),
            ));
        }
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::config("optim.lr", format!("must be > 0, got {lr}")));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config("optim.weight_decay", "must be >= 0"));
        }
        for (i, b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(Error::config(
                    format!("optim.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config("optim.eps", "must be > 0"));
        }
        // No upper bounds on the rates: a run they make diverge stops at the first non-finite
        // loss (exit 1, naming the step and the last good checkpoint), which is a test's way
        // of making one diverge.
        if let Some(c) = self.clip_grad {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config(
                    "optim.clip_grad",
                    format!("must be > 0, got {c}"),
                ));
            }
        }
        Ok(())
    }
}

/// Learning-rate schedule flavour (numerics §0.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Official MAE: lr set before each step from the fractional epoch; warmup from 0.
    Official,
    /// mmengine: LinearLR(start_factor) then CosineAnnealingLR, per iteration.
    Mmengine,
}

/// `[schedule]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub warmup_epochs: f64,
    #[serde(default)]
    pub min_lr: f64,
    /// mmengine LinearLR start factor (1e-4 in 300e configs, 1e-9 in 800e).
    #[serde(default = "default_start_factor")]
    pub start_factor: f64,
}

fn default_start_factor() -> f64 {
    1e-4
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(Error::config("schedule.warmup_epochs", "must be >= 0"));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(Error::config("schedule.min_lr", "must be >= 0"));
        }
        finite_in(
            "schedule.warmup_epochs",
            self.warmup_epochs,
            0.0,
            MAX_EPOCHS,
        )?;
        finite_in("schedule.min_lr", self.min_lr, 0.0, 1e3)?;
        if !(self.start_factor > 0.0 && self.start_factor <= 1.0) {
            return Err(Error::config("schedule.start_factor", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// `[train]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Images per step (before accumulation), over all devices and processes: the global
    /// batch, split evenly over them.
    pub batch_size: usize,
    /// Gradient accumulation: optimiser step every `accum_iter` batches (numerics §1.3).
    #[serde(default = "one")]
    pub accum_iter: usize,
    /// Length of the run in epochs (of the dataset); `steps` wins when both are set.
    #[serde(default)]
    pub epochs: Option<f64>,
    /// Length of the run in data iterations.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Write a checkpoint every this many iterations (and always at the end).
    #[serde(default = "default_ckpt_every")]
    pub checkpoint_every: usize,
    /// How many checkpoints to keep.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Data worker threads (0 = one per core).
    #[serde(default)]
    pub num_workers: usize,
    /// Print and log metrics every this many iterations.
    #[serde(default = "one")]
    pub log_every: usize,
    /// Add MAE's reconstruction grid of the first few training images (whole, fixed mask)
    /// to the run's TensorBoard images every this many iterations; 0 = never.
    #[serde(default = "default_image_every")]
    pub image_every: usize,
    /// `f32` (default) or `bf16`: the transformer blocks' matrix products in bf16, the rest in
    /// f32, as torch.autocast does (see [`crate::nn::precision`]). bf16 needs `--device cuda`
    /// or `flex`.
    #[serde(default)]
    pub precision: crate::nn::Precision,
    /// `none` (default) or `balanced`: burn's autodiff checkpointing, which recomputes
    /// element-wise operations in the backward pass instead of keeping their outputs (less
    /// activation memory, some recomputation; the same gradients).
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Refuse a run whose estimated step memory exceeds what the device has
    /// ([`crate::memory`]); `false` trains anyway.
    #[serde(default = "yes")]
    pub memory_check: bool,
    /// Several processes (`mpirun`): how long one waits for the others at a sum before the
    /// run is stopped with a message naming the rank that did not arrive.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_s: f64,
    /// Several processes: compare the replicas' weights every this many iterations (at an
    /// update) and stop if they differ; 0 = never.
    #[serde(default = "default_replica_check_every")]
    pub replica_check_every: usize,
    /// Several processes: what sums the gradients, `auto` (NCCL when every rank trains on a
    /// CUDA device with libnccl, else MPI), `mpi` or `nccl` (docs/distributed.md).
    #[serde(default)]
    pub gradient_sync: GradientSyncKind,
    /// The device list the run trains on, as `train` resolved `--device` (`cpu` becomes a
    /// flex replica per core); written by `train` so that `--resume` repeats it exactly.
    #[serde(default)]
    pub devices: Option<String>,
    /// The seed of the initial weights alone, when it should differ from `seed` (which keys
    /// them otherwise, with the data order, augmentation and masks): how much of the
    /// seed-to-seed spread the initial weights make (docs/results.md).
    #[serde(default)]
    pub init_seed: Option<u64>,
    /// `[train.monitor]`: kNN accuracy of the encoder's features during pretraining; off
    /// unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorConfig>,
}

/// `[train.monitor]`: every `every` steps (and at the end) the encoder's frozen cls-token
/// features of `data` and `val_data` (their first `train_limit` / `val_limit` images, through
/// the eval transform) give the kNN top-1 and top-5 of `val_data` (k, temperature as `pixmim
/// eval knn`), logged as `knn_top1`, `knn_top5` and `monitor_s` (its seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Labelled images that vote (class sub-folders, or an IDX images file with its labels).
    pub data: PathBuf,
    /// Labelled images that are classified.
    pub val_data: PathBuf,
    /// Steps between measurements; unset, as many that the monitor's images are about 5% of
    /// the images the run trains on ([`MonitorConfig::interval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<usize>,
    #[serde(default = "default_monitor_train_limit")]
    pub train_limit: usize,
    #[serde(default = "default_monitor_val_limit")]
    pub val_limit: usize,
    #[serde(default = "default_knn_k")]
    pub k: usize,
    #[serde(default = "default_knn_temperature")]
    pub temperature: f64,
    /// The eval transform: short side to size / crop_pct, centre crop (1.0: the whole image).
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
}

fn default_monitor_train_limit() -> usize {
    1000
}
fn default_monitor_val_limit() -> usize {
    500
}
fn default_knn_k() -> usize {
    20
}
fn default_knn_temperature() -> f64 {
    0.07
}
fn default_crop_pct() -> f64 {
    0.875
}

/// The share of a run's images the monitor's default interval allows it.
pub const MONITOR_SHARE: usize = 20;

impl MonitorConfig {
    /// Steps between measurements at `batch` images per step: `every`, or by default such that
    /// encoding the monitor's images costs about 1/[`MONITOR_SHARE`] of the training: encoding
    /// an image with every patch visible costs about what training on one does at MAE's 75%
    /// masking (docs/evaluation.md has the measurement).
    pub fn interval(&self, batch: usize) -> usize {
        self.every.unwrap_or_else(|| {
            (MONITOR_SHARE * (self.train_limit + self.val_limit)).div_ceil(batch.max(1))
        })
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(every) = self.every {
            in_range("train.monitor.every", every, 1, usize::MAX)?;
        }
        for (key, v) in [
            ("train.monitor.train_limit", self.train_limit),
            ("train.monitor.val_limit", self.val_limit),
            ("train.monitor.k", self.k),
        ] {
            in_range(key, v, 1, usize::MAX)?;
        }
        positive_at_most("train.monitor.temperature", self.temperature, 1e3)?;
        positive_at_most("train.monitor.crop_pct", self.crop_pct, 1.0)
    }
}

fn default_sync_timeout() -> f64 {
    // Above a GPU's first steps, which compile kernels, and a checkpoint write on rank 0.
    600.0
}
fn default_replica_check_every() -> usize {
    100
}

/// What the autodiff graph keeps for the backward pass (`train.activation_checkpointing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationCheckpointing {
    /// Every intermediate the backward pass needs is stored.
    #[default]
    None,
    /// burn's `CheckpointingStrategy::Balanced`: cheap element-wise results are recomputed.
    Balanced,
}

impl ActivationCheckpointing {
    pub fn strategy(self) -> burn::CheckpointingStrategy {
        match self {
            Self::None => burn::CheckpointingStrategy::None,
            Self::Balanced => burn::CheckpointingStrategy::Balanced,
        }
    }
}

fn yes() -> bool {
    true
}

impl TrainConfig {
    /// `batch_size` images per step, every other key at its default (for presets).
    pub fn with_batch(batch_size: usize) -> Self {
        Self {
            batch_size,
            accum_iter: one(),
            epochs: None,
            steps: None,
            checkpoint_every: default_ckpt_every(),
            keep_checkpoints: default_keep(),
            num_workers: 0,
            log_every: one(),
            image_every: default_image_every(),
            precision: Default::default(),
            activation_checkpointing: Default::default(),
            memory_check: yes(),
            sync_timeout_s: default_sync_timeout(),
            replica_check_every: default_replica_check_every(),
            gradient_sync: Default::default(),
            devices: None,
            init_seed: None,
            monitor: None,
        }
    }
}

fn one() -> usize {
    1
}
fn default_ckpt_every() -> usize {
    1000
}
fn default_image_every() -> usize {
    1000
}
fn default_keep() -> usize {
    3
}

/// Upper bounds of `[train]`'s counts: far above any real run, low enough that no size made
/// from them overflows or asks for absurd memory or threads before a check could see it.
pub const MAX_BATCH: usize = 1 << 16;
pub const MAX_ACCUM: usize = 1 << 16;
pub const MAX_WORKERS: usize = 1024;
pub const MAX_EPOCHS: f64 = 1e6;
pub const MAX_STEPS: usize = 1 << 40;
/// A week: `std::time::Duration` takes it, and no collective legitimately waits longer.
pub const MAX_SYNC_TIMEOUT_S: f64 = 7.0 * 86400.0;

/// Upper bounds of a model's sizes (`[model]`): ten times and more the largest published MIM
/// models (ViT-H: width 1280, 32 blocks, 16 heads, MLP ratio 4), and small enough that a
/// model made from them fails its memory check instead of aborting an allocation.
pub const MAX_MODEL_WIDTH: usize = 1 << 14;
pub const MAX_MODEL_DEPTH: usize = 1 << 10;
pub const MAX_MODEL_HEADS: usize = 1 << 10;
pub const MAX_MLP_RATIO: f64 = 64.0;

/// A transformer's width, depth, heads and MLP ratio within the bounds above, each error
/// naming its key (`model.<key>`): widths and heads at least 1, depths from 0 (a model
/// may refuse 0 itself); divisibility is the model's own rule.
pub fn check_model_size(
    widths: &[(&str, usize)],
    depths: &[(&str, usize)],
    heads: &[(&str, usize)],
    mlp_ratios: &[(&str, f64)],
) -> Result<()> {
    let key = |k: &str| format!("model.{k}");
    for &(k, v) in widths {
        in_range(&key(k), v, 1, MAX_MODEL_WIDTH)?;
    }
    for &(k, v) in depths {
        in_range(&key(k), v, 0, MAX_MODEL_DEPTH)?;
    }
    for &(k, v) in heads {
        in_range(&key(k), v, 1, MAX_MODEL_HEADS)?;
    }
    for &(k, v) in mlp_ratios {
        positive_at_most(&key(k), v, MAX_MLP_RATIO)?;
    }
    Ok(())
}

/// `key` must be in `[lo, hi]`, naming the key and the range otherwise.
pub fn in_range<T: PartialOrd + std::fmt::Display + Bounded>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<()> {
    if v < lo || v > hi {
        let range = match hi.is_max() {
            true => format!("at least {lo}"),
            false => format!("from {lo} to {hi}"),
        };
        return Err(Error::config(key, format!("must be {range}, got {v}")));
    }
    Ok(())
}

/// Whether a bound is the type's largest value (no upper bound to name).
pub trait Bounded {
    fn is_max(&self) -> bool;
}
impl Bounded for usize {
    fn is_max(&self) -> bool {
        *self == usize::MAX
    }
}
impl Bounded for f64 {
    fn is_max(&self) -> bool {
        *self == f64::MAX
    }
}

/// A finite float in `[lo, hi]` (NaN and infinities refused), naming the key.
pub fn finite_in(key: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(Error::config(
            key,
            format!("must be a finite number, got {v}"),
        ));
    }
    in_range(key, v, lo, hi)
}

/// A finite float in `(0, hi]`, naming the key.
pub fn positive_at_most(key: &str, v: f64, hi: f64) -> Result<()> {
    finite_in(key, v, 0.0, hi)?;
    if v == 0.0 {
        return Err(Error::config(key, "must be > 0, got 0"));
    }
    Ok(())
}

impl TrainConfig {
    /// Every rule, the run's length given (`train.steps` or `train.epochs`) included.
    pub fn validate(&self) -> Result<()> {
        self.check_values()?;
        if self.epochs.is_none() && self.steps.is_none() {
            return Err(Error::config(
                "train.epochs",
                "set train.epochs or train.steps (or --epochs / --steps)",
            ));
        }
        Ok(())
    }

    /// Every value in range; the run's length may still be missing (the command line gives
    /// it after the config is composed).
    pub fn check_values(&self) -> Result<()> {
        positive_at_most(
            "train.sync_timeout_s",
            self.sync_timeout_s,
            MAX_SYNC_TIMEOUT_S,
        )?;
        in_range("train.batch_size", self.batch_size, 1, MAX_BATCH)?;
        in_range("train.accum_iter", self.accum_iter, 1, MAX_ACCUM)?;
        in_range("train.num_workers", self.num_workers, 0, MAX_WORKERS)?;
        if let Some(e) = self.epochs {
            positive_at_most("train.epochs", e, MAX_EPOCHS)?;
        }
        if let Some(s) = self.steps {
            in_range("train.steps", s, 1, MAX_STEPS)?;
        }
        for (key, every) in [
            ("train.checkpoint_every", self.checkpoint_every),
            ("train.keep_checkpoints", self.keep_checkpoints),
            ("train.log_every", self.log_every),
        ] {
            in_range(key, every, 1, usize::MAX)?;
        }
        if let Some(m) = &self.monitor {
            m.validate()?;
        }
        Ok(())
    }
}

/// `[data]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Image folder (recursive) or a text file with one image path per line.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// What an unreadable image does to the run.
    #[serde(default)]
    pub on_error: OnError,
    /// Decode a JPEG at 1/2, 1/4 or 1/8 scale (in the DCT domain) where the view shrinks its
    /// crop by that much or more; `false` decodes every JPEG at full size, as Pillow does.
    #[serde(default = "yes")]
    pub scaled_decode: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: None,
            on_error: OnError::default(),
            scaled_decode: true,
        }
    }
}

/// `data.on_error`: the policy for files that cannot be decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the run with the file's path (as the official PyTorch loaders do).
    #[default]
    Fail,
    /// Log the file once, list it in `OUT/bad_files.txt`, count it in the metrics, and use
    /// the next readable image of the dataset in its place (deterministic, so resume is exact).
    Skip,
}

/// The keys a run config may have at top level.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "method",
    "preset",
    "plugins",
    "seed",
    "model",
    "augmentation",
    "masking",
    "target",
    "optim",
    "schedule",
    "train",
    "data",
];

/// Refuse unknown top-level keys, naming them.
pub fn check_top_level(table: &Table) -> Result<()> {
    for k in table.keys() {
        if !TOP_LEVEL_KEYS.contains(&k.as_str()) {
            return Err(Error::config(
                k,
                format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// `train.gradient_sync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientSyncKind {
    /// NCCL when every rank trains on CUDA and has libnccl, else MPI.
    #[default]
    Auto,
    /// The process group (MPI) on host buffers.
    Mpi,
    /// NCCL between the ranks' first CUDA devices; refused when a rank cannot use it.
    Nccl,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset, the interval gives the monitor 1/20 of the images a run trains on; `every` wins;
    /// a zero interval or limit is refused by name.
    #[test]
    fn the_monitor_interval_is_a_share_of_the_run() {
        let m = MonitorConfig {
            data: "a".into(),
            val_data: "b".into(),
            every: None,
            train_limit: 1000,
            val_limit: 500,
            k: 20,
            temperature: 0.07,
            crop_pct: 1.0,
        };
        assert_eq!(m.interval(64), 469); // 20 x 1500 / 64 = 468.75
        assert_eq!(m.interval(1), 30_000);
        let every = MonitorConfig {
            every: Some(7),
            ..m.clone()
        };
        assert_eq!(every.interval(64), 7);
        for (bad, key) in [
            (
                MonitorConfig {
                    every: Some(0),
                    ..m.clone()
                },
                "train.monitor.every",
            ),
            (
                MonitorConfig {
                    val_limit: 0,
                    ..m.clone()
                },
                "train.monitor.val_limit",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn set_dotted_parses_toml_values_and_creates_sections() {
        let mut t = Table::new();
        set_dotted(&mut t, "train.batch_size=8").unwrap();
        set_dotted(&mut t, "masking.ratio = 0.5").unwrap();
        set_dotted(&mut t, "data.path=/tmp/x").unwrap();
        assert_eq!(t["train"]["batch_size"].as_integer(), Some(8));
        assert_eq!(t["masking"]["ratio"].as_float(), Some(0.5));
        assert_eq!(t["data"]["path"].as_str(), Some("/tmp/x"));
        assert!(set_dotted(&mut t, "novalue").is_err());
        assert!(set_dotted(&mut t, "a..b=1").is_err());
        let err = set_dotted(&mut t, "train.batch_size.x=1").unwrap_err();
        assert!(err.to_string().contains("train.batch_size"), "{err}");
    }

    #[test]
    fn merge_is_deep() {
        let mut a: Table = "[x]\na=1\nb=2".parse().unwrap();
        let b: Table = "[x]\nb=3\nc=4".parse().unwrap();
        merge(&mut a, &b);
        assert_eq!(a["x"]["a"].as_integer(), Some(1));
        assert_eq!(a["x"]["b"].as_integer(), Some(3));
        assert_eq!(a["x"]["c"].as_integer(), Some(4));
    }

    #[test]
    fn unknown_keys_are_named() {
        let t: Table = "[train]\nbatch_size=4\nbatchsize=3\nsteps=1"
            .parse()
            .unwrap();
        let err = section::<TrainConfig>(&t, "train").unwrap_err();
        assert!(err.to_string().contains("batchsize"), "{err}");
        assert!(err.to_string().contains("train"), "{err}");
        let t: Table = "bogus = 1".parse().unwrap();
        assert!(check_top_level(&t)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (text, key) in [
            ("[train]\nprecision=\"f16\"", "train.precision"),
            (
                "[train]\nactivation_checkpointing=\"full\"\nsteps=1",
                "train.activation_checkpointing",
            ),
            ("[train]\nbatch_size=\"many\"", "train.batch_size"),
        ] {
            let t: Table = text.parse().unwrap();
            let err = section::<TrainConfig>(&t, "train").unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
        // Two keys holding the quoted value: the section alone, never a wrong key.
        let t: Table = "[train]\nprecision=\"x\"\ngradient_sync=\"x\""
            .parse()
            .unwrap();
        let err = section::<TrainConfig>(&t, "train").unwrap_err().to_string();
        assert!(err.contains("at `train`:"), "{err}");
    }

    #[test]
    fn each_train_rule_names_its_key() {
        let ok: TrainConfig = toml::from_str("batch_size=4\nsteps=3").unwrap();
        ok.validate().unwrap();
        for (patch, key) in [
            ("batch_size=0\nsteps=3", "train.batch_size"),
            ("batch_size=2\nsteps=0", "train.steps"),
            ("batch_size=2\naccum_iter=0\nsteps=1", "train.accum_iter"),
            ("batch_size=2", "train.epochs"),
            ("batch_size=2\nepochs=-1.0", "train.epochs"),
        ] {
            let c: TrainConfig = toml::from_str(patch).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{patch}: {e}");
        }
    }

    #[test]
    fn optim_rules() {
        let base = "blr=1e-3\nweight_decay=0.05\nbetas=[0.9,0.95]\neps=1e-8\nno_decay='official'";
        let c: OptimConfig = toml::from_str(base).unwrap();
        c.validate().unwrap();
        let c: OptimConfig = toml::from_str(&base.replace("blr=1e-3", "blr=-1.0")).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("optim.blr"));
        let c: OptimConfig = toml::from_str(&base.replace("0.95", "1.5")).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("optim.betas[1]"));
        for bad in ["0.0", "-1.0", "nan"] {
            let c: OptimConfig = toml::from_str(&format!("{base}\nclip_grad={bad}")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("optim.clip_grad"), "{bad}: {e}");
        }
        let c: OptimConfig = toml::from_str(&format!("{base}\nclip_grad=3.0")).unwrap();
        assert_eq!(c.validate().map(|_| c.clip_grad).unwrap(), Some(3.0));
    }
}
