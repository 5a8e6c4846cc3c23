//! `pixmim sweep FILE`: pretrain every (variant, seed) of an experiment file, evaluate each
//! by kNN and the linear probe, and write one table: each variant's mean and standard
//! deviation over seeds and its paired difference to the baseline with a 95% interval
//! ([`pixmim::eval::compare`]).
//!
//! Rerunning the same command continues a sweep: a run whose `eval.json` matches the file's
//! evaluation settings is read back, a finished pretraining is only evaluated, an interrupted
//! one resumes from its last checkpoint (exactly, as `train --resume`). A run folder started
//! with another config is refused rather than mixed.
//!
//! A subcommand rather than a script: the variants are composed (and refused, naming the key)
//! before anything trains, the runs call the library directly, and the statistics are tested
//! code.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};

use pixmim::checkpoint::run::list_checkpoints;
use pixmim::device::DeviceSpec;
use pixmim::eval::compare::{mean_std, paired_difference, Difference};
use pixmim::eval::linear_probe::train_linear_probe;
use pixmim::eval::shape_bias::{argmax_rows, write_set, CueConflictSet, ShapeBias};
use pixmim::eval::{knn_classify, LinearProbeConfig, ProbeOptimizer};
use pixmim::job::{FeatureOptions, Pool, TrainOptions};
use pixmim::object_mask::MaskSource;
use pixmim::registry::{compose, Composed, Request};
use pixmim::{Error, Result};

use crate::eval::{eval_transform, labelled};

#[derive(Args)]
pub struct SweepArgs {
    /// The experiment file (TOML; see experiments/ablations.toml and docs/results.md).
    file: PathBuf,
    /// List the runs and what each still needs, then stop.
    #[arg(long)]
    dry_run: bool,
    /// Write the tables from the runs finished so far (a long sweep's interim results); train
    /// and evaluate nothing.
    #[arg(long, conflicts_with = "dry_run")]
    tables: bool,
}

/// The experiment file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Where the runs and the tables go (relative paths: to the current directory).
    out: PathBuf,
    method: String,
    preset: Option<String>,
    #[serde(default)]
    plugins: Vec<String>,
    /// `--set`s of every variant, before the variant's own.
    #[serde(default)]
    sets: Vec<String>,
    /// Pretraining images.
    data: PathBuf,
    #[serde(default = "cpu")]
    device: String,
    seeds: Vec<u64>,
    /// The variant the others are compared with.
    baseline: String,
    eval: EvalSpec,
    variant: Vec<Variant>,
}

fn cpu() -> String {
    "cpu".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    name: String,
    #[serde(default)]
    plugins: Vec<String>,
    #[serde(default)]
    sets: Vec<String>,
    /// Seeds of this variant, if not the file's.
    seeds: Option<Vec<u64>>,
    /// The config keys a run's seed is written to: `seed` (default: everything random), or
    /// e.g. `train.init_seed` with `seed` fixed in `sets`, so that the seeds vary the initial
    /// weights alone (docs/results.md, "Where the spread comes from").
    #[serde(default = "seed_keys")]
    seed_keys: Vec<String>,
}

fn seed_keys() -> Vec<String> {
    vec!["seed".into()]
}

