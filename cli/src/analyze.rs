//! `pixmim analyze frequency | coverage`: the paper's two analyses on the user's data.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use pixmim::analyze::coverage::{coverage, view_masking, Foreground};
use pixmim::analyze::frequency::{band_edges, band_mse, psnr, to_unit_pixels};
use pixmim::analyze::plot::{line_plot, Series};
use pixmim::augment::CenterCrop;
use pixmim::data::dataset::{Dataset, Storage};
use pixmim::data::loader::{views, Source};
use pixmim::data::seed::{derive, Purpose};
use pixmim::device::DeviceSpec;
use pixmim::job::{ReconstructInput, ReconstructOptions, Reconstruction};
use pixmim::patchify::{patchify_host, unpatchify_host};
use pixmim::registry::{self, Geometry};
use pixmim::traits::Augmentation;
use pixmim::{Error, Result};

use crate::Compose;

#[derive(Subcommand)]
pub enum AnalyzeCommand {
    /// Reconstruction PSNR per radial frequency band (paper Figure 5); CSV and PNG plot.
    Frequency(FrequencyArgs),
    /// Object coverage J(F) and J(M o F) of a train transform (paper §3.2, Figure 3).
    Coverage(CoverageArgs),
}

#[derive(Args)]
pub struct FrequencyArgs {
    /// Checkpoint to analyse (repeat to compare several on one plot).
    #[arg(long = "checkpoint", required = true)]
    checkpoints: Vec<PathBuf>,
    /// A name per checkpoint for the legend (default: the run folder's name).
    #[arg(long = "label")]
    labels: Vec<String>,
    #[command(flatten)]
    compose: Compose,
    /// Images (folder, list file or IDX file); the first --images are used.
    #[arg(long)]
    data: PathBuf,
    /// Folder for frequency.csv and frequency.png.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    bands: usize,
    #[arg(long, default_value_t = 64)]
    images: usize,
    /// Seed of the random masks (the same masks for every checkpoint of one shape).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Eval transform's crop_pct (centre crop to the model's size).
    #[arg(long, default_value_t = 0.875)]
    crop_pct: f64,
    /// cpu (= flex), flex, ndarray, cuda, cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct CoverageArgs {
    /// Images (folder or list file).
    #[arg(long)]
    data: PathBuf,
    /// Folder of binary foreground masks named like the images (any image extension);
    /// without it, the images' alpha channel is the mask.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Registered augmentations (rrc, src, center_crop or cc, resize, ...); repeat or
    /// comma-separate for several.
    #[arg(long = "transform", value_delimiter = ',', default_value = "rrc,src")]
    transforms: Vec<String>,
    #[arg(long, default_value_t = 0.75)]
    mask_ratio: f64,
    /// Random views per image.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    #[arg(long, default_value_t = 224)]
    img_size: usize,
    #[arg(long, default_value_t = 16)]
    patch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-image CSV (transform, image, j_f, j_mof).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: &AnalyzeCommand) -> Result<()> {
    match cmd {
        AnalyzeCommand::Frequency(a) => frequency(a),
        AnalyzeCommand::Coverage(a) => coverage_cmd(a),
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    pixmim::checkpoint::atomic_write(path, text.as_bytes())
}

/// Mean band PSNR of one checkpoint over `images`.
fn band_psnr(a: &FrequencyArgs, checkpoint: &Path, source: &Arc<Source>) -> Result<Vec<f64>> {
    let c = crate::checkpoint_config(checkpoint, &a.compose, vec![])?;
    let transform = CenterCrop::eval(c.geometry.image, a.crop_pct)?;
    let (h, w) = c.geometry.image;
    let n = source.dataset.len().min(a.images);
    let mut sums = vec![0f64; a.bands];
    let inputs = (0..n).step_by(32).map(|start| {
        let items: Vec<(usize, usize)> = (start..(start + 32).min(n)).map(|i| (i, i)).collect();
        Ok(ReconstructInput {
            image: views(source, &transform, 0, &items)?,
            noise: None,
            // Masks keyed by seed and chunk, so each image's mask is the same for every
            // checkpoint and no two (seed, chunk) pairs share one.
            seed: derive(a.seed, Purpose::Mask, start as u64),
        })
    });
    let each = |input: ReconstructInput, rec: Reconstruction| {
        let batch = &input.image;
        for b in 0..batch.batch {
            let image = batch.image(b);
            let pasted = rec.pasted(b, &patchify_host(image, 3, h, w, rec.patch));
            let recon = unpatchify_host(&pasted, rec.patch, rec.grid);
            let mse = band_mse(
                &to_unit_pixels(image, h, w),
                &to_unit_pixels(&recon, h, w),
                h,
                w,
                a.bands,
            );
            for (s, m) in sums.iter_mut().zip(mse) {
                *s += psnr(m);
            }
        }
        Ok(())
    };
    // One model load per checkpoint; the chunks are decoded as their turn comes.
    c.reconstruct(ReconstructOptions {
        checkpoint: checkpoint.to_path_buf(),
        device: DeviceSpec::parse(&a.device)?,
        inputs: Box::new(inputs),
        each: Box::new(each),
    })?;
    Ok(sums.iter().map(|s| s / n as f64).collect())
}

fn frequency(a: &FrequencyArgs) -> Result<()> {
    if a.bands == 0 || a.images == 0 {
        return Err(Error::Usage(
            "--bands and --images must be at least 1".into(),
        ));
    }
    if !a.labels.is_empty() && a.labels.len() != a.checkpoints.len() {
        return Err(Error::Usage(format!(
            "{} --label for {} --checkpoint: give one per checkpoint or none",
            a.labels.len(),
            a.checkpoints.len()
        )));
    }
    DeviceSpec::parse(&a.device)?.device()?;
    let source = Arc::new(Source::strict(Dataset::open(&a.data)?));
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let edges = band_edges(a.bands);
    let mut columns = Vec::new();
    for (i, ck) in a.checkpoints.iter().enumerate() {
        let label = a.labels.get(i).cloned().unwrap_or_else(|| run_name(ck));
        columns.push((label, band_psnr(a, ck, &source)?));
    }
    let mut csv = String::from("band,f_low,f_high");
    for (l, _) in &columns {
        write!(csv, ",{l}").unwrap();
    }
    csv.push('\n');
    let mut table = format!("{:>4} {:>13}", "band", "cycles/px");
    for (l, _) in &columns {
        write!(table, " {l:>14}").unwrap();
    }
    table.push('\n');
    for b in 0..a.bands {
        write!(csv, "{b},{:.5},{:.5}", edges[b], edges[b + 1]).unwrap();
        write!(table, "{b:>4} {:>6.3}-{:<6.3}", edges[b], edges[b + 1]).unwrap();
        for (_, v) in &columns {
            write!(csv, ",{:.4}", v[b]).unwrap();
            write!(table, " {:>11.2} dB", v[b]).unwrap();
        }
        csv.push('\n');
        table.push('\n');
    }
    write_text(&a.out.join("frequency.csv"), &csv)?;
    let series: Vec<Series> = columns
        .iter()
        .map(|(l, v)| Series {
            label: l.clone(),
            points: v
                .iter()
                .enumerate()
                .map(|(b, &p)| ((edges[b] + edges[b + 1]) / 2.0, p))
                .collect(),
        })
        .collect();
    let png = a.out.join("frequency.png");
    line_plot(
        &png,
        "Reconstruction PSNR per frequency band",
        "radial frequency (cycles/pixel)",
        "PSNR (dB)",
        &series,
    )?;
    print!("{table}");
    eprintln!(
        "wrote {} and {}",
        a.out.join("frequency.csv").display(),
        png.display()
    );
    Ok(())
}

/// `runs/mae-123/checkpoints/step-00000100.safetensors` -> `mae-123`.
fn run_name(ck: &Path) -> String {
    let parent = ck.parent();
    let dir = match parent.and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
        Some("checkpoints") => parent.and_then(|p| p.parent()),
        _ => parent,
    };
    dir.and_then(|d| d.file_name())
        .or(ck.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| ck.display().to_string())
}

