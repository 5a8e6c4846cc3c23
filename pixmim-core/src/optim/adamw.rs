//! AdamW exactly as PyTorch (spec §0.8), with a per-parameter no-decay set decided by name.
//!
//! burn's own AdamW has one weight decay for all parameters and different defaults, so the
//! references' grouping (official timm rule vs mmengine keys) needs its own optimiser. All
//! hyper-parameters are explicit.
use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleMapper, Param, ParamId};
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{param_infos, ParamInfo};
use crate::config::{NoDecayRule, OptimConfig};

/// First and second moments of one parameter, flattened, plus its step count.
#[derive(Clone, Debug)]
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
    pub step: u64,
}

pub struct AdamW<B: AutodiffBackend> {
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Parameters exempt from weight decay.
    pub no_decay: HashSet<ParamId>,
    /// Canonical name of each parameter (for checkpoints).
    pub names: HashMap<ParamId, String>,
    /// Per-parameter learning-rate factor (layer-wise decay in fine-tuning); absent = 1.
    pub lr_scale: HashMap<ParamId, f64>,
    pub state: HashMap<ParamId, Moments<B::InnerBackend>>,
}

/// Does the reference skip weight decay for this parameter? (spec §0.8)
pub fn skips_decay(rule: NoDecayRule, p: &ParamInfo) -> bool {
    match rule {
        // timm add_weight_decay: ndim == 1 or name ends with .bias. cls/mask tokens are 3-D,
        // so they ARE decayed.
        NoDecayRule::Official => p.shape.len() == 1 || p.name.ends_with(".bias"),
        // mmengine custom_keys: ln, bias, pos_embed, mask_token, cls_token. Our LayerNorms
        // are named as in the official layout (norm1, decoder_norm, ...); `is_layernorm`
        // is what mm's `ln` key matches.
        NoDecayRule::Mm => {
            p.is_layernorm
                || p.name.contains("bias")
                || p.name.contains("pos_embed")
                || p.name.contains("mask_token")
                || p.name.contains("cls_token")
        }
    }
}

impl<B: AutodiffBackend> AdamW<B> {
    pub fn new<M: Module<B>>(cfg: &OptimConfig, model: &M) -> Self {
        let infos = param_infos(model);
        let no_decay = infos
            .iter()
            .filter(|p| skips_decay(cfg.no_decay, p))
            .map(|p| p.id)
            .collect();
        let names = infos.into_iter().map(|p| (p.id, p.name)).collect();
        Self {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            no_decay,
            names,
            lr_scale: HashMap::new(),
            state: HashMap::new(),
        }
    }

    /// One optimiser step at learning rate `lr`. Parameters without a gradient (frozen ones)
    /// are left alone.
    pub fn step<M: AutodiffModule<B>>(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        let mut mapper = StepMapper {
            opt: self,
            lr,
            grads: Grads::Single(grads),
        };
        model.map(&mut mapper)
    }

    /// One step from the gradients of several devices (data parallel). burn's
    /// `MultiGradientsParams` sums each parameter's gradients on one device chosen by the
    /// parameter's id, so the update (and its moments) for different parameters are spread
    /// over the devices; the caller forks the model to every device for the next step.
    pub fn step_multi<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        model: M,
        grads: MultiGradientsParams,
    ) -> M {
        let mut mapper = StepMapper {
            opt: self,
            lr,
            grads: Grads::Multi(grads),
        };
        model.map(&mut mapper)
    }
}

enum Grads {
    Single(GradientsParams),
    Multi(MultiGradientsParams),
}

impl Grads {
    /// The gradient of `id` (summed over devices), on the device that should update it.
    fn remove<B: Backend, const D: usize>(&mut self, id: ParamId) -> Option<Tensor<B, D>> {
        match self {
            Grads::Single(g) => g.remove::<B, D>(id),
            Grads::Multi(g) => g.remove::<B, D>(id).map(|(t, _)| t),
        }
    }
}

struct StepMapper<'a, B: AutodiffBackend> {
    opt: &'a mut AdamW<B>,
    lr: f64,
    grads: Grads,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StepMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let [b1, b2] = self.opt.betas;
        let wd = if self.opt.no_decay.contains(&id) {
            0.0
        } else {
            self.opt.weight_decay
        };
        // A param group's lr scales its decoupled decay too, as in torch.
        let lr = self.lr * self.opt.lr_scale.get(&id).copied().unwrap_or(1.0);
        // The update runs where the gradient is (one device per parameter when data
        // parallel); the parameter and its moments follow it there.
        let device = grad.device();
        let mut p = tensor.inner();
        if p.device() != device {
            p = p.to_device(&device);
        }
        let g = grad.reshape([n]);
        let mut prev = self.opt.state.remove(&id).unwrap_or_else(|| Moments {
            exp_avg: Tensor::zeros([n], &device),
            exp_avg_sq: Tensor::zeros([n], &device),
            step: 0,
        });
        if prev.exp_avg.device() != device {
            prev.exp_avg = prev.exp_avg.to_device(&device);
            prev.exp_avg_sq = prev.exp_avg_sq.to_device(&device);
        }
        let step = prev.step + 1;
        // torch order: decoupled decay, moments, bias-corrected update.
        let p = if wd != 0.0 { p * (1.0 - lr * wd) } else { p };
        let m = prev.exp_avg * b1 + g.clone() * (1.0 - b1);
        let v = prev.exp_avg_sq * b2 + g.powi_scalar(2) * (1.0 - b2);
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
        let denom = v.clone().sqrt() / bc2_sqrt + self.opt.eps;
        let update = (m.clone() / denom).reshape(shape.clone()) * (lr / bc1);
        let p = p - update;
        self.opt.state.insert(
            id,
            Moments {
                exp_avg: m,
                exp_avg_sq: v,
                step,
            },
        );
        let mut t = Tensor::from_inner(p);
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}
