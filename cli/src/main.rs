//! `pixmim`: list, inspect and train masked-image-modeling methods.
mod analyze;
mod bench;
mod eval;
mod interop;
mod reconstruct;
mod robustness;
mod shape_bias;
mod shards;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use pixmim::device::DeviceSpec;
use pixmim::distributed::ProcessGroup;
use pixmim::engine::default_out_dir;
use pixmim::job::TrainOptions;
use pixmim::registry::{self, Composed, Request};
use pixmim::{Error, Result};

/// Tensors of a training step are freed and reallocated every op; glibc malloc unmapped those
/// pages and the kernel zeroed them again on the next op. mimalloc, told never to give freed
/// memory back ([`keep_freed_memory`]), reuses them: the process keeps its peak, as PyTorch's
/// caching allocator does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the bundled mimalloc's `mi_option_e` (v3 `mimalloc.h`); the
/// crate names no constant for it. A test checks the index by its default (1000 ms in the bundled `options.c`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never purge freed memory back to the OS (a CPU step re-faults its multi-MB tensors
/// otherwise; docs/performance.md, "CPU backends"), unless `MIMALLOC_PURGE_DELAY` says otherwise.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[derive(Parser)]
#[command(
    name = "pixmim",
    version,
    about = "Masked-image-modeling pretraining (MAE family, PixMIM plugins)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registered methods and plugins, one a line.
    List,
    /// The resolved config as TOML, then parameter counts and a training step's memory.
    Info(InfoArgs),
    /// Pretrain.
    Train(TrainArgs),
    /// Apply a target generator to one image, outside training.
    Target(TargetArgs),
    /// Write a grid: original | augmented view | visible patches | reconstruction target.
    Preview(PreviewArgs),
    /// Convert a released checkpoint (official, mmselfsup, mmpretrain, timm) to pixmim's.
    Import(interop::ImportArgs),
    /// Write a pixmim checkpoint in another codebase's layout (official, mm*, timm, detectron2, mmseg).
    Export(interop::ExportArgs),
    /// One image through trained weights: masked input, reconstruction, loss.
    Reconstruct(reconstruct::ReconstructArgs),
    /// Measure the data pipeline, the low-pass target and training steps.
    Bench(bench::BenchArgs),
    /// Evaluate a pretrained encoder: kNN, linear probe, fine-tuning.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// The paper's analyses: frequency PSNR of reconstructions, object coverage.
    #[command(subcommand)]
    Analyze(analyze::AnalyzeCommand),
    /// Training curves of run folders: one PNG per metric (default: loss and lr), one line
    /// per run.
    Plot(PlotArgs),
    /// Pretrain and evaluate every (variant, seed) of an experiment file; one table of
    /// means, standard deviations and differences to the baseline with 95% intervals.
    Sweep(sweep::SweepArgs),
    /// Pack a dataset into tar shards (WebDataset layout: KEY.jpg + KEY.cls members).
    Shards(shards::ShardsArgs),
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    compose: Compose,
    /// The device(s) to estimate a training step's memory for (as `train --device`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct PlotArgs {
    /// Run folders (their `metrics.jsonl`); several are drawn on one chart per metric.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// A logged metric (repeatable): loss, lr, img_s, grad_norm, target_radius, weight_0, ...
    #[arg(long = "metric")]
    metrics: Vec<String>,
    /// Folder for the PNGs (default: the first run's `plots/`).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct TargetArgs {
    /// Registered target generator (see `pixmim list`), e.g. `lowpass`.
    #[arg(long)]
    generator: String,
    /// Low-pass radius (default: 40 at 224, scaled with the image); `--set radius=R`.
    #[arg(long)]
    radius: Option<f64>,
    /// Any key of the generator's (`--set radius_min=10`), as under `[target]` in a run
    /// config; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// `.npy` float32 (3, H, W), ImageNet-normalised; or an image file (normalised first).
    #[arg(long)]
    input: PathBuf,
    /// `.npy` (same layout, float32) or an image file (de-normalised for viewing).
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct PreviewArgs {
    #[command(flatten)]
    compose: Compose,
    /// Image folder or list file (default: the sample images).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Number of images (rows).
    #[arg(long, default_value_t = 4)]
    count: usize,
}