/// How each run is evaluated; a change re-evaluates the runs (it is stored in `eval.json`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct EvalSpec {
    /// Labelled training and validation images (class folders or IDX).
    data: PathBuf,
    val_data: PathBuf,
    train_limit: Option<usize>,
    val_limit: Option<usize>,
    #[serde(default = "crop_pct")]
    crop_pct: f64,
    #[serde(default = "eval_batch")]
    eval_batch: usize,
    #[serde(default = "pool")]
    pool: Pool,
    #[serde(default = "knn_k")]
    knn_k: usize,
    #[serde(default = "temperature")]
    knn_temperature: f64,
    #[serde(default = "linear_epochs")]
    linear_epochs: usize,
    #[serde(default = "linear_warmup")]
    linear_warmup_epochs: usize,
    #[serde(default = "linear_batch")]
    linear_batch: usize,
    #[serde(default = "linear_blr")]
    linear_blr: f64,
    #[serde(default)]
    linear_weight_decay: f64,
    /// "lars" (MAE's probe) or "sgd".
    #[serde(default = "lars")]
    linear_optimizer: String,
    /// The linear probe is trained once per seed (its head's initial weights and batch order)
    /// and its accuracy averaged, so that the probe's own noise is not read as the method's.
    #[serde(default = "probe_seeds")]
    probe_seeds: Vec<u64>,
    /// Shape bias of each probe (`alpha`, `non_black` or a folder of masks): on cue-conflict
    /// images made from `val_data` (`pixmim::eval::shape_bias`), written once to
    /// `OUT/cue_conflict`.
    #[serde(default)]
    shape_bias_masks: Option<String>,
}

fn probe_seeds() -> Vec<u64> {
    vec![0]
}

fn crop_pct() -> f64 {
    0.875
}
fn eval_batch() -> usize {
    64
}
fn pool() -> Pool {
    Pool::Cls
}
fn knn_k() -> usize {
    20
}
fn temperature() -> f64 {
    0.07
}
fn linear_epochs() -> usize {
    90
}
fn linear_warmup() -> usize {
    10
}
fn linear_batch() -> usize {
    256
}
fn linear_blr() -> f64 {
    0.1
}
fn lars() -> String {
    "lars".into()
}

