//! End-to-end fine-tuning (MAE's main_finetune.py; paper Table 9): the pretrained encoder,
//! every patch visible, mean-pooled tokens -> `fc_norm` (LayerNorm) -> linear head
//! (trunc-normal std 2e-5), AdamW (0.9, 0.999) with weight decay 0.05 and layer-wise lr
//! decay 0.75, stochastic depth 0.1, lr = blr x batch / 256 with a linear warm-up and
//! half-cycle cosine to `min_lr`, per iteration. The regularisers: the train transform the
//! caller passes (MAE's: [`crate::augment::finetune`], RandAugment and random erasing),
//! Mixup/CutMix per batch ([`super::mixup`]) and label smoothing 0.1 in the soft targets.
//!
//! Deviation (docs/evaluation.md): the encoder's final norm stays before the pooling (MAE
//! drops it when it adds `fc_norm`).
use std::collections::HashMap;

use burn::module::{AutodiffModule, Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::DispatchDevice;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde_json::json;

use super::features::{all_visible_tensors, pool_tokens};
use super::linear_probe::accuracy;
use crate::augment::mixup::mixed_targets;
use crate::checkpoint::{self, param_infos, ParamInfo};
use crate::config::{NoDecayRule, OptimConfig, ScheduleKind};
use crate::data::loader::{stream_index, views, Source};
use crate::data::seed::{rng, Purpose};
use crate::error::{Error, Result};
use crate::job::{EpochResult, FinetuneOptions, FinetuneSummary, Pool};
use crate::log::MetricsLog;
use crate::optim::{AdamW, LrSchedule};
use crate::registry::Composed;
use crate::traits::{Augmentation, Autoencoder};
use crate::RunBackend;

type B = RunBackend;

impl FinetuneOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| Err(Error::Usage(format!("--{k}: {m}")));
        self.mixup.validate(self.batch_size)?;
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs", "epochs and batch must be at least 1".into());
        }
        if !(self.blr.is_finite() && self.blr > 0.0) {
            return bad("blr", format!("must be > 0, got {}", self.blr));
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad(
                "layer-decay",
                format!("must be in (0, 1], got {}", self.layer_decay),
            );
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(
                "drop-path",
                format!("must be in [0, 1), got {}", self.drop_path),
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "label-smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("warmup-epochs", "must be within [0, epochs]".into());
        }
        Ok(())
    }
}

/// `fc_norm` + `head`, as in timm's VisionTransformer with global pooling.
#[derive(Module, Debug)]
pub struct ClassifierHead<B: Backend> {
    pub fc_norm: LayerNorm<B>,
    pub head: Linear<B>,
}

impl<B: Backend> ClassifierHead<B> {
    pub fn new(dim: usize, classes: usize, seed: u64, device: &B::Device) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = Normal::new(0.0f32, 2e-5).expect("valid normal");
        let w: Vec<f32> = (0..dim * classes).map(|_| n.sample(&mut rng)).collect();
        let mut head = LinearConfig::new(dim, classes).init(device);
        // burn stores (in, out); the init is i.i.d., so the layout does not matter.
        head.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [dim, classes]),
            device,
        ));
        head.bias = Some(Param::from_tensor(Tensor::zeros([classes], device)));
        Self {
            fc_norm: LayerNormConfig::new(dim).with_epsilon(1e-6).init(device),
            head,
        }
    }
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(self.fc_norm.forward(pooled))
    }
}

/// A fine-tuned encoder and its head, for evaluation (no stochastic depth, no autodiff graph).
pub struct Classifier<M> {
    pub encoder: M,
    pub head: ClassifierHead<B>,
    pub pool: Pool,
}

impl<M: Autoencoder<B>> Classifier<M> {
    /// Logits (N, classes) of every image of `data` through `transform`, in order, `batch`
    /// at a time; the transform's draws are keyed by `seed`.
    pub fn logits(
        &self,
        c: &Composed,
        data: &Source,
        transform: &dyn Augmentation,
        seed: u64,
        batch: usize,
        device: &DispatchDevice,
    ) -> Result<Vec<f32>> {
        let m = data.dataset.len();
        let mut out = Vec::new();
        for start in (0..m).step_by(batch.max(1)) {
            let items: Vec<(usize, usize)> =
                (start..(start + batch).min(m)).map(|i| (i, i)).collect();
            let imgs = views(data, transform, seed, &items)?;
            let mask = all_visible_tensors(c, items.len(), device);
            let tokens = self.encoder.encode(imgs.to_tensor::<B>(device), &mask);
            let pooled = pool_tokens(tokens, self.encoder.has_cls_token(), self.pool);
            let logits = self.head.forward(pooled);
            out.extend(
                logits
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32"),
            );
        }
        Ok(out)
    }
}

