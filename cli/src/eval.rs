//! `pixmim eval knn | linear | finetune | robustness | shape-bias`: does the pretrained encoder
//! separate classes, how well under corruptions ([`crate::robustness`]), and by shape or by
//! texture ([`crate::shape_bias`])?
//! Labelled data is a folder of class sub-folders or an IDX images file (MNIST format).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use pixmim::augment::finetune::FinetuneTransform;
use pixmim::augment::mixup::Mixup;
use pixmim::augment::rand_augment::RandAugment;
use pixmim::augment::random_erasing::RandomErasing;
use pixmim::augment::{CenterCrop, RandomResizedCrop, RandomResizedCropParams};
use pixmim::data::loader::Source;
use pixmim::data::Dataset;
use pixmim::device::DeviceSpec;
use pixmim::eval::features::cache_path;
use pixmim::eval::{knn_classify, linear_probe, LinearProbeConfig, ProbeOptimizer};
use pixmim::job::{FeatureOptions, Features, FinetuneOptions, Pool};
use pixmim::out_dir::{self, JobKind};
use pixmim::registry::Composed;
use pixmim::traits::Augmentation;
use pixmim::{Error, Result};

use crate::Compose;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Weighted kNN on frozen features (cosine, T = 0.07). Last line: `top1=..%  top5=..%`.
    Knn(KnnArgs),
    /// MAE's linear probe (BatchNorm + linear head, LARS) on frozen features. Last line:
    /// `top1=..%` (the best epoch).
    Linear(LinearArgs),
    /// End-to-end fine-tuning with MAE's recipe (layer-wise lr decay, RandAugment, Mixup /
    /// CutMix, label smoothing, random erasing, drop path). Last line: `top1=..%` (best epoch).
    Finetune(FinetuneArgs),
    /// A fine-tuned classifier under ImageNet-C's common corruptions: top-1 per corruption
    /// and severity; CE and mCE against --baseline. Last line: `clean=..%  corrupted=..%`
    /// (and `mCE=..%  relative_mCE=..%` with a baseline).
    Robustness(crate::robustness::RobustnessArgs),
    /// A fine-tuned classifier's shape bias (Geirhos et al.; PixMIM's Figure 8) on
    /// cue-conflict images made from a labelled set: each object's silhouette filled with the
    /// texture of another class's object. Last line: `shape_bias=..%  shape=N  texture=N ..`.
    ShapeBias(crate::shape_bias::ShapeBiasArgs),
}

/// What every evaluation needs: weights, labelled train and validation data, the transform.
#[derive(Args, Clone)]
pub struct EvalData {
    /// Pretrained weights: a pixmim checkpoint (its config is used) or an imported file.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    compose: Compose,
    /// Training images: class sub-folders, or `*-images-idx3-ubyte[.gz]` with its labels.
    #[arg(long)]
    data: PathBuf,
    /// Validation images, same forms.
    #[arg(long)]
    val_data: PathBuf,
    /// cpu (= flex), flex, ndarray, cuda, cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Eval transform: short side resized to size / crop_pct, then centre-cropped (MAE:
    /// 0.875). 1.0 keeps the whole image (small images such as Fashion-MNIST).
    #[arg(long, default_value_t = 0.875)]
    crop_pct: f64,
    /// Images per forward pass when computing features.
    #[arg(long, default_value_t = 64)]
    eval_batch: usize,
    /// Use only the first N training images (quick runs on CPU).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N validation images.
    #[arg(long)]
    val_limit: Option<usize>,
}

