//! MAE's linear probe (main_linprobe.py; paper Table 10) on cached frozen features:
//! `BatchNorm1d(D, affine=False, eps=1e-6)` then `Linear(D, classes)` (weight
//! trunc-normal std 0.01, bias 0), cross-entropy, LARS (momentum 0.9, weight decay 0,
//! trust 0.001), lr = blr x batch / 256 with blr 0.1, linear warm-up then half-cycle cosine,
//! per iteration. The batch norm has no parameters and its input is frozen, so the only
//! trained parameters are the head's: this runs on the host, with the gradient by hand.
//!
//! Deviation (docs/evaluation.md): features are computed once from the eval transform, so
//! the probe sees no RandomResizedCrop/flip augmentation, as cached-feature probes do.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::config::ScheduleKind;
use crate::error::{Error, Result};
use crate::job::{EpochResult, Features};
use crate::optim::{Lars, LrSchedule};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOptimizer {
    Lars,
    Sgd,
}

#[derive(Clone, Debug)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch_size: usize,
    /// Base lr; the lr is `blr * batch_size / 256` (MAE's rule).
    pub blr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub optimizer: ProbeOptimizer,
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    /// Paper Table 10, with the batch scaled down from 16384 to 256 (lr scales with it).
    fn default() -> Self {
        Self {
            epochs: 90,
            warmup_epochs: 10,
            batch_size: 256,
            blr: 0.1,
            min_lr: 0.0,
            weight_decay: 0.0,
            momentum: 0.9,
            optimizer: ProbeOptimizer::Lars,
            seed: 0,
        }
    }
}

impl LinearProbeConfig {
    pub fn validate(&self) -> Result<()> {
        let e = |k: &str, m: &str| Err(Error::Usage(format!("--{k}: {m}")));
        if self.epochs == 0 {
            return e("epochs", "must be at least 1");
        }
        if self.warmup_epochs > self.epochs {
            return e("warmup-epochs", "must not exceed --epochs");
        }
        if self.batch_size == 0 {
            return e("batch", "must be at least 1");
        }
        if !(self.blr.is_finite() && self.blr > 0.0) {
            return e("blr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return e("momentum", "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return e("weight-decay", "must be >= 0");
        }
        Ok(())
    }
}

/// BatchNorm1d(affine=False, eps=1e-6, momentum=0.1) + Linear.
pub struct LinearHead {
    pub dim: usize,
    pub classes: usize,
    /// (classes, dim), row-major (PyTorch's layout).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

const BN_EPS: f32 = 1e-6;
const BN_MOMENTUM: f32 = 0.1;

impl LinearHead {
    pub fn new(dim: usize, classes: usize, seed: u64) -> Self {
        // timm trunc_normal_(std=0.01): a normal cut at +-2 (i.e. 200 std, never reached).
        let mut rng = StdRng::seed_from_u64(seed);
        let n = Normal::new(0.0f32, 0.01).expect("valid normal");
        Self {
            dim,
            classes,
            weight: (0..dim * classes)
                .map(|_| n.sample(&mut rng).clamp(-2.0, 2.0))
                .collect(),
            bias: vec![0.0; classes],
            running_mean: vec![0.0; dim],
            running_var: vec![1.0; dim],
        }
    }

    /// Logits of normalised rows `z` (n, dim) -> (n, classes).
    fn logits(&self, z: &[f32]) -> Vec<f32> {
        let (d, c) = (self.dim, self.classes);
        let mut out = vec![0f32; z.len() / d * c];
        out.par_chunks_mut(c)
            .zip(z.par_chunks(d))
            .for_each(|(o, row)| {
                for (k, ok) in o.iter_mut().enumerate() {
                    let w = &self.weight[k * d..(k + 1) * d];
                    *ok = self.bias[k] + row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
                }
            });
        out
    }

    /// Normalise with the running statistics (eval mode) and classify.
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let z: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let j = i % d;
                (v - self.running_mean[j]) / (self.running_var[j] + BN_EPS).sqrt()
            })
            .collect();
        self.logits(&z)
    }
}

