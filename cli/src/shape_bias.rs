//! `pixmim eval shape-bias`: a fine-tuned classifier's shape bias on cue-conflict images made
//! from a labelled set and its object masks ([`pixmim::eval::shape_bias`]).
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use pixmim::eval::classify::check_classifier_file;
use pixmim::eval::shape_bias::{shape_bias, ShapeBiasOptions};
use pixmim::object_mask::MaskSource;
use pixmim::{Error, Result};

use crate::eval::{eval_transform, labelled, ClassifierFlags};
use crate::Compose;

#[derive(Args, Clone)]
pub struct ShapeBiasArgs {
    /// `finetuned.safetensors` from `pixmim eval finetune`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    compose: Compose,
    /// Labelled images the cue-conflict set is made from (class sub-folders, or an IDX images
    /// file with its labels), e.g. the validation set.
    #[arg(long)]
    data: PathBuf,
    /// Each image's object: `alpha` (its alpha channel), `non_black` (images on a black
    /// background, such as Fashion-MNIST) or a folder of masks (same file stems).
    #[arg(long, default_value = "alpha")]
    masks: String,
    /// Use only the first N images (each is the shape of one cue-conflict image).
    #[arg(long)]
    limit: Option<usize>,
    /// Keep the cue-conflict images (and `pairs.csv`, their sources) in DIR.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Write the report (overall and per class) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    classifier: ClassifierFlags,
    /// Key of the texture partners' draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: &ShapeBiasArgs) -> Result<()> {
    check_classifier_file(&a.checkpoint)?;
    if a.limit == Some(0) {
        return Err(Error::Usage("--limit must be at least 1".into()));
    }
    let masks = MaskSource::parse(&a.masks);
    if let MaskSource::Folder(dir) = &masks {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--masks: {} is not `alpha`, `non_black` or a folder",
                dir.display()
            )));
        }
    }
    let c = crate::checkpoint_config(&a.checkpoint, &a.compose, vec![])?;
    let device = a.classifier.device()?;
    let data = labelled(&a.data, a.limit)?;
    let classes = data.dataset.classes.clone();
    let report = shape_bias(
        &c,
        &ShapeBiasOptions {
            checkpoint: a.checkpoint.clone(),
            device,
            data,
            masks,
            transform: eval_transform(&c, a.classifier.crop_pct)?,
            batch_size: a.classifier.batch.max(1),
            pool: a.classifier.pool,
            seed: a.seed,
            dump: a.dump.clone(),
        },
    )?;
    let d = &report.decisions;
    let pct = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.1}%", 100.0 * b));
    let mut table = String::from("| shape class | shape | texture | neither | shape bias |\n");
    table.push_str("|---|---|---|---|---|\n");
    for (k, c) in d.per_class.iter().enumerate() {
        let name = classes.get(k).cloned().unwrap_or_else(|| k.to_string());
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} |",
            c.shape,
            c.texture,
            c.neither,
            pct(c.bias())
        );
    }
    print!("{table}");
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&report).expect("plain data");
        pixmim::checkpoint::atomic_write(path, json.as_bytes())?;
    }
    if let Some(dir) = &a.dump {
        eprintln!("cue-conflict images in {}", dir.display());
    }
    println!(
        "shape_bias={}  shape={}  texture={}  neither={}  images={}  skipped={}",
        pct(d.bias()),
        d.shape,
        d.texture,
        d.neither,
        report.images,
        report.skipped
    );
    Ok(())
}