#[derive(Args)]
pub struct FeatureArgs {
    #[command(flatten)]
    data: EvalData,
    /// Features: the cls token (MAE's probe) or the mean of the patch tokens. Models
    /// without a cls token (ConvMAE) always use the mean.
    #[arg(long, default_value = "cls")]
    pool: Pool,
    /// Recompute features even when a cache (CHECKPOINT_DIR/features/) holds them.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
pub struct KnnArgs {
    #[command(flatten)]
    features: FeatureArgs,
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
}

#[derive(Args)]
pub struct LinearArgs {
    #[command(flatten)]
    features: FeatureArgs,
    #[arg(long, default_value_t = 90)]
    epochs: usize,
    #[arg(long, default_value_t = 10)]
    warmup_epochs: usize,
    /// Probe batch; lr = blr x batch / 256.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 0.1)]
    blr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// lars (MAE's probe) or sgd (momentum 0.9).
    #[arg(long, default_value = "lars")]
    optimizer: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write per-epoch results to OUT/metrics.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    data: EvalData,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value_t = 5.0)]
    warmup_epochs: f64,
    /// lr = blr x batch / 256.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 5e-4)]
    blr: f64,
    #[arg(long, default_value_t = 1e-6)]
    min_lr: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.75)]
    layer_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    drop_path: f64,
    /// Label smoothing of the (mixed) targets (MAE's `--smoothing`).
    #[arg(long, alias = "smoothing", default_value_t = 0.1)]
    label_smoothing: f64,
    /// Smallest RandomResizedCrop scale of the training views.
    #[arg(long, default_value_t = 0.08)]
    min_scale: f64,
    /// RandAugment policy in timm's notation, applied to each training crop; `none` turns
    /// it off.
    #[arg(long, default_value = RandAugment::OFFICIAL)]
    aa: String,
    /// Random erasing probability (per-pixel noise); 0 turns it off.
    #[arg(long, default_value_t = 0.25)]
    reprob: f64,
    /// Mixup's Beta(alpha, alpha); 0 turns Mixup off.
    #[arg(long, default_value_t = 0.8)]
    mixup: f64,
    /// CutMix's Beta(alpha, alpha); 0 turns CutMix off.
    #[arg(long, default_value_t = 1.0)]
    cutmix: f64,
    /// Probability that a batch is mixed.
    #[arg(long, default_value_t = 1.0)]
    mixup_prob: f64,
    /// Probability of CutMix rather than Mixup when both are on.
    #[arg(long, default_value_t = 0.5)]
    mixup_switch_prob: f64,
    /// Pooling before fc_norm + head (MAE fine-tunes with the mean).
    #[arg(long, default_value = "mean")]
    pool: Pool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder: metrics.jsonl and finetuned.safetensors.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: &EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Knn(a) => knn(a),
        EvalCommand::Linear(a) => linear(a),
        EvalCommand::Finetune(a) => finetune(a),
        EvalCommand::Robustness(a) => crate::robustness::run(a),
        EvalCommand::ShapeBias(a) => crate::shape_bias::run(a),
    }
}

pub(crate) fn labelled(path: &Path, limit: Option<usize>) -> Result<Arc<Source>> {
    if limit == Some(0) {
        return Err(Error::Usage(
            "--train-limit / --val-limit must be at least 1".into(),
        ));
    }
    Ok(Arc::new(Source::strict(Dataset::open_labelled(
        path, limit,
    )?)))
}

/// How a fine-tuned classifier is run (`eval robustness`, `eval shape-bias`).
#[derive(Args, Clone)]
pub struct ClassifierFlags {
    /// Eval transform: short side to size / crop_pct, centre crop (1.0: the whole image).
    #[arg(long, default_value_t = 0.875)]
    pub crop_pct: f64,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pooling before fc_norm + head, as the classifier was fine-tuned.
    #[arg(long, default_value = "mean")]
    pub pool: Pool,
    /// cpu (= flex), flex, ndarray, cuda, cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ClassifierFlags {
    /// `--device`, checked (a missing driver is an error here, not a panic later).
    pub fn device(&self) -> Result<DeviceSpec> {
        let device = DeviceSpec::parse(&self.device)?;
        device.device()?;
        Ok(device)
    }
}

pub(crate) fn eval_transform(c: &Composed, crop_pct: f64) -> Result<Arc<dyn Augmentation>> {
    Ok(Arc::new(CenterCrop::eval(c.geometry.image, crop_pct)?))
}

/// Features of one split: from the cache when it has them, else computed and cached.
fn features_of(
    c: &Composed,
    a: &FeatureArgs,
    data: &Path,
    limit: Option<usize>,
) -> Result<Features> {
    let d = &a.data;
    let transform = eval_transform(c, d.crop_pct)?;
    let source = labelled(data, limit)?;
    let cache = cache_path(&d.checkpoint, &source.dataset, transform.as_ref(), a.pool);
    if !a.no_cache && cache.exists() {
        if let Ok(f) = Features::load(&cache) {
            eprintln!(
                "features of {}: cached ({})",
                data.display(),
                cache.display()
            );
            return Ok(f);
        }
    }
    let t0 = std::time::Instant::now();
    let opts = FeatureOptions {
        checkpoint: d.checkpoint.clone(),
        device: DeviceSpec::parse(&d.device)?,
        source,
        transform,
        batch_size: d.eval_batch,
        pool: a.pool,
    };
    let f = c.features(&opts)?;
    eprintln!(
        "features of {}: {} x {} in {:.1}s",
        data.display(),
        f.len(),
        f.dim,
        t0.elapsed().as_secs_f64()
    );
    // A cache that cannot be written only costs time next run.
    if let Err(e) = f.save(&cache) {
        eprintln!("note: feature cache not written: {e}");
    }
    Ok(f)
}

