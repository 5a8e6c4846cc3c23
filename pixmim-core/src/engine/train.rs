//! The training loop: data -> forward -> masked loss -> backward -> AdamW, with the
//! official schedule, gradient accumulation, metrics, checkpoints and exact resume.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::DispatchDevice;
use serde_json::{json, Map, Value};

use crate::checkpoint::{self, HostTensor};
use crate::data::loader::{Loader, Source};
use crate::data::seed::{derive, Purpose};
use crate::data::BadFiles;
use crate::data::Dataset;
use crate::device::DeviceSpec;
use crate::engine::data_parallel::{forward_backward, multi_gradients, StepInputs};
use crate::engine::metrics::MetricsLog;
use crate::error::{Error, Result};
use crate::optim::adamw::Moments;
use crate::optim::{AdamW, LrSchedule};
use crate::registry::Composed;
use crate::traits::Autoencoder;
use crate::RunBackend;

type B = RunBackend;

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
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub start_iteration: usize,
    pub total_iterations: usize,
    /// Loss of each iteration run in this call.
    pub losses: Vec<f64>,
    pub images_per_second: f64,
}

fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Checkpoints in `out`, oldest first, with the iteration they resume at.
pub fn list_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = checkpoint_dir(out);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix("step-")?.strip_suffix(".safetensors")?;
            Some((n.parse().ok()?, p))
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn train<M, F>(c: &Composed, opts: &TrainOptions, build: F) -> Result<TrainSummary>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    c.train.validate()?;
    let data_path = c.data.path.clone().ok_or_else(|| {
        Error::config(
            "data.path",
            "no training data: pass --data PATH or set data.path",
        )
    })?;
    let dataset = Dataset::open(&data_path)?;
    let batch = c.train.batch_size;
    let accum = c.train.accum_iter;
    // drop_last, but a dataset smaller than a batch still gives one iteration per epoch
    // (the sampler's stream wraps around), so tiny sample sets can train.
    let ipe = (dataset.len() / batch).max(1);
    let total = match (c.train.steps, c.train.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => ((e * ipe as f64).ceil() as usize).max(1),
        (None, None) => unreachable!("validated"),
    };
    let lr = c
        .optim
        .lr
        .unwrap_or(c.optim.blr * (batch * accum) as f64 / 256.0);
    let sched = LrSchedule::new(&c.schedule, lr, total as f64 / ipe as f64, ipe);

    let out = &opts.out;
    let ckdir = checkpoint_dir(out);
    std::fs::create_dir_all(&ckdir).map_err(|e| Error::io(&ckdir, e))?;
    remove_partial_writes(&ckdir)?;
    let existing = list_checkpoints(out)?;
    if !opts.resume && !existing.is_empty() {
        return Err(Error::Usage(format!(
            "{} already holds checkpoints; pass --resume to continue that run, or choose another --out",
            out.display()
        )));
    }

    let device = opts.device.train_device()?;
    let mut devices = vec![device.clone()];
    for r in &opts.replicas {
        devices.push(r.train_device()?);
    }
    if !batch.is_multiple_of(devices.len()) {
        return Err(Error::config(
            "train.batch_size",
            format!(
                "{batch} does not split evenly over {} devices",
                devices.len()
            ),
        ));
    }
    let specs: Vec<&DeviceSpec> = std::iter::once(&opts.device)
        .chain(&opts.replicas)
        .collect();
    let seed = derive(c.seed, Purpose::Init, 0);
    let mut model = super::model_for_training(c, &specs, &device, seed, &build)?;
    super::memory_preflight(c, &specs, checkpoint::count_params(&model))?;
    let mut optim = AdamW::<B>::new(&c.optim, &model);
    let mut start = 0;
    if let Some((_, path)) = existing.last().filter(|_| opts.resume) {
        let (m, it) = load_checkpoint(path, model, &mut optim, c, &opts.device.device()?)?;
        model = m;
        start = it;
        eprintln!("resuming from {} at step {start}", path.display());
    } else if opts.resume {
        eprintln!(
            "no checkpoint in {} yet: starting from step 0",
            ckdir.display()
        );
    }
    checkpoint::atomic_write(
        &out.join("config.toml"),
        toml::to_string(&c.table).unwrap_or_default().as_bytes(),
    )?;
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"), start)?;

    let workers = if c.train.num_workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        c.train.num_workers
    };
    let bad_files = Arc::new(BadFiles::open(out)?);
    let source = Arc::new(Source {
        dataset,
        on_error: c.data.on_error,
        bad: Arc::clone(&bad_files),
    });
    let loader = Loader::spawn(
        source,
        Arc::clone(&c.parts),
        c.seed,
        batch,
        start..total,
        workers,
        super::target_on_device(c.parts.target.as_ref(), &opts.device),
    );

    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let pb = super::metrics::progress_bar(total as u64, "train");
        pb.set_position(start as u64);
        Some(pb)
    } else {
        None
    };

    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut replica_accumulators: Vec<GradientsAccumulator<M>> = devices
        .iter()
        .map(|_| GradientsAccumulator::new())
        .collect();
    let mut lr_now = sched.at(start);
    let mut losses = Vec::new();
    let t0 = Instant::now();
    let mut t_log = Instant::now();
    let mut imgs_since_log = 0usize;
    let mut last_good: Option<PathBuf> = existing.last().map(|e| e.1.clone());
    for it in start..total {
        let b = loader
            .next()
            .ok_or_else(|| Error::Training("the data pipeline stopped unexpectedly".into()))??;
        debug_assert_eq!(b.iteration, it);
        if it % accum == 0 {
            lr_now = sched.at(it);
        }
        let boundary = (it + 1) % accum == 0 || it + 1 == total;
        let loss_value = if devices.len() == 1 {
            let images = b.images.to_tensor::<B>(&device);
            let target =
                super::target_tensor(c.parts.target.as_ref(), b.target.as_ref(), images.clone());
            let mask = b.mask.to_tensors::<B>(&device);
            let pred = model.forward(images, &mask);
            let loss = model.loss(pred, target, mask.mask.clone());
            let loss_value = loss.clone().into_scalar() as f64;
            check_finite(loss_value, it, last_good.as_deref())?;
            let grads = if accum > 1 { loss / accum as f64 } else { loss }.backward();
            let mut grads = Some(GradientsParams::from_grads(grads, &model));
            if accum > 1 {
                accumulator.accumulate(&model, grads.take().expect("fresh gradients"));
            }
            if boundary {
                let grads = grads.unwrap_or_else(|| accumulator.grads());
                model = optim.step(lr_now, model, grads);
            }
            loss_value
        } else {
            let inputs = StepInputs {
                images: &b.images,
                target: b.target.as_ref(),
                mask: &b.mask,
            };
            let shards =
                forward_backward(&model, &devices, &inputs, c.parts.target.as_ref(), accum)?;
            let mut shard_losses = Vec::with_capacity(shards.len());
            for (shard, acc) in shards.into_iter().zip(&mut replica_accumulators) {
                acc.accumulate(&shard.replica, shard.grads);
                shard_losses.push(shard.loss);
            }
            // Read the losses after every device has its work queued.
            let loss_value: f64 = shard_losses
                .into_iter()
                .map(|l| l.into_scalar() as f64)
                .sum();
            check_finite(loss_value, it, last_good.as_deref())?;
            if boundary {
                let grads = replica_accumulators.iter_mut().map(|acc| acc.grads());
                let multi = multi_gradients(grads, &devices);
                model = optim.step_multi(lr_now, model, multi);
            }
            loss_value
        };
        losses.push(loss_value);
        imgs_since_log += batch;

        let done = it + 1;
        if done % c.train.log_every == 0 || done == total {
            let dt = t_log.elapsed().as_secs_f64().max(1e-9);
            let img_s = imgs_since_log as f64 / dt;
            let mut fields = Map::new();
            fields.insert("step".into(), json!(it));
            fields.insert("epoch".into(), json!(it as f64 / ipe as f64));
            fields.insert("loss".into(), json!(loss_value));
            fields.insert("lr".into(), json!(lr_now));
            fields.insert("img_s".into(), json!(img_s));
            if let Some(norm) = &optim.last_grad_norm {
                // Before clipping, of the last update (`optim.clip_grad` is set).
                let norm = norm.clone().into_scalar() as f64;
                fields.insert("grad_norm".into(), json!(norm));
            }
            fields.insert("elapsed_s".into(), json!(t0.elapsed().as_secs_f64()));
            fields.insert("bad_files".into(), json!(bad_files.count()));
            for (k, v) in model.metrics() {
                fields.insert(k, json!(v));
            }
            metrics.log(fields)?;
            let line = format!(
                "step {done}/{total}  loss {loss_value:.4}  lr {lr_now:.3e}  {img_s:.1} img/s"
            );
            match &bar {
                Some(pb) => pb.set_message(line),
                None => eprintln!("{line}"),
            }
            t_log = Instant::now();
            imgs_since_log = 0;
        }
        if let Some(pb) = &bar {
            pb.set_position(done as u64);
        }
        // Checkpoints only at accumulation boundaries, so no half-accumulated gradient is lost.
        let boundary = done % accum == 0 || done == total;
        if boundary && (done % c.train.checkpoint_every == 0 || done == total) {
            let path = save_checkpoint(out, done, &model, &optim, c).map_err(|e| match e {
                Error::Training(msg) => {
                    Error::Training(format!("{msg}; {}", last_good_note(last_good.as_deref())))
                }
                other => other,
            })?;
            prune(out, c.train.keep_checkpoints)?;
            last_good = Some(path);
        }
        if opts.stop_after == Some(done) {
            break;
        }
    }
    if let Some(pb) = bar {
        pb.finish();
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainSummary {
        out: out.clone(),
        start_iteration: start,
        total_iterations: total,
        images_per_second: (losses.len() * batch) as f64 / secs,
        losses,
    })
}