impl EvalSpec {
    /// The probe's settings for its first seed; refuses bad values naming the key.
    fn probe(&self) -> Result<LinearProbeConfig> {
        if self.probe_seeds.is_empty() {
            return Err(Error::config("eval.probe_seeds", "list at least one seed"));
        }
        let optimizer = match self.linear_optimizer.as_str() {
            "lars" => ProbeOptimizer::Lars,
            "sgd" => ProbeOptimizer::Sgd,
            o => {
                return Err(Error::config(
                    "eval.linear_optimizer",
                    format!("must be \"lars\" or \"sgd\", got {o:?}"),
                ))
            }
        };
        let cfg = LinearProbeConfig {
            epochs: self.linear_epochs,
            warmup_epochs: self.linear_warmup_epochs,
            batch_size: self.linear_batch,
            blr: self.linear_blr,
            weight_decay: self.linear_weight_decay,
            optimizer,
            seed: self.probe_seeds[0],
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// What one (variant, seed) run measured: `OUT/VARIANT/seed-S/eval.json`.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct RunResult {
    variant: String,
    seed: u64,
    knn_top1: f64,
    knn_top5: f64,
    /// The mean over the probe seeds of each probe's best epoch.
    linear_top1: f64,
    /// Each probe seed's best epoch, in `eval.probe_seeds`' order.
    #[serde(default)]
    linear_top1_by_probe_seed: Vec<f64>,
    /// The probes' mean shape bias (each probe as its last epoch left it), when measured.
    #[serde(default)]
    shape_bias: Option<f64>,
    /// Wall seconds of pretraining and evaluation in the session that finished them.
    pretrain_s: f64,
    eval_s: f64,
    eval: EvalSpec,
}

/// One run of the plan.
struct Planned {
    variant: usize,
    seed: u64,
    dir: PathBuf,
    composed: Composed,
}

pub fn run(a: &SweepArgs) -> Result<()> {
    let file = read_file(&a.file)?;
    let device = DeviceSpec::parse(&file.device)?;
    device.device()?;
    file.eval.probe()?;
    let plan = plan(&file)?;
    eprintln!(
        "sweep {}: {} variants, {} runs -> {}",
        a.file.display(),
        file.variant.len(),
        plan.len(),
        file.out.display()
    );
    let cue_conflict = match &file.eval.shape_bias_masks {
        Some(masks) if !a.dry_run && !a.tables => {
            let dir = file.out.join("cue_conflict");
            let val = labelled(&file.eval.val_data, file.eval.val_limit)?;
            let set = write_set(&val, &MaskSource::parse(masks), 0, None, &dir)?;
            eprintln!(
                "shape bias: {} cue-conflict images in {} ({} images skipped)",
                set.pairs.len(),
                dir.display(),
                set.skipped
            );
            Some(set)
        }
        _ => None,
    };
    let mut results = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let name = &file.variant[p.variant].name;
        let state = match done(&p.dir, &file.eval) {
            Some(r) => {
                results.push(r);
                "done".to_string()
            }
            None => match list_checkpoints(&p.dir)?.last() {
                Some((step, _)) => format!("resumes at step {step}"),
                None => "to run".to_string(),
            },
        };
        eprintln!("[{}/{}] {name} seed {}: {state}", i + 1, plan.len(), p.seed);
        if a.dry_run || a.tables || state == "done" {
            continue;
        }
        let r = run_one(p, name, &file, &device, cue_conflict.as_ref())?;
        eprintln!(
            "[{}/{}] {name} seed {}: kNN {:.2}%  linear {:.2}%",
            i + 1,
            plan.len(),
            p.seed,
            100.0 * r.knn_top1,
            100.0 * r.linear_top1
        );
        results.push(r);
    }
    if a.dry_run {
        return Ok(());
    }
    let table = Table::new(&file, &results);
    let md = table.markdown(&a.file, &file);
    write(&file.out.join("results.md"), &md)?;
    write(&file.out.join("results.csv"), &table.csv())?;
    write(&file.out.join("runs.csv"), &runs_csv(&results))?;
    print!("{md}");
    Ok(())
}

fn read_file(path: &Path) -> Result<SweepFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let file: SweepFile = toml::from_str(&text).map_err(|e| Error::data(path, e.to_string()))?;
    if file.seeds.is_empty() {
        return Err(Error::config("seeds", "list at least one seed"));
    }
    let mut names = std::collections::HashSet::new();
    for v in &file.variant {
        let ok = !v.name.is_empty()
            && v.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok || v.name.starts_with('.') {
            return Err(Error::config(
                "variant.name",
                format!(
                    "{:?}: use letters, digits, '-', '_' or '.' (it names a folder)",
                    v.name
                ),
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err(Error::config(
                "variant.name",
                format!("{:?} is listed twice", v.name),
            ));
        }
        if v.seed_keys.is_empty() {
            return Err(Error::config(
                "variant.seed_keys",
                format!(
                    "variant {:?} lists no key (its seeds would all be one run)",
                    v.name
                ),
            ));
        }
        if v.seeds.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(Error::config(
                "variant.seeds",
                format!("variant {:?} lists no seed", v.name),
            ));
        }
    }
    if !names.contains(file.baseline.as_str()) {
        return Err(Error::config(
            "baseline",
            format!("{:?} is not one of the variants", file.baseline),
        ));
    }
    Ok(file)
}

/// Every (variant, seed), composed before anything runs, so that a bad `--set` in any
/// variant stops the sweep at once, naming the variant and the key. Seed by seed (every
/// variant's seed 0, then seed 1, ...): a sweep stopped early has its variants paired on the
/// same seeds.
fn plan(file: &SweepFile) -> Result<Vec<Planned>> {
    let seeds_of = |v: &Variant| v.seeds.clone().unwrap_or_else(|| file.seeds.clone());
    let mut all_seeds: Vec<u64> = file.variant.iter().flat_map(seeds_of).collect();
    all_seeds.sort_unstable();
    all_seeds.dedup();
    let runs = all_seeds.iter().flat_map(|&seed| {
        file.variant
            .iter()
            .enumerate()
            .filter(move |(_, v)| seeds_of(v).contains(&seed))
            .map(move |(vi, v)| (vi, v, seed))
    });
    let mut plan = Vec::new();
    for (vi, v, seed) in runs {
        let mut sets = file.sets.clone();
        sets.extend(v.sets.iter().cloned());
        sets.extend(v.seed_keys.iter().map(|k| format!("{k}={seed}")));
        sets.push(format!(
            "data.path={}",
            toml::Value::String(file.data.display().to_string())
        ));
        let request = Request {
            method: file.method.clone(),
            preset: file.preset.clone(),
            plugins: file.plugins.iter().chain(&v.plugins).cloned().collect(),
            sets,
            ..Default::default()
        };
        let composed = compose(&request).map_err(|e| match e {
            Error::Config { key, msg } => {
                Error::config(key, format!("{msg} (variant {:?})", v.name))
            }
            other => Error::Usage(format!("variant {:?}: {other}", v.name)),
        })?;
        let dir = file.out.join(&v.name).join(format!("seed-{seed}"));
        // A folder begun with another config (the file was edited) is neither continued
        // nor reported as done.
        let resolved = toml::to_string(&composed.table).unwrap_or_default();
        if let Ok(before) = std::fs::read_to_string(dir.join("config.toml")) {
            if before != resolved {
                return Err(Error::Usage(format!(
                    "{} was started with another config than variant {:?} has now; remove the folder to rerun it, or restore the experiment file",
                    dir.display(),
                    v.name
                )));
            }
        }
        plan.push(Planned {
            variant: vi,
            seed,
            dir,
            composed,
        });
    }
    Ok(plan)
}

/// The run's result when it was evaluated with these settings.
fn done(dir: &Path, eval: &EvalSpec) -> Option<RunResult> {
    let text = std::fs::read_to_string(dir.join("eval.json")).ok()?;
    let r: RunResult = serde_json::from_str(&text).ok()?;
    (r.eval == *eval).then_some(r)
}

fn run_one(
    p: &Planned,
    name: &str,
    file: &SweepFile,
    device: &DeviceSpec,
    cue_conflict: Option<&CueConflictSet>,
) -> Result<RunResult> {
    let c = &p.composed;
    let t0 = Instant::now();
    let resume = !list_checkpoints(&p.dir)?.is_empty();
    let opts = TrainOptions {
        resume,
        ..TrainOptions::new(&p.dir, *device)
    };
    c.train(&opts)?;
    let pretrain_s = t0.elapsed().as_secs_f64();
    let (_, checkpoint) = list_checkpoints(&p.dir)?
        .pop()
        .ok_or_else(|| Error::Training(format!("{}: no checkpoint written", p.dir.display())))?;

    let t0 = Instant::now();
    let e = &file.eval;
    let features = |source| -> Result<_> {
        c.features(&FeatureOptions {
            checkpoint: checkpoint.clone(),
            device: *device,
            source,
            transform: eval_transform(c, e.crop_pct)?,
            batch_size: e.eval_batch,
            pool: e.pool,
        })
    };
    let train = features(labelled(&e.data, e.train_limit)?)?;
    let val = features(labelled(&e.val_data, e.val_limit)?)?;
    let conflict = cue_conflict
        .map(|set| features(Arc::clone(&set.source)))
        .transpose()?;
    let knn = knn_classify(&train, &val, e.knn_k, e.knn_temperature)?;
    let mut by_probe_seed = Vec::new();
    let mut shape_biases = Vec::new();
    for &seed in &e.probe_seeds {
        let cfg = LinearProbeConfig { seed, ..e.probe()? };
        let (probe, head) = train_linear_probe(&train, &val, &cfg, |_| {})?;
        by_probe_seed.push(probe.iter().map(|r| r.top1).fold(f64::NAN, f64::max));
        if let (Some(set), Some(f)) = (cue_conflict, &conflict) {
            let predicted = argmax_rows(&head.predict(&f.data), head.classes);
            let bias = ShapeBias::score(&set.pairs, &predicted, head.classes).bias();
            shape_biases.push(bias.unwrap_or(f64::NAN));
        }
    }
    let r = RunResult {
        variant: name.to_string(),
        seed: p.seed,
        knn_top1: knn.top1,
        knn_top5: knn.top5,
        linear_top1: mean_std(&by_probe_seed).0,
        linear_top1_by_probe_seed: by_probe_seed,
        shape_bias: (!shape_biases.is_empty()).then(|| mean_std(&shape_biases).0),
        pretrain_s,
        eval_s: t0.elapsed().as_secs_f64(),
        eval: e.clone(),
    };
    let json = serde_json::to_string_pretty(&r).expect("plain data");
    pixmim::checkpoint::atomic_write(&p.dir.join("eval.json"), json.as_bytes())?;
    Ok(r)
}

fn write(path: &Path, text: &str) -> Result<()> {
    pixmim::checkpoint::atomic_write(path, text.as_bytes())
}

/// The metrics of the table, in percent.
const METRICS: [(&str, &str); 3] = [
    ("knn_top1", "kNN top-1"),
    ("linear_top1", "linear top-1"),
    ("shape_bias", "shape bias"),
];

/// A run's value of a metric, when it measured it.
fn metric(r: &RunResult, key: &str) -> Option<f64> {
    let v = match key {
        "knn_top1" => Some(r.knn_top1),
        "linear_top1" => Some(r.linear_top1),
        _ => r.shape_bias,
    };
    v.map(|v| 100.0 * v)
}

/// A variant's mean and standard deviation of one metric over its seeds, and its
/// difference to the baseline (none for the baseline itself).
struct Stat {
    mean: f64,
    std: Option<f64>,
    diff: Option<Difference>,
}

/// One row per variant, in the file's order.
struct Row {
    name: String,
    seeds: Vec<u64>,
    /// One per metric.
    stats: Vec<Stat>,
    pretrain_s: f64,
}

struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn new(file: &SweepFile, results: &[RunResult]) -> Self {
        let of = |name: &str| -> Vec<&RunResult> {
            results.iter().filter(|r| r.variant == name).collect()
        };
        let base = of(&file.baseline);
        let rows = file
            .variant
            .iter()
            .map(|v| {
                let runs = of(&v.name);
                let stats = METRICS
                    .iter()
                    .map(|(key, _)| {
                        let xs: Vec<f64> = runs.iter().filter_map(|r| metric(r, key)).collect();
                        let pairs: Vec<(f64, f64)> = runs
                            .iter()
                            .filter_map(|r| {
                                let b = base.iter().find(|b| b.seed == r.seed)?;
                                Some((metric(r, key)?, metric(b, key)?))
                            })
                            .collect();
                        let diff = (v.name != file.baseline && !pairs.is_empty())
                            .then(|| paired_difference(&pairs));
                        let (mean, std) = mean_std(&xs);
                        Stat { mean, std, diff }
                    })
                    .collect();
                Row {
                    name: v.name.clone(),
                    seeds: runs.iter().map(|r| r.seed).collect(),
                    stats,
                    pretrain_s: runs.iter().map(|r| r.pretrain_s).sum::<f64>()
                        / runs.len().max(1) as f64,
                }
            })
            .collect();
        Self { rows }
    }

