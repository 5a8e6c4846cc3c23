//! `pixmim bench`: data pipeline, low-pass target and training-step throughput, as a table,
//! as one JSON object (`--json`), and as `bench/results/<date>-<machine>.md` (`--save`).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use pixmim_core::bench;
use pixmim_core::device::DeviceSpec;
use pixmim_core::engine::{Job, JobOutput, StepBenchOptions, StepTiming};
use pixmim_core::nn::Precision;
use pixmim_core::registry::{self, Composed, Request};
use pixmim_core::{Error, Result};
use serde_json::{json, Map, Value};

#[derive(Args)]
pub struct BenchArgs {
    /// JPEGs for the pipeline benchmark (default: 48 ImageNet-sized 500x375 JPEGs made from
    /// the sample photos).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Device for the training steps and the device low-pass path.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Methods whose steps are timed.
    #[arg(long, value_delimiter = ',', default_value = "mae,convmae,mff,lsmae")]
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
    /// Seconds per pipeline measurement.
    #[arg(long, default_value_t = 3.0)]
    pipeline_secs: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write bench/results/<date>-<machine>.md.
    #[arg(long)]
    save: bool,
    /// Machine name for --save (default: the host name).
    #[arg(long)]
    machine: Option<String>,
}

/// MAE-B forward + backward FLOPs per 224 image at mask ratio 0.75 (spec §1.2).
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
    match c.method.run(Job::BenchStep(c, opts))? {
        JobOutput::StepTiming(t) => Ok(t),
        _ => unreachable!("BenchStep returns StepTiming"),
    }
}

struct Row {
    what: String,
    value: String,
}