fn check_finite(loss: f64, it: usize, last_good: Option<&Path>) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Error::Training(format!(
        "loss is {loss} at step {it}: stopping; {}",
        last_good_note(last_good)
    )))
}

fn last_good_note(last_good: Option<&Path>) -> String {
    match last_good {
        Some(p) => format!(
            "the last good checkpoint is {} (resume with --resume, perhaps with a lower lr)",
            p.display()
        ),
        None => "no checkpoint was written yet".into(),
    }
}

fn save_checkpoint<M: AutodiffModule<B>>(
    out: &Path,
    iteration: usize,
    model: &M,
    optim: &AdamW<B>,
    c: &Composed,
) -> Result<PathBuf> {
    let mut tensors = checkpoint::export_params(model);
    // A checkpoint is only worth keeping if it can be resumed from: a diverged run keeps its
    // last good checkpoint instead of overwriting it with NaNs.
    if let Some((name, _)) = tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Training(format!(
            "`{name}` holds NaN or Inf after step {iteration}: stopping without writing a checkpoint"
        )));
    }
    let mut steps = Map::new();
    let mut names: Vec<(&ParamId, &String)> = optim.names.iter().collect();
    names.sort_by(|a, b| a.1.cmp(b.1));
    for (id, name) in names {
        if let Some(m) = optim.state.get(id) {
            let host = |t: &Tensor<
                <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
                1,
            >| HostTensor {
                shape: vec![t.dims()[0]],
                data: t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32"),
            };
            tensors.push((format!("optim.exp_avg.{name}"), host(&m.exp_avg)));
            tensors.push((format!("optim.exp_avg_sq.{name}"), host(&m.exp_avg_sq)));
            steps.insert(name.clone(), json!(m.step));
        }
    }
    let mut meta = checkpoint::run_metadata(c.method.name(), iteration, &c.table);
    meta.insert("optim_steps".to_string(), Value::Object(steps).to_string());
    let path = checkpoint_dir(out).join(format!("step-{iteration:08}.safetensors"));
    checkpoint::write_safetensors(&path, &tensors, meta)?;
    Ok(path)
}

