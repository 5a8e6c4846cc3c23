//! The training loop: batches from the data workers through the [`Step`], AdamW at each
//! accumulation boundary with the official schedule, metrics, checkpoints and exact resume.
//! With a process group (`mpirun`), every rank runs this loop on its rows of each batch and
//! only rank 0 writes the run folder ([`crate::distributed`]).
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::DispatchDevice;
use serde_json::{json, Map};

use crate::checkpoint;
use crate::checkpoint::run::{self, RunDir};
use crate::data::loader::{BatchRows, Loader, Source};
use crate::data::seed::{derive, Purpose};
use crate::data::BadFiles;
use crate::data::Dataset;
use crate::engine::monitor::{Measurement, Monitor};
use crate::engine::reconstruct::reconstruct_batch;
use crate::engine::step::{Step, StepInputs};
use crate::error::{Error, Result};
use crate::image_grid::grid_image;
use crate::job::{ReconstructInput, TrainOptions, TrainSummary};
use crate::log::{progress_bar, MetricsLog};
use crate::optim::{AdamW, LrSchedule};
use crate::preview::whole_view;
use crate::registry::Composed;
use crate::target::TargetParams;
use crate::traits::Autoencoder;
use crate::traits::ImageBatch;
use crate::RunBackend;

type B = RunBackend;

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

    let group = opts.group.as_deref();
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
    // Rank 0 alone writes the run folder; the others only read its checkpoints.
    let lead = rank == 0;
    if let Some(g) = group {
        g.set_timeout(std::time::Duration::from_secs_f64(c.train.sync_timeout_s));
    }
    let monitor = match lead {
        true => Monitor::open(c)?,
        false => None,
    };
    if !batch.is_multiple_of(world) {
        return Err(Error::config(
            "train.batch_size",
            format!("the global batch of {batch} does not split evenly over {world} processes"),
        ));
    }
    let mut run = if lead {
        RunDir::open(&opts.out, opts.resume)?
    } else {
        RunDir::follow(&opts.out)
    };
    let (specs, devices) = super::training_devices(
        &opts.device,
        &opts.replicas,
        batch / world,
        c.train.activation_checkpointing,
    )?;
    let seed = derive(c.train.init_seed.unwrap_or(c.seed), Purpose::Init, 0);
    let mut model = super::model_for_training(c, &specs, &devices[0], seed, &build)?;
    super::memory_preflight(c, &specs, checkpoint::count_params(&model), world)?;
    let target_gen = c.parts.target.as_ref();
    let mut target = TargetParams::new(target_gen, &devices[0]);
    let mut optim = super::optimiser(c, &model, &target);
    let mut start = 0;
    let (intact, corrupt) = match opts.resume {
        true => run.newest_intact(lead)?,
        false => (None, Vec::new()),
    };
    if opts.resume && intact.is_none() && !corrupt.is_empty() {
        return Err(Error::Checkpoint {
            path: run.checkpoint_dir(),
            msg: "holds no checkpoint that reads whole; refusing to start the run over".into(),
        });
    }
    let mut last_good = match &intact {
        Some(c) => Some(c.path.clone()),
        None => run.latest()?,
    };
    match intact {
        Some(checkpoint) => {
            let path = checkpoint.path.clone();
            let method = c.method.name();
            let restored = run::load(checkpoint, (model, target), method)?;
            optim.import_state(&restored.optim, &devices[0]);
            (model, target, start) = (restored.model, restored.target, restored.iteration);
            if lead {
                eprintln!("resuming from {} at step {start}", path.display());
            }
        }
        None if opts.resume && lead => eprintln!(
            "no checkpoint in {} yet: starting from step 0",
            run.checkpoint_dir().display()
        ),
        None => {}
    }
    if let Some(g) = group {
        // The data's path may differ between nodes (each mounts its copy where it will);
        // what it lists and holds is compared instead.
        let mut config = c.table.clone();
        if let Some(toml::Value::Table(data)) = config.get_mut("data") {
            data.remove("path");
        }
        crate::distributed::agree(
            g,
            &[
                (
                    "the run's config",
                    crate::distributed::hash_str(&toml::to_string(&config).unwrap_or_default()),
                ),
                ("the data list", dataset.fingerprint()),
                ("the data's content", dataset.content_fingerprint()),
                ("the step it starts from", start as u64),
                ("the number of devices", devices.len() as u64),
            ],
        )?;
    }
    let sync = match &opts.group {
        Some(g) => {
            let sync = crate::distributed::sync::gradient_sync(c.train.gradient_sync, g, &devices)?;
            if lead {
                eprintln!(
                    "gradients summed over {world} processes by {}",
                    sync.describe()
                );
            }
            Some(sync)
        }
        None => None,
    };
    if lead {
        run.start(&c.table)?;
    }

    let workers = if c.train.num_workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        c.train.num_workers
    };
    // Other ranks report the unreadable files of their rows on stderr only.
    let bad_files = Arc::new(if lead {
        BadFiles::open(&run.out)?
    } else {
        BadFiles::in_memory()
    });
    let source = Arc::new(Source {
        dataset,
        on_error: c.data.on_error,
        bad: Arc::clone(&bad_files),
        scaled_decode: c.data.scaled_decode,
    });
    let image_every = if lead { c.train.image_every } else { 0 };
    let watched = watched_images(&source, c, image_every)?;
    let loader = Loader::spawn(
        source,
        Arc::clone(&c.parts),
        c.seed,
        BatchRows::share(batch, rank, world),
        start..total,
        workers,
        super::target_on_device(target_gen, &opts.device),
    );

    let mut report = match lead {
        true => Some(Report::open(
            &run,
            (start, total),
            ipe,
            opts.progress,
            bad_files,
        )?),
        false => None,
    };
    if let (Some(report), false) = (report.as_mut(), corrupt.is_empty()) {
        report.passed_over(start, &corrupt)?;
    }
    let first_device = devices[0].clone();
    let mut step = Step::<M>::new(devices, accum)
        .with_group(opts.group.clone())
        .with_gradient_sync(sync);
    let mut lr_now = sched.at(start);
    let started = Instant::now();
    let mut losses = Vec::new();
    for it in start..total {
        let asked = Instant::now();
        let b = loader
            .next()
            .ok_or_else(|| Error::Training("the data pipeline stopped unexpectedly".into()))??;
        let data_wait = asked.elapsed();
        debug_assert_eq!(b.iteration, it);
        if it % accum == 0 {
            lr_now = sched.at(it);
        }
        let inputs = StepInputs {
            iteration: it,
            images: &b.images,
            target: b.target.as_ref(),
            mask: &b.mask,
        };
        let loss = step.accumulate(&model, &target, &inputs, target_gen)?;
        check_finite(loss, it, last_good.as_deref())?;
        let done = it + 1;
        // Updates (and checkpoints) at accumulation boundaries only, so no half-accumulated
        // gradient is applied early or lost.
        let boundary = done % accum == 0 || done == total;
        if boundary {
            (model, target) = step.update((model, target), &mut optim, lr_now)?;
            let every = c.train.replica_check_every;
            if let Some(g) = group.filter(|_| every > 0 && (done % every == 0 || done == total)) {
                crate::distributed::check_replicas(g, (&model, &target), done)?;
            }
        }
        losses.push(loss);
        // Only rank 0 logs and writes.
        if let Some(report) = report.as_mut() {
            report.step(batch, data_wait);
            if done % c.train.log_every == 0 || done == total {
                let mut metrics = model.metrics();
                if let Some(theta) = target.values() {
                    if let Some(d) = target_gen.device_path() {
                        metrics.extend(d.trainable_metrics(&theta));
                    }
                }
                report.log(it, loss, lr_now, &optim, metrics)?;
            }
            if let Some(images) = watched.as_ref().filter(|_| done % image_every == 0) {
                let trained = (&model, &target);
                let rec = reconstruct_batch(c, trained, &opts.device, &first_device, images)?;
                let rows: Vec<_> = (0..rec.batch)
                    .map(|b| rec.panels(b, images.image.image(b)))
                    .collect();
                report
                    .metrics
                    .image("reconstruction", it, &grid_image(&rows)?)?;
            }
            if let Some(m) = monitor.as_ref().filter(|m| m.due(done, total)) {
                report.monitored(it, m.measure(c, &model, &first_device)?)?;
            }
        }
        if lead && boundary && (done % c.train.checkpoint_every == 0 || done == total) {
            let method = (c.method.name(), &c.table);
            let trained = (&model, &target);
            let state = optim.export_state();
            let saved = run.save(done, trained, state, method, c.train.keep_checkpoints);
            last_good = Some(saved.map_err(|e| match e {
                Error::Training(msg) => {
                    Error::Training(format!("{msg}; {}", last_good_note(last_good.as_deref())))
                }
                other => other,
            })?);
        }
        if opts.stop_after == Some(done) {
            break;
        }
    }
    let secs = match report {
        Some(report) => report.finish(),
        None => started.elapsed().as_secs_f64().max(1e-9),
    };
    Ok(TrainSummary {
        out: run.out.clone(),
        start_iteration: start,
        total_iterations: total,
        images_per_second: (losses.len() * batch) as f64 / secs,
        losses,
    })
}

