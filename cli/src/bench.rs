//! `pixmim bench`: data pipeline, low-pass target and training-step throughput, as a table,
//! as one JSON object (`--json`), and as `bench/results/<date>-<machine>.md` (`--save`).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use pixmim::bench;
use pixmim::config::GradientSyncKind;
use pixmim::device::{DeviceMemory, DeviceSpec};
use pixmim::distributed::sync::gradient_sync;
use pixmim::distributed::{ProcessGroup, Solo};
use pixmim::job::{StepBenchOptions, StepTiming};
use pixmim::nn::Precision;
use pixmim::registry::{self, Composed, Request};
use pixmim::{Error, Result};
use serde_json::{json, Map, Value};

#[derive(Args)]
pub struct BenchArgs {
    /// JPEGs for the pipeline benchmark (default: 48 ImageNet-sized 500x375 JPEGs made from
    /// the sample photos).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Device for the training steps and the device low-pass path, as `train --device` (`cpu`
    /// is a flex replica per core, `flex` one); several, comma-separated (`flex,flex`,
    /// `cuda:0,cuda:1`), time the data-parallel step of `pixmim train` (the low-pass device
    /// path runs on the first).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Methods whose steps are timed (default: every registered method).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Presets whose steps are timed (default: tiny on CPU, tiny and base on GPU).
    #[arg(long, value_delimiter = ',')]
    presets: Vec<String>,
    /// Precisions of the training steps: f32, bf16 (bf16 needs cuda or flex).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<String>,
    /// Override a config key of every timed configuration, e.g.
    /// `--set target.on_device=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seconds per pipeline measurement window.
    #[arg(long, default_value_t = 1.0)]
    pipeline_secs: f64,
    /// Pipeline windows per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Step rates (images/s, comma-separated) to say how many cores of the pipeline feed: a
    /// GPU step's rate from `--only steps` or from `metrics.jsonl`'s `img_s`.
    #[arg(long, value_delimiter = ',')]
    feed: Vec<f64>,
    /// Also time PIL's pipeline (bench/cpu/pil_pipeline.py, needs python3 with Pillow and
    /// numpy) on the same JPEGs, in the window after each of pixmim's one-core windows.
    #[arg(long)]
    compare_pil: bool,
    /// Decode every JPEG of the pipeline benchmark at full size (`data.scaled_decode = false`).
    #[arg(long)]
    full_decode: bool,
    /// Files in the generated tree of `--only listing` (ImageNet's 1,281,167 in 1,000 class
    /// folders; hard links of one photo).
    #[arg(long, default_value_t = 100_000)]
    listing_files: usize,
    /// Which measurements to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pipeline,lowpass,steps"
    )]
    only: Vec<Part>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write bench/results/<date>-<machine>.md.
    #[arg(long)]
    save: bool,
    /// Machine name for --save (default: the host name).
    #[arg(long)]
    machine: Option<String>,
    /// The GPU's dense 16-bit tensor peak in TFLOP/s, for the model FLOP utilisation (known
    /// for A100, H100, H200 and L40S from the name the driver gives).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Tune the GPU kernels of the training steps once and keep the choices in the autotune
    /// cache, so that runs pointed at it do not tune in their first steps: the steps alone,
    /// at the `base` preset unless --presets says otherwise. Needs a GPU --device and a build
    /// with the `autotune` feature.
    #[arg(long)]
    tune: bool,
    /// Folder of autotune results to read and extend (default: ./bench/gpu/cache, the repo's,
    /// when it exists or with --tune).
    #[arg(long, value_name = "DIR")]
    autotune_cache: Option<PathBuf>,
}

/// MAE-B forward + backward FLOPs per 224 image at mask ratio 0.75 (numerics §1.2).
const MAE_BASE_GFLOP_PER_IMAGE: f64 = 59.0;

fn composed(method: &str, preset: &str, plugins: &[&str], sets: Vec<String>) -> Result<Composed> {
    registry::compose(&Request {
        method: method.into(),
        preset: Some(preset.into()),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
        sets,
        config_file: None,
    })
}