#[derive(Args, Clone)]
struct Compose {
    /// Method name (see `pixmim list`).
    #[arg(long)]
    method: Option<String>,
    /// Plugin to compose with the method (repeatable).
    #[arg(long = "plugin")]
    plugins: Vec<String>,
    /// Named preset of the method (default: its first, e.g. `base`).
    #[arg(long)]
    preset: Option<String>,
    /// TOML file merged over the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set train.batch_size=32` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    compose: Compose,
    /// Image folder or list file (default: the sample images shipped in the repo).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder (default: a fresh `runs/<method>-<time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu (a flex replica per core that splits the batch), flex (one), ndarray, cuda, cuda:N;
    /// several, comma-separated (`cuda:0,cuda:1`), train data-parallel with the batch split
    /// over them. Default: cpu, or with --resume the run's own list (`train.devices`).
    #[arg(long)]
    device: Option<String>,
    /// Train for this many iterations.
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Train for this many epochs of the dataset.
    #[arg(long)]
    epochs: Option<f64>,
    /// Continue from the newest checkpoint in --out (its config.toml is reused).
    #[arg(long)]
    resume: bool,
    /// Folder of GPU autotune results to read and extend (a build with the `autotune`
    /// feature; default: ./bench/gpu/cache, the repo's, when it exists).
    #[arg(long, value_name = "DIR")]
    autotune_cache: Option<PathBuf>,
}

/// The sample images: next to the binary's source tree, or in the current folder.
fn sample_data() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/samples"),
        PathBuf::from("data/samples"),
    ];
    candidates.into_iter().find(|p| p.is_dir())
}

/// The autotune cache the repo ships, as seen from its root (the README's commands run there).
const SHIPPED_AUTOTUNE_CACHE: &str = "bench/gpu/cache";

/// Point a GPU run at its autotune cache before any device is made: `--autotune-cache`, else,
/// in a build with the `autotune` feature, the repo's when it exists (or always, `create`, for
/// `bench --tune`, which fills it). Otherwise cubecl's default (`target/autotune`).
fn use_autotune_cache(given: Option<&Path>, create: bool) -> Result<Option<PathBuf>> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => {
            let shipped = PathBuf::from(SHIPPED_AUTOTUNE_CACHE);
            if !pixmim::gpu_runtime::AUTOTUNE || !(create || shipped.is_dir()) {
                return Ok(None);
            }
            shipped
        }
    };
    pixmim::gpu_runtime::use_autotune_cache(&dir)?;
    Ok(pixmim::gpu_runtime::autotune_cache().map(Path::to_path_buf))
}

fn compose(c: &Compose, extra_sets: Vec<String>) -> Result<Composed> {
    let mut sets = c.sets.clone();
    sets.extend(extra_sets);
    registry::compose(&Request {
        method: c.method.clone().unwrap_or_default(),
        preset: c.preset.clone(),
        plugins: c.plugins.clone(),
        config_file: c.config.clone(),
        sets,
    })
}

/// The run config of a checkpoint: its own (pixmim checkpoints carry it) unless --method
/// says otherwise; `--set`s and `extra_sets` on top.
fn checkpoint_config(
    checkpoint: &std::path::Path,
    c: &Compose,
    extra_sets: Vec<String>,
) -> Result<Composed> {
    let mut sets = c.sets.clone();
    sets.extend(extra_sets);
    let (_, meta) = pixmim::checkpoint::read_safetensors(checkpoint)?;
    match (&c.method, meta.get("config")) {
        (None, Some(text)) => {
            let table: toml::Table = text.parse().map_err(|e| Error::Checkpoint {
                path: checkpoint.to_path_buf(),
                msg: format!("its stored config is not valid TOML: {e}"),
            })?;
            registry::compose_from_table(table, &sets)
        }
        (None, None) => Err(Error::Usage(format!(
            "{} carries no pixmim config: pass --method (and --preset / --set for its shape)",
            checkpoint.display()
        ))),
        (Some(_), _) => compose(&Compose { sets, ..c.clone() }, vec![]),
    }
}