/// The images a run's reconstruction grid shows (`train.image_every`): the first four of the
/// data, whole, under one fixed mask of the run's seed, so the grids are comparable over steps.
fn watched_images(source: &Source, c: &Composed, every: usize) -> Result<Option<ReconstructInput>> {
    if every == 0 {
        return Ok(None);
    }
    let n = source.dataset.len().min(4);
    let (h, w) = c.geometry.image;
    let mut image = ImageBatch::zeros(n, 3, h, w);
    for (i, out) in image.data.chunks_exact_mut(3 * h * w).enumerate() {
        out.copy_from_slice(&whole_view(&source.load(i)?, (h, w)));
    }
    Ok(Some(ReconstructInput {
        image,
        noise: None,
        seed: c.seed,
    }))
}

/// The share of the time since the last log spent waiting for batches above which the
/// progress line says so.
const DATA_WAIT_SHOWN: f64 = 0.05;

/// The printed line of a logged step; `data_share` is the part of the time since the last
/// line spent waiting for batches, shown once it is visible (GPUs idle on the data).
fn progress_line(
    (done, total): (usize, usize),
    loss: f64,
    lr: f64,
    img_s: f64,
    data_share: f64,
) -> String {
    let mut line = format!("step {done}/{total}  loss {loss:.4}  lr {lr:.3e}  {img_s:.1} img/s");
    if data_share > DATA_WAIT_SHOWN {
        line.push_str(&format!("  waiting for data {:.0}%", 100.0 * data_share));
    }
    line
}

