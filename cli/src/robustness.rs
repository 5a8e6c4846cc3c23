//! `pixmim eval robustness`: a fine-tuned classifier's top-1 under ImageNet-C's common
//! corruptions, per corruption and severity, with corruption errors against `--baseline`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use pixmim::eval::classify::check_classifier_file;
use pixmim::eval::robustness::corruption_errors;
use pixmim::job::{RobustnessOptions, RobustnessReport};
use pixmim::robustness::{corruption_grid, parse_list};
use pixmim::{Error, Result};

use crate::eval::{eval_transform, labelled, ClassifierFlags};
use crate::Compose;

#[derive(Args, Clone)]
pub struct RobustnessArgs {
    /// `finetuned.safetensors` from `pixmim eval finetune`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    compose: Compose,
    /// Labelled validation images: class sub-folders, or an IDX images file with its labels.
    #[arg(long)]
    val_data: PathBuf,
    /// Comma-separated ImageNet-C names, or `all` (the 12 pixmim implements).
    #[arg(long, default_value = "all")]
    corruptions: String,
    /// Severities: `1-5`, `3`, or a list such as `1,3,5`.
    #[arg(long, default_value = "1-5")]
    severities: String,
    /// Another fine-tuned classifier: report each corruption's error relative to it (CE) and
    /// their mean (mCE), as ImageNet-C does against AlexNet.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write a grid (a row per corruption, the clean image then each severity) of the first
    /// few validation images to DIR/corruptions-N.png.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Write every (corruption, severity, top-1) to this CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Use only the first N validation images.
    #[arg(long)]
    val_limit: Option<usize>,
    #[command(flatten)]
    classifier: ClassifierFlags,
    /// Key of the corruptions' random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `1-5`, `3`, `1,3,5`: each in 1..=5.
fn parse_severities(s: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::Usage(format!(
            "--severities: `{s}` is not a range (1-5), a severity or a list of them, within 1-5"
        ))
    };
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|v| (1..=5).contains(v))
    };
    let out: Vec<usize> = if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?);
        if a > b {
            return Err(bad());
        }
        (a..=b).collect()
    } else {
        s.split(',')
            .map(|t| num(t).ok_or_else(bad))
            .collect::<Result<_>>()?
    };
    Ok(out)
}

fn report(a: &RobustnessArgs, checkpoint: &Path) -> Result<RobustnessReport> {
    let c = crate::checkpoint_config(checkpoint, &a.compose, vec![])?;
    let device = a.classifier.device()?;
    let opts = RobustnessOptions {
        checkpoint: checkpoint.to_path_buf(),
        device,
        val: labelled(&a.val_data, a.val_limit)?,
        transform: eval_transform(&c, a.classifier.crop_pct)?,
        corruptions: parse_list(&a.corruptions, "--corruptions")?,
        severities: parse_severities(&a.severities)?,
        batch_size: a.classifier.batch.max(1),
        pool: a.classifier.pool,
        seed: a.seed,
    };
    if let Some(dir) = &a.dump {
        dump(&opts, dir)?;
    }
    pixmim::eval::robustness::robustness(&c, &opts)
}