/// A process killed while writing a checkpoint leaves only its temporary file (the rename
/// never happened); remove it so it is never mistaken for a checkpoint or left to pile up.
fn remove_partial_writes(ckdir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(ckdir).map_err(|e| Error::io(ckdir, e))? {
        let p = entry.map_err(|e| Error::io(ckdir, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") {
            eprintln!(
                "removing {} (a checkpoint write that never finished)",
                p.display()
            );
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

fn prune(out: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(out)?;
    if all.len() > keep {
        for (_, p) in &all[..all.len() - keep] {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
    }
    Ok(())
}

/// Load model weights and optimiser state; returns the iteration to continue from.
fn load_checkpoint<M: AutodiffModule<B>>(
    path: &Path,
    model: M,
    optim: &mut AdamW<B>,
    c: &Composed,
    device: &DispatchDevice,
) -> Result<(M, usize)> {
    let (tensors, meta) = checkpoint::read_safetensors(path)?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if meta.get("format").map(String::as_str) != Some(checkpoint::FORMAT) {
        return Err(bad(format!("not a {} file", checkpoint::FORMAT)));
    }
    if meta.get("method").map(String::as_str) != Some(c.method.name()) {
        return Err(bad(format!(
            "was written by method `{}`, this run is `{}`",
            meta.get("method").cloned().unwrap_or_default(),
            c.method.name()
        )));
    }
    let iteration: usize = meta
        .get("iteration")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("has no iteration".into()))?;
    let params: HashMap<String, HostTensor> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (model, unused) = checkpoint::import_params(model, &params, path)?;
    if !unused.is_empty() {
        return Err(bad(format!(
            "has parameters this model lacks: {}",
            unused.join(", ")
        )));
    }
    let steps: Map<String, Value> = meta
        .get("optim_steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    for (id, name) in optim.names.clone() {
        let (Some(m), Some(v)) = (
            tensors.get(&format!("optim.exp_avg.{name}")),
            tensors.get(&format!("optim.exp_avg_sq.{name}")),
        ) else {
            continue;
        };
        let step = steps.get(&name).and_then(Value::as_u64).unwrap_or(0);
        let t = |h: &HostTensor| {
            Tensor::from_data(TensorData::new(h.data.clone(), [h.data.len()]), device)
        };
        optim.state.insert(
            id,
            Moments {
                exp_avg: t(m),
                exp_avg_sq: t(v),
                step,
            },
        );
    }
    Ok((model, iteration))
}