/// What a run reports as it goes: a line per logged step in `metrics.jsonl`, and on stderr as
/// a progress bar's message on a terminal or as a plain line otherwise.
struct Report {
    metrics: MetricsLog,
    bar: Option<indicatif::ProgressBar>,
    bad_files: Arc<BadFiles>,
    total: usize,
    iterations_per_epoch: usize,
    started: Instant,
    since_log: Instant,
    images_since_log: usize,
    steps_since_log: usize,
    /// Time the steps since the last log waited for their batches.
    data_wait_since_log: std::time::Duration,
}

impl Report {
    fn open(
        run: &RunDir,
        (start, total): (usize, usize),
        iterations_per_epoch: usize,
        progress: bool,
        bad_files: Arc<BadFiles>,
    ) -> Result<Self> {
        let bar = (progress && std::io::stderr().is_terminal()).then(|| {
            let pb = progress_bar(total as u64, "train");
            pb.set_position(start as u64);
            pb
        });
        Ok(Self {
            // Lines logged after the checkpoint a run resumes from are logged again.
            metrics: MetricsLog::open(&run.out.join("metrics.jsonl"), start)?,
            bar,
            bad_files,
            total,
            iterations_per_epoch,
            started: Instant::now(),
            since_log: Instant::now(),
            images_since_log: 0,
            steps_since_log: 0,
            data_wait_since_log: std::time::Duration::ZERO,
        })
    }

    /// Note in the metrics that the resume at `start` passed over damaged checkpoints.
    fn passed_over(&mut self, start: usize, corrupt: &[std::path::PathBuf]) -> Result<()> {
        let mut fields = Map::new();
        fields.insert("step".into(), json!(start));
        fields.insert("event".into(), json!("resume"));
        let names: Vec<String> = corrupt.iter().map(|p| p.display().to_string()).collect();
        fields.insert("corrupt_checkpoints".into(), json!(names));
        self.metrics.log(fields)
    }