    /// The metrics some run measured (shape bias only where the file asks for it).
    fn shown(&self) -> Vec<usize> {
        (0..METRICS.len())
            .filter(|&k| self.rows.iter().any(|r| !r.stats[k].mean.is_nan()))
            .collect()
    }

    fn markdown(&self, path: &Path, file: &SweepFile) -> String {
        let mut s = format!(
            "Sweep `{}`: {} {}, baseline `{}`; mean ± sample std over seeds; Δ = paired difference to the baseline over the seeds both ran, with its 95% t interval (* when it excludes 0); wins = seeds where the variant beat the baseline, out of those that differ, with the two-sided sign test's p.\n\n",
            path.display(),
            file.method,
            file.preset.as_deref().unwrap_or("(first preset)"),
            file.baseline
        );
        let shown = self.shown();
        s.push_str("| variant | seeds |");
        for &k in &shown {
            let label = METRICS[k].1;
            s.push_str(&format!(" {label} | Δ {label} | wins |"));
        }
        s.push_str(" pretrain wall |\n| --- | --- |");
        for _ in &shown {
            s.push_str(" --- | --- | --- |");
        }
        s.push_str(" --- |\n");
        for r in &self.rows {
            let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
            s.push_str(&format!("| {} | {} |", r.name, seeds.join(", ")));
            for &k in &shown {
                let Stat { mean, std, diff } = &r.stats[k];
                let ms = match (mean.is_nan(), std) {
                    (true, _) => "-".to_string(),
                    (false, Some(sd)) => format!("{mean:.2} ± {sd:.2}"),
                    (false, None) => format!("{mean:.2}"),
                };
                let d = match diff {
                    None => "-".to_string(),
                    Some(d) => match d.half_width {
                        Some(h) => format!(
                            "{:+.2} [{:+.2}, {:+.2}]{}",
                            d.mean,
                            d.mean - h,
                            d.mean + h,
                            if d.significant() { " *" } else { "" }
                        ),
                        None => format!("{:+.2} (one seed)", d.mean),
                    },
                };
                let wins = match diff {
                    None => "-".to_string(),
                    Some(d) => format!(
                        "{}/{} (p {:.3})",
                        d.sign.wins,
                        d.sign.wins + d.sign.losses,
                        d.sign.p
                    ),
                };
                s.push_str(&format!(" {ms} | {d} | {wins} |"));
            }
            match r.seeds.is_empty() {
                true => s.push_str(" - |\n"),
                false => s.push_str(&format!(" {:.0} s |\n", r.pretrain_s)),
            }
        }
        s
    }