/// The corrupted views of the first three validation images, as the model sees them.
fn dump(opts: &RobustnessOptions, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (h, w) = opts.transform.output_size();
    for i in 0..opts.val.dataset.len().min(3) {
        let mut view = vec![0.0; 3 * h * w];
        let mut rng =
            pixmim::data::seed::rng(opts.seed, pixmim::data::seed::Purpose::Augment, i as u64);
        opts.transform
            .apply(&opts.val.load(i)?, &mut rng, &mut view);
        let clean = pixmim::augment::to_rgb_image(&view, h, w);
        let grid = corruption_grid(&clean, &opts.corruptions, &opts.severities, opts.seed)?;
        let path = dir.join(format!("corruptions-{i}.png"));
        grid.save(&path)
            .map_err(|e| Error::data(&path, format!("cannot write the image: {e}")))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run(a: &RobustnessArgs) -> Result<()> {
    // Every argument is checked before the first (slow) evaluation.
    parse_list(&a.corruptions, "--corruptions")?;
    parse_severities(&a.severities)?;
    for path in std::iter::once(&a.checkpoint).chain(&a.baseline) {
        check_classifier_file(path)?;
    }
    let r = report(a, &a.checkpoint)?;
    let base = a
        .baseline
        .as_ref()
        .map(|b| {
            report(
                &RobustnessArgs {
                    dump: None,
                    ..a.clone()
                },
                b,
            )
        })
        .transpose()?;
    let mut table = String::from("| corruption | ");
    let severities = parse_severities(&a.severities)?;
    for s in &severities {
        let _ = write!(table, "{s} | ");
    }
    table.push_str("mean |");
    if base.is_some() {
        table.push_str(" CE | rel. CE |");
    }
    table.push('\n');
    table.push_str(&"|---".repeat(severities.len() + 2 + 2 * base.is_some() as usize));
    table.push_str("|\n");
    let ces = base
        .as_ref()
        .map(|b| corruption_errors(&r, b))
        .unwrap_or_default();
    let mut names: Vec<&String> = r.top1.iter().map(|(c, _, _)| c).collect();
    names.dedup();
    let mut means = Vec::new();
    for name in names {
        let accs: Vec<f64> = r
            .top1
            .iter()
            .filter(|(c, _, _)| c == name)
            .map(|t| t.2)
            .collect();
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        means.push(mean);
        let _ = write!(table, "| {name} | ");
        for acc in &accs {
            let _ = write!(table, "{:.2} | ", 100.0 * acc);
        }
        let _ = write!(table, "{:.2} |", 100.0 * mean);
        if let Some((_, ce, rel)) = ces.iter().find(|(c, _, _)| c == name) {
            let rel = rel.map_or("-".into(), |r| format!("{:.1}", 100.0 * r));
            let _ = write!(table, " {:.1} | {rel} |", 100.0 * ce);
        } else if base.is_some() {
            table.push_str(" - | - |");
        }
        table.push('\n');
    }
    eprint!("{table}");
    if let Some(path) = &a.csv {
        let mut csv = String::from("corruption,severity,top1\nclean,0,");
        let _ = writeln!(csv, "{}", r.clean_top1);
        for (c, s, acc) in &r.top1 {
            let _ = writeln!(csv, "{c},{s},{acc}");
        }
        pixmim::checkpoint::atomic_write(path, csv.as_bytes())?;
    }
    let mean = means.iter().sum::<f64>() / means.len().max(1) as f64;
    let mut last = format!(
        "clean={:.2}%  corrupted={:.2}%",
        100.0 * r.clean_top1,
        100.0 * mean
    );
    if base.is_some() && ces.is_empty() {
        last.push_str("  mCE=n/a (the baseline makes no errors under these corruptions)");
    } else if !ces.is_empty() {
        let mce = ces.iter().map(|t| t.1).sum::<f64>() / ces.len() as f64;
        let rels: Vec<f64> = ces.iter().filter_map(|t| t.2).collect();
        let rel = match rels.len() {
            0 => "n/a".to_string(),
            n => format!("{:.1}%", 100.0 * rels.iter().sum::<f64>() / n as f64),
        };
        let _ = write!(last, "  mCE={:.1}%  relative_mCE={rel}", 100.0 * mce);
    }
    println!("{last}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_parse_as_ranges_single_values_and_lists() {
        assert_eq!(parse_severities("1-5").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(parse_severities("3").unwrap(), [3]);
        assert_eq!(parse_severities("1,3,5").unwrap(), [1, 3, 5]);
        for bad in ["0-5", "4-2", "6", "a", "1,,2"] {
            let e = parse_severities(bad).unwrap_err().to_string();
            assert!(e.contains("--severities"), "{bad}: {e}");
        }
    }
}