fn plot(a: &PlotArgs) -> Result<()> {
    let runs: Vec<(String, PathBuf)> = a
        .runs
        .iter()
        .map(|r| (r.display().to_string(), r.clone()))
        .collect();
    let metrics = if a.metrics.is_empty() {
        vec!["loss".to_string(), "lr".to_string()]
    } else {
        a.metrics.clone()
    };
    let out = a.out.clone().unwrap_or_else(|| a.runs[0].join("plots"));
    for f in pixmim::analyze::curves::plot_runs(&runs, &metrics, &out)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn list() {
    for m in registry::methods() {
        let presets = registry::preset_names(m).join(", ");
        println!(
            "{}  [method] {} (presets: {presets})",
            m.name(),
            m.description()
        );
    }
    for p in registry::plugins() {
        println!("{}  [plugin] {}", p.name(), p.description());
    }
    use pixmim::traits::{Augmentation, Corruption, TargetGenerator};
    for (kind, items) in [
        ("target", registry::component_names::<dyn TargetGenerator>()),
        (
            "augmentation",
            registry::component_names::<dyn Augmentation>(),
        ),
        ("masking", registry::component_names::<dyn Corruption>()),
    ] {
        for (name, description) in items {
            println!("{name}  [{kind}] {description}");
        }
    }
}

fn is_npy(p: &std::path::Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("npy")
}

fn target(a: &TargetArgs) -> Result<()> {
    use pixmim::traits::ImageBatch;
    let (h, w, data) = if is_npy(&a.input) {
        let (shape, v) = pixmim::npy::read(&a.input)?;
        match shape[..] {
            [3, h, w] => (h, w, v),
            _ => {
                return Err(Error::data(
                    &a.input,
                    format!("expected shape (3, H, W), got {shape:?}"),
                ))
            }
        }
    } else {
        let img = pixmim::data::decode::decode(&a.input)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        (h, w, pixmim::augment::normalise_image(&img))
    };
    let mut params = toml::Table::new();
    if let Some(r) = a.radius {
        params.insert("radius".into(), r.into());
    }
    for s in &a.sets {
        pixmim::config::set_dotted(&mut params, s)?;
    }
    let geometry = registry::Geometry {
        image: (h, w),
        mask_grid: (1, 1),
    };
    let generator = registry::build_target(&a.generator, &params, &geometry)?;
    let batch = ImageBatch {
        batch: 1,
        channels: 3,
        height: h,
        width: w,
        data,
    };
    let out = generator.generate(&batch).unwrap_or(batch);
    if is_npy(&a.output) {
        pixmim::npy::write(&a.output, &[3, h, w], &out.data)?;
    } else {
        pixmim::augment::to_rgb_image(&out.data, h, w)
            .save(&a.output)
            .map_err(|e| Error::data(&a.output, format!("cannot write: {e}")))?;
    }
    eprintln!(
        "{}: {} -> {}",
        generator.describe(),
        a.input.display(),
        a.output.display()
    );
    Ok(())
}

fn preview(a: &PreviewArgs) -> Result<()> {
    let composed = compose(&a.compose, vec![])?;
    let data = a
        .data
        .clone()
        .or_else(|| composed.data.path.clone())
        .or_else(sample_data)
        .ok_or_else(|| {
            Error::Usage(
                "no --data given and the sample images (data/samples) were not found".into(),
            )
        })?;
    pixmim::preview::preview(&composed, &data, a.count, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn info(a: &InfoArgs) -> Result<()> {
    let composed = compose(&a.compose, vec![])?;
    let devices =
        DeviceSpec::parse_list(&DeviceSpec::resolve(&a.device, composed.train.batch_size))?;
    print!("{}", toml::to_string(&composed.table).unwrap_or_default());
    println!();
    println!("# augmentation: {}", composed.parts.augmentation.describe());
    println!("# masking: {}", composed.parts.masking.describe());
    println!("# target: {}", composed.parts.target.describe());
    let (trainable, frozen) = composed.count_params()?;
    println!("trainable parameters: {trainable}");
    println!("frozen parameters: {frozen}");
    print_memory(&composed, &a.device, &devices, (trainable, frozen))?;
    Ok(())
}

/// The memory pre-flight's figures, as `train` will compare them.
fn print_memory(
    c: &Composed,
    given: &str,
    devices: &[DeviceSpec],
    counts: (usize, usize),
) -> Result<()> {
    use pixmim::memory::gib;
    let specs: Vec<&DeviceSpec> = devices.iter().collect();
    let plan = pixmim::engine::memory_plan(c, &specs, counts, 1)?;
    let on = DeviceSpec::describe(given, devices);
    let activations = match plan.step.activation_floats_per_image {
        Some(_) => gib(plan.step.per_image_bytes()),
        None => "not estimated by this method".into(),
    };
    println!(
        "training step memory on {on} at batch {}: about {} ({} model state per replica, {activations} activations per image)",
        plan.batch,
        gib(plan.bytes()),
        gib(plan.step.model_bytes()),
    );
    match pixmim::engine::available_memory(&specs)? {
        Some((available, what)) => {
            let fits = if plan.bytes() <= available as f64 {
                "fits"
            } else {
                "does not fit"
            };
            println!("available on {what}: {} ({fits})", gib(available as f64));
        }
        None => println!("available: unknown (no driver to ask)"),
    }
    Ok(())
}

fn quote(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// The processes this one trains with, when a launcher (`mpirun`, `srun`) started it: MPI is
/// initialised only then, so a plain start never touches it.
fn process_group() -> Result<Option<Arc<dyn ProcessGroup>>> {
    let Some(launcher) = pixmim::distributed::launcher() else {
        return Ok(None);
    };
    #[cfg(feature = "mpi")]
    {
        let _ = launcher;
        let group = pixmim::distributed::mpi::MpiGroup::init()?;
        Ok(Some(Arc::new(group)))
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::Usage(format!(
        "started by {launcher}, but this pixmim was built without MPI (the `mpi` feature); \
         rebuild with it (README \"Several machines\") or start pixmim without the launcher"
    )))
}

/// Refuse a command that does not run across processes when several were started: each
/// would do the same work and write the same files.
fn single_process(group: Option<&dyn ProcessGroup>, command: &str) -> Result<()> {
    match group {
        Some(g) if g.world() > 1 => Err(Error::Usage(format!(
            "`pixmim {command}` runs in one process, but {} were started (by mpirun or srun): \
             only `train` and `bench --only allreduce` run across processes",
            g.world()
        ))),
        _ => Ok(()),
    }
}

fn train(a: &TrainArgs, group: Option<Arc<dyn ProcessGroup>>) -> Result<()> {
    use_autotune_cache(a.autotune_cache.as_deref(), false)?;
    if let Some(given) = &a.device {
        for d in DeviceSpec::parse_list(given)? {
            d.device()?; // fail on a missing CUDA driver before any work
        }
    }
    let mut composed = if a.resume {
        let out = a
            .out
            .as_ref()
            .ok_or_else(|| Error::Usage("--resume needs --out DIR (the run to continue)".into()))?;
        let cfg = out.join("config.toml");
        if !cfg.exists() {
            return Err(Error::Usage(format!(
                "--resume: {} has no config.toml; is it a pixmim run folder?",
                out.display()
            )));
        }
        registry::compose_from_file(&cfg, &a.compose.sets)?
    } else {
        let data = a
            .data
            .iter()
            .map(|d| format!("data.path={}", quote(d)))
            .collect();
        let mut composed = compose(&a.compose, data)?;
        if composed.data.path.is_none() {
            let samples = sample_data().ok_or_else(|| {
                Error::Usage(
                    "no --data given and the sample images (data/samples) were not found".into(),
                )
            })?;
            composed = compose(&a.compose, vec![format!("data.path={}", quote(&samples))])?;
        }
        composed
    };
    composed.set_run_length(a.steps, a.epochs)?;
    // `--device`, else the list the run being resumed recorded, else `cpu`; resolved (a replica
    // per core for `cpu`) and recorded in config.toml, then made this process's own.
    let world = group.as_ref().map_or(1, |g| g.world());
    let given = a
        .device
        .clone()
        .or_else(|| composed.train.devices.clone())
        .unwrap_or_else(|| "cpu".into());
    let resolved = DeviceSpec::resolve(&given, composed.train.batch_size / world);
    composed.set_devices(&resolved)?;
    let mine = match world {
        1 => resolved,
        _ => pixmim::distributed::per_process_device(&resolved),
    };
    let mut devices = DeviceSpec::parse_list(&mine)?;
    for d in &devices {
        d.device()?;
    }
    let on = DeviceSpec::describe(&given, &devices);
    let device = devices.remove(0);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(composed.method.name()));
    let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
    let across = group
        .as_ref()
        .filter(|g| g.world() > 1)
        .map(|g| format!(" x {} processes ({})", g.world(), g.describe()))
        .unwrap_or_default();
    let opts = TrainOptions {
        out: out.clone(),
        device,
        replicas: devices,
        resume: a.resume,
        progress: lead,
        stop_after: None,
        group,
    };
    if lead {
        eprintln!(
            "training {} ({}) on {}{across} -> {}",
            composed.method.name(),
            composed
                .table
                .get("preset")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            on,
            out.display()
        );
        if let (Some(dir), false) = (pixmim::gpu_runtime::autotune_cache(), opts.device.is_cpu()) {
            eprintln!("autotune cache: {}", dir.display());
        }
    }
    let s = composed.train(&opts)?;
    if !lead {
        return Ok(());
    }
    let n = s.losses.len();
    let k = (n / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    // Peak resident memory: what the memory pre-flight estimates on a CPU.
    let peak = pixmim::bench::peak_rss_bytes()
        .map(|b| format!("  peak memory {}", pixmim::memory::gib(b as f64)))
        .unwrap_or_default();
    println!(
        "done: steps {}..{}  loss {:.4} -> {:.4} (mean of first/last {k})  {:.1} img/s{peak}  -> {}",
        s.start_iteration,
        s.total_iterations,
        mean(&s.losses[..k.min(n)]),
        mean(&s.losses[n.saturating_sub(k)..]),
        s.images_per_second,
        s.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let group = match process_group() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let distributed = matches!(cli.command, Command::Train(_) | Command::Bench(_));
    let result = match distributed {
        true => Ok(()),
        false => single_process(group.as_deref(), command_name(&cli.command)),
    };
    let result = result.and_then(|()| match &cli.command {
        Command::List => {
            list();
            Ok(())
        }
        Command::Info(c) => info(c),
        Command::Train(a) => train(a, group.clone()),
        Command::Target(a) => target(a),
        Command::Preview(a) => preview(a),
        Command::Bench(a) => bench::run(a, sample_data(), group.clone()),
        Command::Reconstruct(a) => reconstruct::run(a),
        Command::Import(a) => interop::import(a),
        Command::Export(a) => interop::export(a),
        Command::Eval(e) => eval::run(e),
        Command::Analyze(a) => analyze::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Shards(a) => shards::run(a),
        Command::Plot(a) => plot(a),
    });
    match (result, group) {
        (Ok(()), _) => ExitCode::SUCCESS,
        (Err(e), Some(g)) if g.world() > 1 => pixmim::distributed::stop(g.as_ref(), &e),
        (Err(e), _) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::List => "list",
        Command::Info(_) => "info",
        Command::Train(_) => "train",
        Command::Target(_) => "target",
        Command::Preview(_) => "preview",
        Command::Import(_) => "import",
        Command::Export(_) => "export",
        Command::Reconstruct(_) => "reconstruct",
        Command::Bench(_) => "bench",
        Command::Eval(_) => "eval",
        Command::Analyze(_) => "analyze",
        Command::Sweep(_) => "sweep",
        Command::Shards(_) => "shards",
        Command::Plot(_) => "plot",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_mimallocs_purge_delay() {
        // Its default is 1000 ms (v3 options.c); the neighbouring options default to 0 or 1.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option; the test sets none.
            let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(v, 1000, "option {MI_OPTION_PURGE_DELAY} is not purge_delay");
        }
    }
}