    fn csv(&self) -> String {
        let shown = self.shown();
        let mut s = "variant,runs".to_string();
        for &k in &shown {
            let key = METRICS[k].0;
            s.push_str(&format!(
                ",{key}_mean,{key}_std,{key}_diff,{key}_diff_lo,{key}_diff_hi,{key}_wins,{key}_losses,{key}_sign_p"
            ));
        }
        s.push_str(",pretrain_s\n");
        let num = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
        for r in &self.rows {
            s.push_str(&format!("{},{}", r.name, r.seeds.len()));
            for &k in &shown {
                let Stat { mean, std, diff } = &r.stats[k];
                let (d, lo, hi) = match diff {
                    Some(d) => (
                        Some(d.mean),
                        d.half_width.map(|h| d.mean - h),
                        d.half_width.map(|h| d.mean + h),
                    ),
                    None => (None, None, None),
                };
                let sign = match diff {
                    Some(d) => format!(",{},{},{:.4}", d.sign.wins, d.sign.losses, d.sign.p),
                    None => ",,,".to_string(),
                };
                let mean = (!mean.is_nan()).then_some(*mean);
                s.push_str(&format!(
                    ",{},{},{},{},{}{sign}",
                    num(mean),
                    num(*std),
                    num(d),
                    num(lo),
                    num(hi)
                ));
            }
            match r.seeds.is_empty() {
                true => s.push_str(",\n"),
                false => s.push_str(&format!(",{:.1}\n", r.pretrain_s)),
            }
        }
        s
    }
}

fn runs_csv(results: &[RunResult]) -> String {
    let mut s =
        "variant,seed,knn_top1,knn_top5,linear_top1,linear_top1_probe_std,shape_bias,pretrain_s,eval_s\n"
            .to_string();
    for r in results {
        let probes: Vec<f64> = r
            .linear_top1_by_probe_seed
            .iter()
            .map(|a| 100.0 * a)
            .collect();
        let probe_std = mean_std(&probes).1.map(|sd| format!("{sd:.4}"));
        s.push_str(&format!(
            "{},{},{:.4},{:.4},{:.4},{},{},{:.1},{:.1}\n",
            r.variant,
            r.seed,
            100.0 * r.knn_top1,
            100.0 * r.knn_top5,
            100.0 * r.linear_top1,
            probe_std.unwrap_or_default(),
            r.shape_bias
                .map(|b| format!("{:.4}", 100.0 * b))
                .unwrap_or_default(),
            r.pretrain_s,
            r.eval_s
        ));
    }
    s
}