/// Softmax cross-entropy of (n, c) logits; returns the mean loss and d loss / d logits.
fn cross_entropy(logits: &[f32], labels: &[usize], c: usize) -> (f64, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0f32; logits.len()];
    let mut loss = 0f64;
    for (i, &y) in labels.iter().enumerate() {
        let l = &logits[i * c..(i + 1) * c];
        let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = l.iter().map(|v| ((v - m) as f64).exp()).sum();
        loss += z.ln() - (l[y] - m) as f64;
        for k in 0..c {
            let p = (((l[k] - m) as f64).exp() / z) as f32;
            grad[i * c + k] = (p - if k == y { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    (loss / n as f64, grad)
}

/// Top-1 and top-5 accuracy of (n, c) logits.
pub fn accuracy(logits: &[f32], labels: &[usize], c: usize) -> (f64, f64) {
    let mut t1 = 0;
    let mut t5 = 0;
    for (i, &y) in labels.iter().enumerate() {
        let l = &logits[i * c..(i + 1) * c];
        // Rank of the true class: how many classes score strictly higher.
        let better = l.iter().filter(|&&v| v > l[y]).count();
        t1 += usize::from(better == 0);
        t5 += usize::from(better < 5);
    }
    let n = labels.len() as f64;
    (t1 as f64 / n, t5 as f64 / n)
}

/// Train the probe; `on_epoch` sees each epoch's validation result as it lands.
pub fn linear_probe(
    train: &Features,
    val: &Features,
    cfg: &LinearProbeConfig,
    on_epoch: impl FnMut(&EpochResult),
) -> Result<Vec<EpochResult>> {
    train_linear_probe(train, val, cfg, on_epoch).map(|(epochs, _)| epochs)
}

/// [`linear_probe`], with the head as the last epoch left it (to classify other features).
pub fn train_linear_probe(
    train: &Features,
    val: &Features,
    cfg: &LinearProbeConfig,
    mut on_epoch: impl FnMut(&EpochResult),
) -> Result<(Vec<EpochResult>, LinearHead)> {
    cfg.validate()?;
    if train.dim != val.dim {
        return Err(Error::Usage(format!(
            "feature sizes differ: train {} vs val {}",
            train.dim, val.dim
        )));
    }
    let d = train.dim;
    let c = train.num_classes().max(val.num_classes());
    // drop_last, as the reference loader; a set smaller than one batch is one batch.
    let bs = cfg.batch_size.min(train.len());
    let iters = train.len() / bs;
    let lr = cfg.blr * bs as f64 / 256.0;
    let sched = LrSchedule {
        kind: ScheduleKind::Official,
        lr,
        min_lr: cfg.min_lr,
        warmup_epochs: cfg.warmup_epochs as f64,
        epochs: cfg.epochs as f64,
        iters_per_epoch: iters,
        start_factor: 0.0,
    };
    let opt = Lars {
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        trust_coefficient: 0.001,
        trust: cfg.optimizer == ProbeOptimizer::Lars,
    };
    let mut head = LinearHead::new(d, c, cfg.seed);
    let (mut mu_w, mut mu_b) = (vec![0f32; d * c], vec![0f32; c]);
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x11_ea5e);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut results = Vec::new();
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for it in 0..iters {
            let lr_now = sched.at(epoch * iters + it);
            let rows = &order[it * bs..(it + 1) * bs];
            // Batch statistics (biased variance normalises; unbiased goes to the running var).
            let mut mean = vec![0f64; d];
            for &r in rows {
                for (m, v) in mean.iter_mut().zip(train.row(r)) {
                    *m += *v as f64;
                }
            }
            mean.iter_mut().for_each(|m| *m /= bs as f64);
            let mut var = vec![0f64; d];
            for &r in rows {
                for ((s, v), m) in var.iter_mut().zip(train.row(r)).zip(&mean) {
                    *s += (*v as f64 - m).powi(2);
                }
            }
            let mut z = Vec::with_capacity(bs * d);
            for &r in rows {
                for (j, v) in train.row(r).iter().enumerate() {
                    let sd = (var[j] / bs as f64 + BN_EPS as f64).sqrt();
                    z.push(((*v as f64 - mean[j]) / sd) as f32);
                }
            }
            for j in 0..d {
                let unbiased = if bs > 1 {
                    var[j] / (bs - 1) as f64
                } else {
                    0.0
                };
                head.running_mean[j] =
                    (1.0 - BN_MOMENTUM) * head.running_mean[j] + BN_MOMENTUM * mean[j] as f32;
                head.running_var[j] =
                    (1.0 - BN_MOMENTUM) * head.running_var[j] + BN_MOMENTUM * unbiased as f32;
            }
            let labels: Vec<usize> = rows.iter().map(|&r| train.labels[r]).collect();
            let (loss, g) = cross_entropy(&head.logits(&z), &labels, c);
            if !loss.is_finite() {
                return Err(Error::Training(format!(
                    "linear probe loss became {loss} in epoch {epoch}: lower --blr"
                )));
            }
            loss_sum += loss;
            // dW = g^T z, db = sum g.
            let mut gw = vec![0f32; c * d];
            gw.par_chunks_mut(d).enumerate().for_each(|(k, row)| {
                for i in 0..bs {
                    let gk = g[i * c + k];
                    if gk != 0.0 {
                        for (w, zv) in row.iter_mut().zip(&z[i * d..(i + 1) * d]) {
                            *w += gk * zv;
                        }
                    }
                }
            });
            let gb: Vec<f32> = (0..c)
                .map(|k| (0..bs).map(|i| g[i * c + k]).sum())
                .collect();
            opt.step(lr_now, &mut head.weight, &gw, &mut mu_w, true);
            opt.step(lr_now, &mut head.bias, &gb, &mut mu_b, false);
        }
        let (top1, top5) = accuracy(&head.predict(&val.data), &val.labels, c);
        let r = EpochResult {
            epoch,
            lr: sched.at((epoch + 1) * iters - 1),
            train_loss: loss_sum / iters as f64,
            top1,
            top5,
        };
        on_epoch(&r);
        results.push(r);
    }
    Ok((results, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian classes in 8-D, offset along different axes, with a large shared
    /// offset and scale (the batch norm must handle it).
    fn blobs(n: usize, seed: u64) -> Features {
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let y = i % 3;
            for j in 0..8 {
                let centre = if j == y { 3.0 } else { 0.0 };
                data.push(100.0 + 10.0 * (centre + noise.sample(&mut rng)));
            }
            labels.push(y);
        }
        Features {
            dim: 8,
            data,
            labels,
        }
    }

    #[test]
    fn learns_separable_classes_with_lars_and_sgd() {
        let (train, val) = (blobs(600, 1), blobs(300, 2));
        for optimizer in [ProbeOptimizer::Lars, ProbeOptimizer::Sgd] {
            let cfg = LinearProbeConfig {
                epochs: 30,
                warmup_epochs: 2,
                batch_size: 64,
                // LARS steps by lr x 0.001 x |W|: it needs MAE's huge lr (6.4 at 16384).
                blr: if optimizer == ProbeOptimizer::Lars {
                    100.0
                } else {
                    0.5
                },
                optimizer,
                ..Default::default()
            };
            let mut seen = 0;
            let r = linear_probe(&train, &val, &cfg, |_| seen += 1).unwrap();
            assert_eq!(seen, 30);
            let last = r.last().unwrap();
            // Bayes accuracy of these blobs is about 98%; chance is 33%.
            assert!(last.top1 > 0.9, "{optimizer:?}: {last:?}");
            assert_eq!(last.top5, 1.0);
            assert!(
                r[29].train_loss < r[0].train_loss,
                "{optimizer:?}: loss must fall"
            );
        }
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let logits = [0.3f32, -1.2, 2.0, 0.5, 0.1, -0.4];
        let labels = [2, 1];
        let (l0, g) = cross_entropy(&logits, &labels, 3);
        for k in 0..6 {
            let mut p = logits;
            p[k] += 1e-3;
            let (l1, _) = cross_entropy(&p, &labels, 3);
            assert!(((l1 - l0) / 1e-3 - g[k] as f64).abs() < 1e-3, "{k}");
        }
        assert_eq!(accuracy(&logits, &labels, 3), (0.5, 1.0));
    }
}
