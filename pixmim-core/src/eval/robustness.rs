//! Robustness to common corruptions (paper Table 4's question: does PixMIM's margin grow
//! under domain shift?): a fine-tuned classifier's top-1 on a labelled set under each
//! ImageNet-C corruption ([`crate::robustness`]) and severity, and the corruption errors
//! against a baseline classifier (Hendrycks & Dietterich's CE and relative CE).
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;

use super::linear_probe::accuracy;
use crate::augment::{normalise_image, to_rgb_image};
use crate::data::seed::{derive, Purpose};
use crate::error::Result;
use crate::job::{ClassifyOptions, RobustnessOptions, RobustnessReport, View, ViewLogits};
use crate::registry::Composed;
use crate::robustness::{corrupt, CORRUPTIONS};
use crate::traits::Augmentation;

/// The eval transform's view, then a corruption on its 8-bit pixels, normalised again.
struct Corrupted {
    view: Arc<dyn Augmentation>,
    corruption: &'static str,
    severity: usize,
}

impl Augmentation for Corrupted {
    fn describe(&self) -> String {
        format!(
            "{} + {} {}",
            self.view.describe(),
            self.corruption,
            self.severity
        )
    }
    fn output_size(&self) -> (usize, usize) {
        self.view.output_size()
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        self.view.apply(img, rng, out);
        let (h, w) = self.output_size();
        let clean = to_rgb_image(out, h, w);
        // `rng` is keyed by (seed, image); the seed by (corruption, severity).
        let bad = corrupt(&clean, self.corruption, self.severity, rng.gen(), 0);
        out.copy_from_slice(&normalise_image(&bad));
    }
}

/// The key of one (corruption, severity) setting's draws.
fn setting_seed(seed: u64, corruption: &str, severity: usize) -> u64 {
    let k = CORRUPTIONS
        .iter()
        .position(|&c| c == corruption)
        .unwrap_or(0);
    derive(seed, Purpose::Corruption, (k * 5 + severity) as u64)
}

pub fn robustness(c: &Composed, opts: &RobustnessOptions) -> Result<RobustnessReport> {
    let labels = opts.val.dataset.class_labels()?;
    let clean = View {
        transform: Arc::clone(&opts.transform),
        seed: 0,
    };
    let mut views = vec![clean];
    let mut settings = Vec::new();
    for &corruption in &opts.corruptions {
        for &severity in &opts.severities {
            views.push(View {
                transform: Arc::new(Corrupted {
                    view: Arc::clone(&opts.transform),
                    corruption,
                    severity,
                }),
                seed: setting_seed(opts.seed, corruption, severity),
            });
            settings.push((corruption, severity));
        }
    }
    let classify = ClassifyOptions {
        checkpoint: opts.checkpoint.clone(),
        device: opts.device,
        data: Arc::clone(&opts.val),
        views,
        batch_size: opts.batch_size,
        pool: opts.pool,
    };
    let mut report = RobustnessReport {
        clean_top1: 0.0,
        top1: Vec::new(),
    };
    c.classify(&classify, &mut |v: ViewLogits<'_>| {
        let acc = accuracy(v.logits, labels, v.classes).0;
        match v.view {
            0 => {
                eprintln!("clean  top1={:.2}%", 100.0 * acc);
                report.clean_top1 = acc;
            }
            k => {
                let (corruption, severity) = settings[k - 1];
                eprintln!("{corruption} {severity}  top1={:.2}%", 100.0 * acc);
                report.top1.push((corruption.to_string(), severity, acc));
            }
        }
    })?;
    Ok(report)
}

/// Hendrycks & Dietterich's corruption errors of `model` against `baseline` for each
/// corruption both report: CE = sum over severities of the error / the baseline's, and the
/// relative CE, which subtracts each one's clean error first. Returns (corruption, CE,
/// relative CE), in the model's order; a corruption whose baseline error sum is 0 is
/// skipped, and the relative CE is `None` when the baseline loses nothing to it (the
/// ratios are undefined).
pub fn corruption_errors(
    model: &RobustnessReport,
    baseline: &RobustnessReport,
) -> Vec<(String, f64, Option<f64>)> {
    let mut names: Vec<&String> = model.top1.iter().map(|(c, _, _)| c).collect();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (mut e, mut eb, mut rel, mut relb) = (0.0, 0.0, 0.0, 0.0);
            for (c, s, acc) in model.top1.iter().filter(|(c, _, _)| c == name) {
                let base = baseline
                    .top1
                    .iter()
                    .find(|(cb, sb, _)| cb == c && sb == s)?
                    .2;
                e += 1.0 - acc;
                eb += 1.0 - base;
                rel += (1.0 - acc) - (1.0 - model.clean_top1);
                relb += (1.0 - base) - (1.0 - baseline.clean_top1);
            }
            (eb > 0.0).then(|| (name.clone(), e / eb, (relb != 0.0).then(|| rel / relb)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(clean: f64, rows: &[(&str, usize, f64)]) -> RobustnessReport {
        RobustnessReport {
            clean_top1: clean,
            top1: rows
                .iter()
                .map(|&(c, s, a)| (c.to_string(), s, a))
                .collect(),
        }
    }

    #[test]
    fn corruption_errors_follow_hendrycks_and_dietterich() {
        let model = report(
            0.9,
            &[("fog", 1, 0.8), ("fog", 2, 0.6), ("contrast", 1, 0.5)],
        );
        let base = report(
            0.8,
            &[("fog", 1, 0.6), ("fog", 2, 0.4), ("contrast", 1, 1.0)],
        );
        let ce = corruption_errors(&model, &base);
        // fog: errors 0.2 + 0.4 over 0.4 + 0.6 = 0.6; relative (0.1 + 0.3) / (0.2 + 0.4).
        assert_eq!(ce.len(), 1, "contrast's baseline error is 0: skipped");
        let (name, e, rel) = &ce[0];
        assert_eq!(name, "fog");
        assert!((e - 0.6).abs() < 1e-12 && (rel.unwrap() - 0.4 / 0.6).abs() < 1e-12);
        // The same classifier as its own baseline: every CE is 1.
        let same = corruption_errors(&model, &model);
        // A baseline as good corrupted as clean: the relative CE is undefined.
        let flat = report(0.5, &[("fog", 1, 0.5), ("fog", 2, 0.5)]);
        assert_eq!(corruption_errors(&model, &flat)[0].2, None);
        assert!(same
            .iter()
            .all(|(_, e, r)| (e - 1.0).abs() < 1e-12 && (r.unwrap() - 1.0).abs() < 1e-12));
    }

    #[test]
    fn each_setting_has_its_own_key() {
        let mut seen = std::collections::HashSet::new();
        for c in CORRUPTIONS {
            for s in 1..=5 {
                assert!(seen.insert(setting_seed(0, c, s)));
            }
        }
    }
}