    /// One more step of `batch` images done, which waited `data_wait` for them.
    fn step(&mut self, batch: usize, data_wait: std::time::Duration) {
        self.images_since_log += batch;
        self.steps_since_log += 1;
        self.data_wait_since_log += data_wait;
        if let Some(pb) = &self.bar {
            pb.inc(1);
        }
    }

    /// Log iteration `it`: loss, lr, speed since the last log and how long each of those steps
    /// waited for its batch on average (`data_wait_s`: the data pipeline is the bottleneck
    /// when it is a large part of the step), the gradient norm when clipping, bad files so
    /// far, and the model's and the target's own metrics (MFF's fusion weights, the adaptive
    /// radius).
    fn log(
        &mut self,
        it: usize,
        loss: f64,
        lr: f64,
        optim: &AdamW<B>,
        model_metrics: Vec<(String, f64)>,
    ) -> Result<()> {
        let wall = self.since_log.elapsed().as_secs_f64().max(1e-9);
        let img_s = self.images_since_log as f64 / wall;
        let waited = self.data_wait_since_log.as_secs_f64();
        let data_wait_s = waited / self.steps_since_log.max(1) as f64;
        let mut fields = Map::new();
        fields.insert("step".into(), json!(it));
        fields.insert(
            "epoch".into(),
            json!(it as f64 / self.iterations_per_epoch as f64),
        );
        fields.insert("loss".into(), json!(loss));
        fields.insert("lr".into(), json!(lr));
        fields.insert("img_s".into(), json!(img_s));
        fields.insert("data_wait_s".into(), json!(data_wait_s));
        if let Some(norm) = &optim.last_grad_norm {
            // Before clipping, of the last update (`optim.clip_grad` is set).
            let norm = norm.clone().into_scalar() as f64;
            fields.insert("grad_norm".into(), json!(norm));
        }
        fields.insert(
            "elapsed_s".into(),
            json!(self.started.elapsed().as_secs_f64()),
        );
        fields.insert("bad_files".into(), json!(self.bad_files.count()));
        for (k, v) in model_metrics {
            fields.insert(k, json!(v));
        }
        self.metrics.log(fields)?;
        let (done, total) = (it + 1, self.total);
        let line = progress_line((done, total), loss, lr, img_s, waited / wall);
        match &self.bar {
            Some(pb) => pb.set_message(line),
            None => eprintln!("{line}"),
        }
        self.since_log = Instant::now();
        self.images_since_log = 0;
        self.steps_since_log = 0;
        self.data_wait_since_log = std::time::Duration::ZERO;
        Ok(())
    }

    /// Log the monitor's measurement after iteration `it` (`knn_top1`, `knn_top5`,
    /// `monitor_s`) and say it; its time does not count in the next log's images per second.
    fn monitored(&mut self, it: usize, m: Measurement) -> Result<()> {
        let secs = m.elapsed.as_secs_f64();
        let mut fields = Map::new();
        fields.insert("step".into(), json!(it));
        fields.insert("knn_top1".into(), json!(m.knn.top1));
        fields.insert("knn_top5".into(), json!(m.knn.top5));
        fields.insert("monitor_s".into(), json!(secs));
        self.metrics.log(fields)?;
        let note = format!(
            "step {}: monitor kNN top-1 {:.2}% ({secs:.1} s)",
            it + 1,
            100.0 * m.knn.top1
        );
        match &self.bar {
            Some(pb) => pb.println(note),
            None => eprintln!("{note}"),
        }
        self.since_log += m.elapsed;
        Ok(())
    }

    /// Seconds since the run (or resume) started.
    fn finish(self) -> f64 {
        if let Some(pb) = self.bar {
            pb.finish();
        }
        self.started.elapsed().as_secs_f64().max(1e-9)
    }
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

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn the_line_says_when_steps_wait_for_data() {
        let quiet = progress_line((10, 200), 0.5, 1e-3, 250.0, 0.01);
        assert_eq!(quiet, "step 10/200  loss 0.5000  lr 1.000e-3  250.0 img/s");
        let starved = progress_line((10, 200), 0.5, 1e-3, 250.0, 0.42);
        assert!(starved.ends_with("  waiting for data 42%"), "{starved}");
    }
}