fn coverage_cmd(a: &CoverageArgs) -> Result<()> {
    if a.samples == 0 {
        return Err(Error::Usage("--samples must be at least 1".into()));
    }
    let ds = Dataset::open(&a.data)?;
    if !matches!(ds.storage, Storage::Files) {
        return Err(Error::data(
            &a.data,
            "coverage needs image files with masks, not IDX or shards",
        ));
    }
    // Foregrounds once; images without any foreground cannot be scored and are skipped.
    let mut fgs = Vec::new();
    let mut empty = 0;
    for img in &ds.items {
        let fg = Foreground::for_image(img, a.masks.as_deref())?;
        if fg.area() == 0 {
            empty += 1;
        } else {
            fgs.push((img.clone(), fg));
        }
    }
    if fgs.is_empty() {
        return Err(Error::data(&a.data, "no image has any foreground pixel"));
    }
    if empty > 0 {
        eprintln!("note: {empty} image(s) with an empty mask skipped");
    }
    let geometry = Geometry {
        image: (a.img_size, a.img_size),
        mask_grid: (
            a.img_size / a.patch_size.max(1),
            a.img_size / a.patch_size.max(1),
        ),
    };
    geometry.check_size()?;
    let mut csv = String::from("transform,image,j_f,j_mof\n");
    let mut lines = Vec::new();
    for t in &a.transforms {
        // Any registered augmentation, with its default parameters; `cc` is short for
        // `center_crop`.
        let name = if t == "cc" { "center_crop" } else { t.as_str() };
        let known = registry::component_names::<dyn Augmentation>();
        if !known.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            return Err(Error::Usage(format!(
                "--transform: unknown augmentation `{t}`; known: {} (or cc)",
                names.join(", ")
            )));
        }
        let aug = registry::build_augmentation(name, &toml::Table::new(), &geometry)?;
        let masking = view_masking(aug.as_ref(), a.patch_size, a.mask_ratio)?;
        let (mut jf, mut jmf) = (0.0, 0.0);
        for (k, (path, fg)) in fgs.iter().enumerate() {
            let (f, mf) = coverage(
                fg,
                aug.as_ref(),
                &masking,
                a.patch_size,
                a.samples,
                a.seed,
                k as u64,
            )?;
            jf += f;
            jmf += mf;
            writeln!(csv, "{t},{},{f:.6},{mf:.6}", path.display()).unwrap();
        }
        let n = fgs.len() as f64;
        lines.push(format!(
            "{t}  J(F)={:.1}%  J(MoF)={:.1}%",
            100.0 * jf / n,
            100.0 * jmf / n
        ));
    }
    if let Some(out) = &a.out {
        write_text(out, &csv)?;
        eprintln!("wrote {}", out.display());
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