fn train_and_val(a: &FeatureArgs) -> Result<(Features, Features)> {
    let d = &a.data;
    DeviceSpec::parse(&d.device)?.device()?;
    let c = crate::checkpoint_config(&d.checkpoint, &d.compose, vec![])?;
    Ok((
        features_of(&c, a, &d.data, d.train_limit)?,
        features_of(&c, a, &d.val_data, d.val_limit)?,
    ))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn knn(a: &KnnArgs) -> Result<()> {
    let (train, val) = train_and_val(&a.features)?;
    let r = knn_classify(&train, &val, a.k, a.temperature)?;
    eprintln!(
        "kNN: k={} T={} over {} training images, {} validation images",
        r.k,
        a.temperature,
        train.len(),
        val.len()
    );
    println!("top1={}  top5={}", pct(r.top1), pct(r.top5));
    Ok(())
}

fn linear(a: &LinearArgs) -> Result<()> {
    let optimizer = match a.optimizer.as_str() {
        "lars" => ProbeOptimizer::Lars,
        "sgd" => ProbeOptimizer::Sgd,
        o => {
            return Err(Error::Usage(format!(
                "--optimizer must be lars or sgd, got `{o}`"
            )))
        }
    };
    let cfg = LinearProbeConfig {
        epochs: a.epochs,
        warmup_epochs: a.warmup_epochs,
        batch_size: a.batch,
        blr: a.blr,
        weight_decay: a.weight_decay,
        optimizer,
        seed: a.seed,
        ..Default::default()
    };
    cfg.validate()?;
    // Refused before the features are computed; claimed (marked, locked) once they are.
    if let Some(dir) = &a.out {
        out_dir::check(dir, JobKind::LinearProbe)?;
    }
    let (train, val) = train_and_val(&a.features)?;
    let claim = a
        .out
        .as_ref()
        .map(|dir| out_dir::claim(dir, JobKind::LinearProbe))
        .transpose()?;
    let mut log = match &claim {
        Some(claim) => Some(pixmim::log::MetricsLog::open(
            &claim.dir.join("metrics.jsonl"),
            0,
        )?),
        None => None,
    };
    let mut log_err = None;
    let results = linear_probe(&train, &val, &cfg, |r| {
        eprintln!(
            "epoch {}  loss {:.4}  lr {:.3e}  top1={}  top5={}",
            r.epoch,
            r.train_loss,
            r.lr,
            pct(r.top1),
            pct(r.top5)
        );
        if let Some(l) = log.as_mut() {
            let mut m = serde_json::Map::new();
            m.insert("step".into(), r.epoch.into());
            if let Ok(serde_json::Value::Object(o)) = serde_json::to_value(r) {
                m.extend(o);
            }
            if let Err(e) = l.log(m) {
                log_err.get_or_insert(e);
            }
        }
    })?;
    if let Some(e) = log_err {
        return Err(e);
    }
    let best = results
        .iter()
        .max_by(|x, y| x.top1.total_cmp(&y.top1))
        .expect("at least one epoch");
    eprintln!("best epoch {} of {}", best.epoch, results.len());
    println!("top1={}", pct(best.top1));
    Ok(())
}

fn finetune(a: &FinetuneArgs) -> Result<()> {
    let d = &a.data;
    let device = DeviceSpec::parse(&d.device)?;
    device.device()?;
    let c = crate::checkpoint_config(&d.checkpoint, &d.compose, vec![])?;
    if !(0.0..=1.0).contains(&a.reprob) {
        return Err(Error::Usage(format!(
            "--reprob: must be a probability in [0, 1], got {}",
            a.reprob
        )));
    }
    let mut crop = RandomResizedCropParams::official();
    crop.scale = [a.min_scale, 1.0];
    let train_transform = FinetuneTransform {
        crop: RandomResizedCrop::new(c.geometry.image, crop)
            .map_err(|e| Error::Usage(format!("--min-scale: {e}")))?,
        rand_augment: match a.aa.as_str() {
            "none" => None,
            spec => Some(RandAugment::parse(spec, "--aa")?),
        },
        erasing: (a.reprob > 0.0).then(|| RandomErasing::new(a.reprob)),
    };
    let opts = FinetuneOptions {
        checkpoint: d.checkpoint.clone(),
        device,
        out: a.out.clone(),
        train: labelled(&d.data, d.train_limit)?,
        val: labelled(&d.val_data, d.val_limit)?,
        train_transform: Arc::new(train_transform),
        val_transform: eval_transform(&c, d.crop_pct)?,
        epochs: a.epochs,
        warmup_epochs: a.warmup_epochs,
        batch_size: a.batch,
        blr: a.blr,
        min_lr: a.min_lr,
        weight_decay: a.weight_decay,
        layer_decay: a.layer_decay,
        drop_path: a.drop_path,
        label_smoothing: a.label_smoothing,
        mixup: Mixup {
            mixup_alpha: a.mixup,
            cutmix_alpha: a.cutmix,
            prob: a.mixup_prob,
            switch_prob: a.mixup_switch_prob,
        },
        pool: a.pool,
        seed: a.seed,
    };
    opts.validate()?;
    eprintln!(
        "train views: {}; {}; label smoothing {}",
        opts.train_transform.describe(),
        opts.mixup.describe(),
        opts.label_smoothing
    );
    let s = c.finetune(&opts)?;
    let best = s
        .epochs
        .iter()
        .max_by(|x, y| x.top1.total_cmp(&y.top1))
        .expect("at least one epoch");
    eprintln!(
        "best epoch {} of {}; weights: {}",
        best.epoch,
        s.epochs.len(),
        s.weights.display()
    );
    println!("top1={}", pct(best.top1));
    Ok(())
}