/// MAE's `param_groups_lrd`: layer 0 = patch embedding, cls token and position embedding;
/// layer i + 1 = encoder block i (ConvMAE's stages counted in order); everything else (final
/// norm, head) is the top layer. A parameter's lr is scaled by `decay^(top - layer)`.
pub fn layer_decay_scales(infos: &[ParamInfo], decay: f64) -> HashMap<ParamId, f64> {
    // Encoder blocks are `blocks.N.*` (ViT; MFF under `mae.`) or `blocksK.N.*` (ConvMAE).
    let block_of = |name: &str| -> Option<(String, usize)> {
        let name = name.strip_prefix("mae.").unwrap_or(name);
        let mut parts = name.split('.');
        let stage = parts.next()?;
        let rest = stage.strip_prefix("blocks")?;
        if !rest.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some((stage.to_string(), parts.next()?.parse().ok()?))
    };
    let mut blocks: Vec<(String, usize)> = infos.iter().filter_map(|p| block_of(&p.name)).collect();
    blocks.sort();
    blocks.dedup();
    let top = blocks.len() + 1;
    infos
        .iter()
        .map(|p| {
            let name = p.name.strip_prefix("mae.").unwrap_or(&p.name);
            let layer = if name.starts_with("patch_embed")
                || name.starts_with("cls_token")
                || name.starts_with("pos_embed")
            {
                0
            } else if let Some(b) = block_of(&p.name) {
                blocks.binary_search(&b).expect("collected above") + 1
            } else {
                top
            };
            (p.id, decay.powi((top - layer) as i32))
        })
        .collect()
}

/// Cross-entropy against soft targets (timm's `SoftTargetCrossEntropy`): `targets` is the
/// row-major (N, C) distribution of each row, e.g. from [`mixed_targets`].
pub fn soft_target_cross_entropy<Bk: Backend>(
    logits: Tensor<Bk, 2>,
    targets: Vec<f32>,
) -> Tensor<Bk, 1> {
    let [n, c] = logits.dims();
    let device = logits.device();
    let target = Tensor::<Bk, 2>::from_data(TensorData::new(targets, [n, c]), &device);
    (log_softmax(logits, 1) * target).sum_dim(1).mean().neg()
}