pub fn run(a: &BenchArgs, samples: Option<PathBuf>) -> Result<()> {
    let device = DeviceSpec::parse(&a.device)?;
    device.device()?;
    if a.batch == 0 || a.steps == 0 {
        return Err(Error::Usage(
            "--batch and --steps must be at least 1".into(),
        ));
    }
    let precisions: Vec<Precision> = a
        .precision
        .iter()
        .map(|p| {
            Precision::parse(p)
                .map_err(|_| Error::Usage(format!("--precision `{p}`: expected f32 or bf16")))
        })
        .collect::<Result<_>>()?;
    for &p in &precisions {
        device.check_precision(p)?;
    }
    let presets: Vec<String> = if !a.presets.is_empty() {
        a.presets.clone()
    } else if device.is_cpu() {
        vec!["tiny".into()]
    } else {
        vec!["tiny".into(), "base".into()]
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut out = Map::new();
    let mut rows: Vec<Row> = Vec::new();
    // Each row goes to stderr as soon as it is measured (also with --json, whose object is
    // printed on stdout at the end), so a run cut short still shows what it measured.
    let mut row = |what: String, value: String| {
        eprintln!("{what:58} {value}");
        rows.push(Row { what, value });
    };

    // Data pipeline: decode + crop + flip + normalise at 224, RRC (MAE) and SRC (PixMIM).
    let scratch = std::env::temp_dir().join(format!("pixmim-bench-{}", std::process::id()));
    let files = match &a.data {
        Some(d) => pixmim_core::data::Dataset::open(d)?.items,
        None => {
            let samples = samples.ok_or_else(|| {
                Error::Usage("no --data given and data/samples was not found".into())
            })?;
            bench::imagenet_like_jpegs(&samples, &scratch.join("jpegs"), 48)?
        }
    };
    let mae224 = composed("mae", "base", &[], vec![])?;
    let pix224 = composed("mae", "base", &["pixmim"], vec![])?;
    for (key, c) in [("rrc", &mae224), ("src", &pix224)] {
        for (label, threads) in [("1core", 1), ("allcores", cores)] {
            let rate = bench::pipeline_images_per_second(
                &files,
                c.parts.augmentation.as_ref(),
                threads,
                a.pipeline_secs,
            )?;
            out.insert(format!("pipeline_{key}_img_s_{label}"), json!(rate));
            row(
                format!(
                    "pipeline {key} 224 ({threads} thread{})",
                    if threads > 1 { "s" } else { "" }
                ),
                format!("{rate:.0} img/s"),
            );
        }
    }

    // Low-pass target at 224: the host path on a batch of 64, and the device path.
    let lowpass = &pix224.parts.target;
    let ms = bench::target_ms_per_image(lowpass.as_ref(), (224, 224), 64, 5);
    out.insert("lowpass_ms_per_image_224".into(), json!(ms));
    row(
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
    let ms = device_lowpass_ms(&on_device, &device, dev_batch)?;
    out.insert("lowpass_device_ms_per_image_224".into(), json!(ms));
    row(
        format!(
            "lowpass 224, device path on {} (batch {dev_batch})",
            a.device
        ),
        format!("{ms:.2} ms/img"),
    );

    // Training steps.
    let opts = StepBenchOptions {
        device,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
    };
    let mut steps = Map::new();
    for preset in &presets {
        for method in &a.methods {
            for &precision in &precisions {
                let mut per = Map::new();
                for plugins in [&[][..], &["pixmim"][..]] {
                    let mut sets = a.sets.clone();
                    sets.push(format!("train.precision={precision}"));
                    let c = composed(method, preset, plugins, sets)?;
                    let t = time_steps(&c, &opts)?;
                    let name = format!(
                        "{method}{} {preset} {precision}",
                        if plugins.is_empty() { "" } else { "+pixmim" }
                    );
                    let mut v = format!(
                        "{:.3} s/step  {:.1} img/s",
                        t.median_step_s(),
                        t.images_per_second()
                    );
                    if !device.is_cpu() && method == "mae" && preset == "base" {
                        let tflops = MAE_BASE_GFLOP_PER_IMAGE * t.images_per_second() / 1e3;
                        write!(v, "  {tflops:.1} TFLOP/s").ok();
                        per.insert(format!("tflops{}", suffix(plugins)), json!(tflops));
                    }
                    row(format!("step {name} (batch {})", a.batch), v);
                    per.insert(
                        format!("step_s{}", suffix(plugins)),
                        json!(t.median_step_s()),
                    );
                    per.insert(
                        format!("img_s{}", suffix(plugins)),
                        json!(t.images_per_second()),
                    );
                    per.insert(
                        format!("target_s{}", suffix(plugins)),
                        json!(t.median_target_s()),
                    );
                }
                // The plugin leaves the model and its arithmetic untouched (same seed, same
                // weights); in the step it adds only the low-pass target. On a CPU the target is
                // made on the host and step-to-step noise on a shared CPU is several percent, so
                // the overhead is that measured target time over the plain step; on a GPU the
                // target is made on the device, inside the step, whose time is steady: there the
                // overhead is the difference of the two medians (reported beside it on a CPU).
                let f = |k: &str| per[k].as_f64().unwrap_or(f64::NAN);
                let base = f("step_s");
                let raw = 100.0 * (f("step_s_pixmim") - base) / base;
                let (pct, how) = if device.is_cpu() {
                    let pct = 100.0 * (f("target_s_pixmim") - f("target_s")) / base;
                    (
                        pct,
                        format!("host target time; raw step difference {raw:+.1}%"),
                    )
                } else {
                    (raw, "step difference, target on the device".to_string())
                };
                row(
                    format!("pixmim overhead {method} {preset} {precision}"),
                    format!("{pct:+.2}% ({how})"),
                );
                per.insert("pixmim_overhead_pct".into(), json!(pct));
                per.insert("pixmim_step_difference_pct".into(), json!(raw));
                if method == "mae" && preset == "tiny" && precision == precisions[0] {
                    out.insert("tiny_mae_step_s".into(), json!(base));
                    out.insert("pixmim_overhead_pct".into(), json!(pct));
                }
                // f32 keeps the plain key (`mae/base`), other precisions add theirs.
                let key = match precision {
                    Precision::F32 => format!("{method}/{preset}"),
                    p => format!("{method}/{preset}/{p}"),
                };
                steps.insert(key, Value::Object(per));
            }
        }
    }
    out.insert("steps".into(), Value::Object(steps));
    if let Some(b) = bench::peak_rss_bytes() {
        out.insert("peak_rss_mib".into(), json!(b as f64 / (1 << 20) as f64));
        row(
            "peak host memory".into(),
            format!("{:.0} MiB", b as f64 / (1 << 20) as f64),
        );
    }
    let machine = a.machine.clone().unwrap_or_else(host_name);
    let date = time::OffsetDateTime::now_utc().date().to_string();
    out.insert("machine".into(), json!(machine));
    out.insert("cpu".into(), json!(cpu_model()));
    out.insert("cores".into(), json!(cores));
    out.insert("device".into(), json!(a.device));
    out.insert("batch".into(), json!(a.batch));
    out.insert("date".into(), json!(date));
    let _ = std::fs::remove_dir_all(&scratch);

    let obj = Value::Object(out);
    if a.json {
        println!("{obj}");
    }
    if a.save {
        let path = PathBuf::from("bench/results").join(format!("{date}-{machine}.md"));
        save(&path, &obj, &rows, a)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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
    let (h, w) = c.geometry.image;
    let x = Tensor::<pixmim_core::RunBackend, 4>::random(
        [batch, 3, h, w],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let mut times = Vec::new();
    for i in 0..4 {
        let t0 = std::time::Instant::now();
        let y = c.parts.target.generate_on_device(x.clone());
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
        "CPU: {} ({} cores). Device: {}. Command: `pixmim bench --device {} --batch {} --steps {}`.\n",
        obj["cpu"].as_str().unwrap_or(""),
        obj["cores"],
        a.device,
        a.device,
        a.batch,
        a.steps
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
    pixmim_core::checkpoint::atomic_write(path, md.as_bytes())
}