fn time_steps(c: &Composed, opts: &StepBenchOptions) -> Result<StepTiming> {
    c.bench_step(opts)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Decode + crop + flip + normalise throughput.
    Pipeline,
    /// The PixMIM low-pass target, host and device paths.
    Lowpass,
    /// Training steps with and without PixMIM.
    Steps,
    /// The sum of MAE-B's gradients over the processes (run under `mpirun -np N`).
    Allreduce,
    /// Listing an image folder, walked and from its cache (`--data`, else a generated
    /// ImageNet-shaped tree of `--listing-files`).
    Listing,
}

struct Row {
    what: String,
    value: String,
}

/// What `pixmim bench` measured: table rows (also printed to stderr as they come, so a run cut
/// short still shows what it measured) and the JSON object.
struct Report {
    rows: Vec<Row>,
    out: Map<String, Value>,
    /// Ranks other than 0 of `--only allreduce` measure with rank 0 but report nothing.
    quiet: bool,
}

impl Report {
    fn row(&mut self, what: String, value: String) {
        if !self.quiet {
            eprintln!("{what:58} {value}");
        }
        self.rows.push(Row { what, value });
    }
    fn set(&mut self, key: impl Into<String>, value: Value) {
        self.out.insert(key.into(), value);
    }
}

pub fn run(
    a: &BenchArgs,
    samples: Option<PathBuf>,
    group: Option<Arc<dyn ProcessGroup>>,
) -> Result<()> {
    let world = group.as_ref().map_or(1, |g| g.world());
    if world > 1 && a.only != [Part::Allreduce] {
        return Err(Error::Usage(format!(
            "under mpirun ({world} processes) `pixmim bench` runs `--only allreduce` alone"
        )));
    }
    let mut devices = DeviceSpec::parse_list(&DeviceSpec::resolve(&a.device, a.batch))?;
    if a.tune {
        if !pixmim::gpu_runtime::AUTOTUNE {
            return Err(Error::Usage(
                "--tune: this binary was built without the `autotune` feature \
                 (cargo build --release -p pixmim-cli --features autotune)"
                    .into(),
            ));
        }
        if devices.iter().any(DeviceSpec::is_cpu) {
            return Err(Error::Usage(format!(
                "--tune tunes GPU kernels, but --device {} includes a CPU backend: give cuda or wgpu",
                a.device
            )));
        }
    }
    let autotune_cache = crate::use_autotune_cache(a.autotune_cache.as_deref(), a.tune)?;
    for d in &devices {
        d.device()?; // fail on a missing CUDA driver before any work
    }
    // Counted once the first GPU device chose its card's folder: this card's tuned shapes.
    let tuned_before = autotune_cache
        .and_then(|_| pixmim::gpu_runtime::autotune_cache())
        .map(pixmim::gpu_runtime::autotune_cache_entries);
    let backends = devices.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    if !a.batch.is_multiple_of(devices.len()) {
        return Err(Error::Usage(format!(
            "--batch {} does not split evenly over {} devices",
            a.batch,
            devices.len()
        )));
    }
    let device = devices.remove(0);
    let replicas = devices;
    if a.batch == 0 || a.steps == 0 || a.rounds == 0 {
        return Err(Error::Usage(
            "--batch, --steps and --rounds must be at least 1".into(),
        ));
    }
    if let Some(f) = a.feed.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(Error::Usage(format!(
            "--feed {f}: a step rate is a positive number of images per second"
        )));
    }
    let precisions: Vec<Precision> = a
        .precision
        .iter()
        .map(|p| {
            Precision::parse(p)
                .map_err(|_| Error::Usage(format!("--precision `{p}`: expected f32 or bf16")))
        })
        .collect::<Result<_>>()?;
    for d in std::iter::once(&device).chain(&replicas) {
        for &p in &precisions {
            d.check_precision(p)?;
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut report = Report {
        rows: Vec::new(),
        out: Map::new(),
        quiet: group.as_ref().is_some_and(|g| g.rank() != 0),
    };
    // --tune times the training steps alone: they are what it tunes.
    let parts = if a.tune {
        vec![Part::Steps]
    } else {
        a.only.clone()
    };
    let scratch = std::env::temp_dir().join(format!("pixmim-bench-{}", std::process::id()));
    let result = (|| -> Result<()> {
        if parts.contains(&Part::Pipeline) {
            let files = match &a.data {
                Some(d) => pixmim::data::Dataset::open(d)?.items,
                None => {
                    let samples = samples.as_deref().ok_or_else(|| {
                        Error::Usage("no --data given and data/samples was not found".into())
                    })?;
                    bench::imagenet_like_jpegs(samples, &scratch.join("jpegs"), 48)?
                }
            };
            pipeline(a, &files, cores, &scratch, &mut report)?;
        }
        if parts.contains(&Part::Lowpass) {
            lowpass(a, &device, &mut report)?;
        }
        if parts.contains(&Part::Steps) {
            steps(a, &device, &replicas, &precisions, &mut report)?;
        }
        if parts.contains(&Part::Allreduce) {
            allreduce(a, group.clone(), &device, &mut report)?;
        }
        if parts.contains(&Part::Listing) {
            listing(a, samples.as_deref(), &scratch, &mut report)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result?;

    if let Some(b) = bench::peak_rss_bytes() {
        let mib = b as f64 / (1 << 20) as f64;
        report.set("peak_rss_mib", json!(mib));
        report.row("peak host memory".into(), format!("{mib:.0} MiB"));
    }
    let machine = a.machine.clone().unwrap_or_else(host_name);
    let date = time::OffsetDateTime::now_utc().date().to_string();
    report.set("machine", json!(machine));
    report.set("cpu", json!(cpu_model()));
    report.set("cores", json!(cores));
    report.set("device", json!(a.device));
    report.set("backends", json!(backends));
    // cubecl's streams (each with its own memory pools) per GPU, as the run configured them.
    report.set(
        "gpu_streams_per_device",
        json!(pixmim::gpu_runtime::streams_per_device()),
    );
    report.set("batch", json!(a.batch));
    report.set("date", json!(date));
    build_and_tuning(tuned_before, &mut report);

    if report.quiet {
        return Ok(());
    }
    let obj = Value::Object(report.out);
    if a.json {
        println!("{obj}");
    }
    if a.save {
        let path = PathBuf::from("bench/results").join(format!("{date}-{machine}.md"));
        save(&path, &obj, &report.rows, a)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// What the GPU backends were built with (fusion, autotune) and, with an autotune cache, its
/// folder for this run's card and how many tuned shapes it held `before` and after.
fn build_and_tuning(before: Option<usize>, report: &mut Report) {
    use pixmim::gpu_runtime::{autotune_cache_entries, AUTOTUNE, FUSION};
    report.set("gpu_fusion", json!(FUSION));
    report.set("gpu_autotune", json!(AUTOTUNE));
    let on_off = |b: bool| if b { "on" } else { "off" };
    report.row(
        "GPU kernel fusion / autotune".into(),
        format!("{} / {}", on_off(FUSION), on_off(AUTOTUNE)),
    );
    if let (Some(dir), Some(before)) = (pixmim::gpu_runtime::autotune_cache(), before) {
        let after = autotune_cache_entries(dir);
        report.set("autotune_cache", json!(dir));
        report.set("autotune_entries_before", json!(before));
        report.set("autotune_entries_after", json!(after));
        report.row(
            "autotune cache".into(),
            format!(
                "{}: {after} tuned shapes, {} new",
                dir.display(),
                after.saturating_sub(before)
            ),
        );
    }
}

/// The process group's sum of a buffer of MAE-B's trainable parameter count (its gradients,
/// f32, one call per step as `train` makes, by the sum `train.gradient_sync = "auto"` picks
/// for `device`: NCCL on CUDA, else the group's): `--warmup` untimed calls, then the median of
/// `--steps`. Bus bandwidth as NCCL's tests count it: a ring all-reduce moves 2(W-1)/W of the
/// buffer through each rank's link. One process on a CUDA device asks for NCCL's one-rank
/// communicator: no traffic, but a check that NCCL and its copies work on the machine.
fn allreduce(
    a: &BenchArgs,
    group: Option<Arc<dyn ProcessGroup>>,
    device: &DeviceSpec,
    report: &mut Report,
) -> Result<()> {
    let device = device.device()?;
    let (group, kind): (Arc<dyn ProcessGroup>, _) = match group {
        Some(g) if g.world() > 1 => (g, GradientSyncKind::Auto),
        _ if pixmim::device::cuda_index(&device).is_some() => {
            (Arc::new(Solo), GradientSyncKind::Nccl)
        }
        _ => {
            return Err(Error::Usage(
                "--only allreduce times the sum over processes: start it with `mpirun -np 2` \
                 (or more), or give it one CUDA device to check NCCL"
                    .into(),
            ))
        }
    };
    let sync = gradient_sync(kind, &group, std::slice::from_ref(&device))?;
    let (params, _) = composed("mae", "base", &[], vec![])?.count_params()?;
    let mut buf = vec![0.5f32; params];
    let mut secs = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t0 = std::time::Instant::now();
        sync.all_reduce_gradients(&mut buf, "the bench's gradients")?;
        if i >= a.warmup {
            secs.push(t0.elapsed().as_secs_f64());
        }
    }
    let expected = 0.5 * (group.world() as f32).powi((a.warmup + a.steps) as i32);
    if buf.iter().any(|&v| v != expected) {
        return Err(Error::Training(format!(
            "the all-reduce summed wrongly: expected {expected} everywhere"
        )));
    }
    let s = bench::median(&secs);
    let w = group.world() as f64;
    let bytes = (params * 4) as f64;
    let bus = 2.0 * (w - 1.0) / w * bytes / s / 1e9;
    report.set("allreduce_processes", json!(group.world()));
    report.set("allreduce_by", json!(sync.describe()));
    report.set("allreduce_floats", json!(params));
    report.set("allreduce_s", json!(s));
    report.set("allreduce_bus_gb_s", json!(bus));
    report.row(
        format!(
            "all-reduce of MAE-B's gradients ({:.1} M f32, {} processes, {})",
            params as f64 / 1e6,
            group.world(),
            sync.describe()
        ),
        match group.world() {
            1 => format!("{:.1} ms  (one rank: the copies, no traffic)", s * 1e3),
            _ => format!("{:.1} ms  ({bus:.1} GB/s bus)", s * 1e3),
        },
    );
    Ok(())
}

/// Data pipeline: decode + crop + flip + normalise at 224, RRC (MAE) and SRC (PixMIM), on one
/// core and on all; each the median of `--rounds` windows, since a shared CPU's speed drifts.
/// With `--compare-pil`, PIL's pipeline on the same files runs in the window after each of
/// pixmim's one-core windows, so the two are compared under the same conditions.
fn listing(
    a: &BenchArgs,
    samples: Option<&Path>,
    scratch: &Path,
    report: &mut Report,
) -> Result<()> {
    let root = match &a.data {
        Some(d) => d.clone(),
        None => {
            let photo = samples.map(|s| s.join("coffee.jpg")).ok_or_else(|| {
                Error::Usage("no --data given and data/samples was not found".into())
            })?;
            let classes = (a.listing_files / 1281).clamp(1, 1000);
            bench::imagenet_like_tree(&photo, scratch, a.listing_files, classes)?;
            scratch.join("train")
        }
    };
    let t = bench::listing(&root, a.rounds, scratch)?;
    let per_s = |s: f64| t.files as f64 / s.max(1e-9);
    report.row(
        format!("listing {} files, walked", t.files),
        format!("{:.2} s ({:.0} files/s)", t.walk_s, per_s(t.walk_s)),
    );
    report.row(
        "listing, from its cache".into(),
        format!("{:.2} s ({:.0} files/s)", t.cached_s, per_s(t.cached_s)),
    );
    report.row(
        "listing memory beside each path".into(),
        format!("{:.0} B", t.bytes_per_file),
    );
    report.set(
        "listing",
        json!({"files": t.files, "walk_s": t.walk_s, "cached_s": t.cached_s,
               "bytes_per_file_beside_path": t.bytes_per_file}),
    );
    Ok(())
}

fn pipeline(
    a: &BenchArgs,
    files: &[PathBuf],
    cores: usize,
    scratch: &Path,
    report: &mut Report,
) -> Result<()> {
    let mae224 = composed("mae", "base", &[], vec![])?;
    let pix224 = composed("mae", "base", &["pixmim"], vec![])?;
    let pil = if a.compare_pil {
        Some(PilPipeline::prepare(files, scratch)?)
    } else {
        None
    };
    for (key, c) in [("rrc", &mae224), ("src", &pix224)] {
        for (label, threads) in [("1core", 1), ("allcores", cores)] {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for _ in 0..a.rounds {
                ours.push(bench::pipeline_images_per_second(
                    files,
                    c.parts.augmentation.as_ref(),
                    threads,
                    a.pipeline_secs,
                    !a.full_decode,
                )?);
                if let (Some(pil), 1) = (&pil, threads) {
                    theirs.push(pil.images_per_second(key, a.pipeline_secs)?);
                }
            }
            let rate = bench::median(&ours);
            report.set(format!("pipeline_{key}_img_s_{label}"), json!(rate));
            let plural = if threads > 1 { "s" } else { "" };
            report.row(
                format!("pipeline {key} 224 ({threads} thread{plural})"),
                format!("{rate:.0} img/s"),
            );
            if threads == 1 && !a.feed.is_empty() {
                // Cores scale the pipeline about linearly (each image is one core's work).
                let mut cores = Map::new();
                for &f in &a.feed {
                    let n = (f / rate).ceil();
                    cores.insert(format!("{f}"), json!(n));
                    report.row(
                        format!("pipeline {key} 224: cores to feed {f} img/s"),
                        format!("{n}"),
                    );
                }
                report.set(
                    format!("pipeline_{key}_cores_to_feed"),
                    Value::Object(cores),
                );
            }
            if !theirs.is_empty() {
                let pil_rate = bench::median(&theirs);
                report.set(format!("pil_{key}_img_s_1core"), json!(pil_rate));
                report.set(format!("pipeline_{key}_vs_pil"), json!(rate / pil_rate));
                report.row(
                    format!("PIL {key} 224 (1 thread, same files, interleaved)"),
                    format!("{pil_rate:.0} img/s  (pixmim {:.2}x)", rate / pil_rate),
                );
            }
        }
    }
    Ok(())
}

/// `bench/cpu/pil_pipeline.py`, the PIL + torchvision pipeline written out, run by python3.
struct PilPipeline {
    script: PathBuf,
    dir: PathBuf,
}

impl PilPipeline {
    const SCRIPT: &'static str = include_str!("../../bench/cpu/pil_pipeline.py");

    /// Write the script beside the JPEGs (it reads every .jpg of one folder).
    fn prepare(files: &[PathBuf], scratch: &Path) -> Result<Self> {
        let dir = scratch.join("pil");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for (i, f) in files.iter().enumerate() {
            let copy = dir.join(format!("{i:05}.jpg"));
            std::fs::copy(f, &copy).map_err(|e| Error::io(f, e))?;
        }
        let script = scratch.join("pil_pipeline.py");
        std::fs::write(&script, Self::SCRIPT).map_err(|e| Error::io(&script, e))?;
        Ok(Self { script, dir })
    }

    fn images_per_second(&self, transform: &str, secs: f64) -> Result<f64> {
        let out = std::process::Command::new("python3")
            .arg(&self.script)
            .arg(&self.dir)
            .args(["--transforms", transform, "--rounds", "1"])
            .args(["--secs", &secs.to_string()])
            .output()
            .map_err(|e| Error::Usage(format!("--compare-pil needs python3: {e}")))?;
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "--compare-pil: the PIL pipeline failed (it needs python3 with Pillow and numpy): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Usage(format!("--compare-pil: unreadable output: {e}")))?;
        v[format!("pil_{transform}_img_s_1core")]
            .as_f64()
            .ok_or_else(|| Error::Usage(format!("--compare-pil: no {transform} rate in {v}")))
    }
}

/// Low-pass target at 224: the host path on a batch of 64, and the device path.
fn lowpass(a: &BenchArgs, device: &DeviceSpec, report: &mut Report) -> Result<()> {
    let pix224 = composed("mae", "base", &["pixmim"], vec![])?;
    let ms = bench::target_ms_per_image(pix224.parts.target.as_ref(), (224, 224), 64, 5);
    report.set("lowpass_ms_per_image_224", json!(ms));
    report.row(
        "lowpass 224, host (batch 64, all cores)".into(),
        format!("{ms:.2} ms/img"),
    );
    let on_device = composed(
        "mae",
        "base",
        &["pixmim"],
        vec!["target.on_device=true".into()],
    )?;
    let dev_batch = if device.is_cpu() { 8 } else { 64 };
    let ms = device_lowpass_ms(&on_device, device, dev_batch)?;
    report.set("lowpass_device_ms_per_image_224", json!(ms));
    report.row(
        format!(
            "lowpass 224, device path on {} (batch {dev_batch})",
            a.device
        ),
        format!("{ms:.2} ms/img"),
    );
    Ok(())
}

/// Training steps of every (preset, method, precision), each with and without PixMIM.
fn steps(
    a: &BenchArgs,
    device: &DeviceSpec,
    replicas: &[DeviceSpec],
    precisions: &[Precision],
    report: &mut Report,
) -> Result<()> {
    let presets: Vec<String> = if !a.presets.is_empty() {
        a.presets.clone()
    } else if a.tune {
        // The shapes users train, not the smoke preset's.
        vec!["base".into()]
    } else if device.is_cpu() {
        vec!["tiny".into()]
    } else {
        vec!["tiny".into(), "base".into()]
    };
    let peak = match device {
        DeviceSpec::Cuda(i) => card_peak(a, *i, 1 + replicas.len(), report),
        _ => None,
    };
    let opts = StepBenchOptions {
        device: *device,
        replicas: replicas.to_vec(),
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
    };
    let methods: Vec<String> = if a.methods.is_empty() {
        let registered = pixmim::registry::methods();
        registered.iter().map(|m| m.name().to_string()).collect()
    } else {
        a.methods.clone()
    };
    let mut all = Map::new();
    for preset in &presets {
        for method in &methods {
            for &precision in precisions {
                let per = step_pair(a, &opts, peak, method, preset, precision, report)?;
                if method == "mae" && preset == "tiny" && precision == precisions[0] {
                    report.set("tiny_mae_step_s", per["step_s"].clone());
                    report.set("pixmim_overhead_pct", per["pixmim_overhead_pct"].clone());
                }
                // f32 keeps the plain key (`mae/base`), other precisions add theirs.
                let key = match precision {
                    Precision::F32 => format!("{method}/{preset}"),
                    p => format!("{method}/{preset}/{p}"),
                };
                all.insert(key, Value::Object(per));
            }
        }
    }
    report.set("steps", Value::Object(all));
    Ok(())
}

/// One method's step with and without `--plugin pixmim`, and the plugin's overhead.
/// The first GPU's name and the peak the FLOP utilisation divides by (`--peak-tflops`, else
/// the card's data sheet), times the number of devices; `None` when neither is known.
fn card_peak(a: &BenchArgs, index: usize, devices: usize, report: &mut Report) -> Option<f64> {
    let card = pixmim::device::cuda_card_name(index);
    let peak = a
        .peak_tflops
        .or_else(|| card.as_deref().and_then(bench::dense_bf16_peak_tflops));
    let name = card.unwrap_or_else(|| format!("cuda:{index}"));
    report.set("card", json!(name));
    report.set("peak_tflops", json!(peak));
    let value = match peak {
        Some(p) => format!("dense bf16 peak {p:.0} TFLOP/s x {devices}"),
        None => "peak unknown: give --peak-tflops for the FLOP utilisation".into(),
    };
    report.row(format!("card {name}"), value);
    peak.map(|p| p * devices as f64)
}

/// `12.3 GiB in use after forward, 15.0 GiB reserved`, and the same as JSON keys.
fn memory_figures(m: DeviceMemory, sfx: &str, per: &mut Map<String, Value>) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    per.insert(format!("device_mem_in_use_gib{sfx}"), json!(gib(m.in_use)));
    per.insert(
        format!("device_mem_reserved_gib{sfx}"),
        json!(gib(m.reserved)),
    );
    format!(
        "  {:.1} GiB in use after forward, {:.1} GiB reserved",
        gib(m.in_use),
        gib(m.reserved)
    )
}

fn step_pair(
    a: &BenchArgs,
    opts: &StepBenchOptions,
    peak_tflops: Option<f64>,
    method: &str,
    preset: &str,
    precision: Precision,
    report: &mut Report,
) -> Result<Map<String, Value>> {
    let mut per = Map::new();
    for plugins in [&[][..], &["pixmim"][..]] {
        let mut sets = a.sets.clone();
        sets.push(format!("train.precision={precision}"));
        let c = composed(method, preset, plugins, sets)?;
        let t = time_steps(&c, opts)?;
        let sfx = suffix(plugins);
        let mut v = format!(
            "{:.3} s/step  {:.1} img/s",
            t.median_step_s(),
            t.images_per_second()
        );
        if !opts.device.is_cpu() && method == "mae" && preset == "base" {
            let tflops = MAE_BASE_GFLOP_PER_IMAGE * t.images_per_second() / 1e3;
            write!(v, "  {tflops:.1} TFLOP/s").ok();
            per.insert(format!("tflops{sfx}"), json!(tflops));
            if let Some(peak) = peak_tflops {
                let mfu = 100.0 * tflops / peak;
                write!(v, " = {mfu:.1}% MFU").ok();
                per.insert(format!("mfu_pct{sfx}"), json!(mfu));
            }
        }
        if let Some(m) = t.device_memory {
            v.push_str(&memory_figures(m, sfx, &mut per));
        }
        let plus = if plugins.is_empty() { "" } else { "+pixmim" };
        report.row(
            format!(
                "step {method}{plus} {preset} {precision} (batch {})",
                a.batch
            ),
            v,
        );
        per.insert(format!("step_s{sfx}"), json!(t.median_step_s()));
        per.insert(format!("img_s{sfx}"), json!(t.images_per_second()));
        per.insert(format!("target_s{sfx}"), json!(t.median_target_s()));
    }
    // The plugin leaves the model and its arithmetic untouched (same seed, same weights); in
    // the step it adds only the low-pass target. On a CPU the target is made on the host and
    // step-to-step noise on a shared CPU is several percent, so the overhead is that measured
    // target time over the plain step; on a GPU the target is made on the device, inside the
    // step, whose time is steady: there the overhead is the difference of the two medians
    // (reported beside it on a CPU).
    let f = |k: &str| per[k].as_f64().unwrap_or(f64::NAN);
    let base = f("step_s");
    let raw = 100.0 * (f("step_s_pixmim") - base) / base;
    let (pct, how) = if opts.device.is_cpu() {
        let pct = 100.0 * (f("target_s_pixmim") - f("target_s")) / base;
        (
            pct,
            format!("host target time; raw step difference {raw:+.1}%"),
        )
    } else {
        (raw, "step difference, target on the device".to_string())
    };
    report.row(
        format!("pixmim overhead {method} {preset} {precision}"),
        format!("{pct:+.2}% ({how})"),
    );
    per.insert("pixmim_overhead_pct".into(), json!(pct));
    per.insert("pixmim_step_difference_pct".into(), json!(raw));
    Ok(per)
}

fn suffix(plugins: &[&str]) -> &'static str {
    if plugins.is_empty() {
        ""
    } else {
        "_pixmim"
    }
}

fn device_lowpass_ms(c: &Composed, device: &DeviceSpec, batch: usize) -> Result<f64> {
    use burn::prelude::*;
    let dev = device.device()?;
    let path = c.parts.target.device_path().ok_or_else(|| {
        pixmim::Error::Usage("the low-pass timing needs a target with a device path".into())
    })?;
    let (h, w) = c.geometry.image;
    let x = Tensor::<pixmim::RunBackend, 4>::random(
        [batch, 3, h, w],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let mut times = Vec::new();
    for i in 0..4 {
        let t0 = std::time::Instant::now();
        let y = path.generate_on_device(x.clone());
        let _ = y.sum().into_scalar(); // wait for the device
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3 / batch as f64);
        }
    }
    Ok(bench::median(&times))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "machine".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The command as typed, quoted where a shell would need it, so that a saved result says
/// exactly how it was made.
fn command_line() -> String {
    shell_words::join(std::iter::once("pixmim".to_string()).chain(std::env::args().skip(1)))
}

fn save(path: &Path, obj: &Value, rows: &[Row], a: &BenchArgs) -> Result<()> {
    let mut md = String::new();
    writeln!(
        md,
        "# pixmim bench, {} on {}\n",
        obj["date"].as_str().unwrap_or(""),
        obj["machine"].as_str().unwrap_or("")
    )
    .ok();
    writeln!(
        md,
        "CPU: {} ({} cores). Device: {} (backends: {}). Command: `{}`.\n",
        obj["cpu"].as_str().unwrap_or(""),
        obj["cores"],
        a.device,
        obj["backends"],
        command_line()
    )
    .ok();
    writeln!(md, "| measurement | value |\n| --- | --- |").ok();
    for r in rows {
        writeln!(md, "| {} | {} |", r.what, r.value).ok();
    }
    writeln!(
        md,
        "\n```json\n{}\n```",
        serde_json::to_string_pretty(obj).unwrap_or_default()
    )
    .ok();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    pixmim::checkpoint::atomic_write(path, md.as_bytes())
}