pub fn finetune<M, F>(c: &Composed, opts: &FinetuneOptions, build: F) -> Result<FinetuneSummary>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    opts.validate()?;
    crate::out_dir::check(&opts.out, crate::out_dir::JobKind::Finetune)?;
    for t in [&opts.train_transform, &opts.val_transform] {
        if t.output_size() != c.geometry.image {
            return Err(Error::Usage(format!(
                "a transform makes {:?} images; the model takes {:?}",
                t.output_size(),
                c.geometry.image
            )));
        }
    }
    let labels_of = |s: &Source| s.dataset.class_labels().map(<[usize]>::to_vec);
    let (train_labels, val_labels) = (labels_of(&opts.train)?, labels_of(&opts.val)?);
    let classes = train_labels
        .iter()
        .chain(&val_labels)
        .copied()
        .max()
        .unwrap_or(0)
        + 1;

    let device = opts.device.train_device()?;
    let mut model = crate::checkpoint::load_weights(build(&device, c.seed), &opts.checkpoint)?
        .with_drop_path(opts.drop_path);
    let dim = {
        let probe = model.encode(
            Tensor::zeros([1, 3, c.geometry.image.0, c.geometry.image.1], &device),
            &all_visible_tensors(c, 1, &device),
        );
        probe.dims()[2]
    };
    let mut head = ClassifierHead::<B>::new(dim, classes, opts.seed, &device);
    let optim_cfg = OptimConfig {
        blr: opts.blr,
        lr: None,
        weight_decay: opts.weight_decay,
        betas: [0.9, 0.999],
        eps: 1e-8,
        no_decay: NoDecayRule::Official,
        // Not offered here yet: the encoder and the head step with two optimisers, and the
        // references clip their gradients' norm together.
        clip_grad: None,
    };
    let infos = param_infos(&model);
    let mut opt_model = AdamW::<B>::new(&optim_cfg, &model);
    opt_model.lr_scale = layer_decay_scales(&infos, opts.layer_decay);
    // timm's no_weight_decay(): the cls token and position embedding are not decayed.
    for p in infos
        .iter()
        .filter(|p| p.name.ends_with("cls_token") || p.name.ends_with("pos_embed"))
    {
        opt_model.no_decay.insert(p.id);
    }
    let mut opt_head = AdamW::<B>::new(&optim_cfg, &head);

    let n = opts.train.dataset.len();
    let bs = opts.batch_size.min(n);
    opts.mixup
        .validate(bs)
        .map_err(|e| Error::Usage(format!("{e}; the {n} training images make batches of {bs}")))?;
    let ipe = n / bs;
    let lr = opts.blr * bs as f64 / 256.0;
    let sched = LrSchedule {
        kind: ScheduleKind::Official,
        lr,
        min_lr: opts.min_lr,
        warmup_epochs: opts.warmup_epochs,
        epochs: opts.epochs as f64,
        iters_per_epoch: ipe,
        start_factor: 0.0,
    };
    let _claim = crate::out_dir::claim(&opts.out, crate::out_dir::JobKind::Finetune)?;
    let mut metrics = MetricsLog::open(&opts.out.join("metrics.jsonl"), 0)?;
    let bar = crate::log::progress_bar((opts.epochs * ipe) as u64, "finetune");
    let mut cache = None;
    let mut results = Vec::new();
    for epoch in 0..opts.epochs {
        let mut loss_sum = 0.0;
        for it in 0..ipe {
            let step = epoch * ipe + it;
            let items: Vec<(usize, usize)> = (step * bs..(step + 1) * bs)
                .map(|k| (k, stream_index(opts.seed, n, k, &mut cache)))
                .collect();
            let mut imgs = views(
                &opts.train,
                opts.train_transform.as_ref(),
                opts.seed,
                &items,
            )?;
            let labels: Vec<usize> = items.iter().map(|&(_, i)| train_labels[i]).collect();
            let mixed = opts.mixup.mix(
                &mut imgs.data,
                bs,
                imgs.channels,
                imgs.height,
                imgs.width,
                &mut rng(opts.seed, Purpose::Mixup, step as u64),
            );
            let targets = mixed_targets(&labels, classes, mixed.lambda, opts.label_smoothing);
            let mask = all_visible_tensors(c, bs, &device);
            let tokens = model.encode(imgs.to_tensor::<B>(&device), &mask);
            let logits = head.forward(pool_tokens(tokens, model.has_cls_token(), opts.pool));
            let loss = soft_target_cross_entropy(logits, targets);
            let value = loss.clone().into_scalar() as f64;
            if !value.is_finite() {
                return Err(Error::Training(format!(
                    "fine-tuning loss is {value} at epoch {epoch}, step {it}: lower --blr"
                )));
            }
            loss_sum += value;
            let mut grads = loss.backward();
            let gm = GradientsParams::from_module(&mut grads, &model);
            let gh = GradientsParams::from_module::<B, _>(&mut grads, &head);
            let lr_now = sched.at(step);
            model = opt_model.step(lr_now, model, gm);
            head = opt_head.step(lr_now, head, gh);
            bar.inc(1);
        }
        // Evaluation: no stochastic depth, eval transform, and no autodiff graph
        // (`no_grad` stops the parameters from being tracked).
        let classifier = Classifier {
            encoder: model.clone().with_drop_path(0.0).no_grad(),
            head: head.clone().no_grad(),
            pool: opts.pool,
        };
        let logits_all =
            classifier.logits(c, &opts.val, opts.val_transform.as_ref(), 0, bs, &device)?;
        let (top1, top5) = accuracy(&logits_all, &val_labels, classes);
        let r = EpochResult {
            epoch,
            lr: sched.at(((epoch + 1) * ipe).saturating_sub(1)),
            train_loss: loss_sum / ipe as f64,
            top1,
            top5,
        };
        let mut fields = serde_json::Map::new();
        fields.insert("step".into(), json!(epoch));
        fields.insert("epoch".into(), json!(epoch));
        fields.insert("train_loss".into(), json!(r.train_loss));
        fields.insert("lr".into(), json!(r.lr));
        fields.insert("top1".into(), json!(top1));
        fields.insert("top5".into(), json!(top5));
        metrics.log(fields)?;
        bar.println(format!(
            "epoch {epoch}  loss {:.4}  top1={:.2}%  top5={:.2}%",
            r.train_loss,
            100.0 * top1,
            100.0 * top5
        ));
        results.push(r);
    }
    bar.finish_and_clear();
    // Encoder and head in one file, the head under `fc_norm.*` / `head.*` as timm names it.
    let mut tensors = checkpoint::export_params(&model);
    tensors.extend(checkpoint::export_params(&head));
    let weights = opts.out.join("finetuned.safetensors");
    let mut meta = checkpoint::run_metadata(c.method.name(), 0, &c.table);
    meta.insert("classes".into(), classes.to_string());
    checkpoint::write_safetensors(&weights, &tensors, meta)?;
    Ok(FinetuneSummary {
        epochs: results,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn soft_target_cross_entropy_with_smoothed_one_hots_matches_the_formula() {
        let dev = Default::default();
        let logits =
            Tensor::<NdArray, 2>::from_data(TensorData::new(vec![2.0f32, 0.0, -1.0], [1, 3]), &dev);
        let targets = mixed_targets(&[0], 3, 1.0, 0.1);
        let l: f32 = soft_target_cross_entropy(logits, targets).into_scalar();
        let z = (2.0f64.exp() + 1.0 + (-1.0f64).exp()).ln();
        let logp = [2.0 - z, -z, -1.0 - z];
        let want = -(0.9 + 0.1 / 3.0) * logp[0] - (0.1 / 3.0) * (logp[1] + logp[2]);
        assert!((l as f64 - want).abs() < 1e-5, "{l} vs {want}");
    }
}
