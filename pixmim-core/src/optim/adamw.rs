//! AdamW exactly as PyTorch (numerics §0.8), with a per-parameter no-decay set decided by name.
//!
//! burn's own AdamW has one weight decay for all parameters and different defaults, so the
//! references' grouping (official timm rule vs mmengine keys) needs its own optimiser. All
//! hyper-parameters are explicit.
use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::run::OptimizerState;
use crate::checkpoint::{param_infos, HostTensor, ParamInfo};
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
    /// Largest global L2 norm of the gradients, as `torch.nn.utils.clip_grad_norm_`; `None`
    /// leaves them as they are.
    pub clip_grad: Option<f64>,
    /// The global gradient norm before clipping, of the last step that clipped: a
    /// one-element tensor, read (a device sync) only when logged.
    pub last_grad_norm: Option<Tensor<B::InnerBackend, 1>>,
    pub state: HashMap<ParamId, Moments<B::InnerBackend>>,
}

/// Does the reference skip weight decay for this parameter? (numerics §0.8)
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
            clip_grad: cfg.clip_grad,
            last_grad_norm: None,
            state: HashMap::new(),
        }
    }

    /// Train the parameters of `extra` too (a trainable target's `theta`), named `prefix`
    /// followed by their own names, without weight decay. They step with
    /// [`Self::step_unclipped`]: the model's gradient clipping is about the model.
    pub fn add_undecayed<M: Module<B>>(&mut self, extra: &M, prefix: &str) {
        for p in param_infos(extra) {
            self.no_decay.insert(p.id);
            self.names.insert(p.id, format!("{prefix}{}", p.name));
        }
    }

    /// The moments as a checkpoint holds them: `optim.exp_avg.<name>`,
    /// `optim.exp_avg_sq.<name>` and each parameter's step count by name.
    pub fn export_state(&self) -> OptimizerState {
        let mut out = OptimizerState::default();
        for (id, name) in &self.names {
            if let Some(m) = self.state.get(id) {
                out.tensors
                    .insert(format!("optim.exp_avg.{name}"), host(&m.exp_avg));
                out.tensors
                    .insert(format!("optim.exp_avg_sq.{name}"), host(&m.exp_avg_sq));
                out.steps.insert(name.clone(), m.step.into());
            }
        }
        out
    }

    /// Take the moments of a checkpoint ([`Self::export_state`]'s names), made on `device`
    /// (the run's first training device); parameters it has no moments for start fresh.
    pub fn import_state(&mut self, saved: &OptimizerState, device: &B::Device) {
        for (id, name) in self.names.clone() {
            let (Some(m), Some(v)) = (
                saved.tensors.get(&format!("optim.exp_avg.{name}")),
                saved.tensors.get(&format!("optim.exp_avg_sq.{name}")),
            ) else {
                continue;
            };
            let step = saved
                .steps
                .get(&name)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            // Made through the autodiff device, so that they carry its checkpointing strategy
            // as the gradients they meet do (burn-dispatch refuses to mix them).
            let t = |h: &HostTensor| {
                Tensor::<B, 1>::from_data(TensorData::new(h.data.clone(), [h.data.len()]), device)
                    .inner()
            };
            self.state.insert(
                id,
                Moments {
                    exp_avg: t(m),
                    exp_avg_sq: t(v),
                    step,
                },
            );
        }
    }

    /// One optimiser step at learning rate `lr`. Parameters without a gradient (frozen ones)
    /// are left alone.
    pub fn step<M: AutodiffModule<B>>(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        self.step_with(lr, model, Grads::Single(grads))
    }

    /// [`Self::step_multi`] without gradient clipping, for the parameters added by
    /// [`Self::add_undecayed`] (one device's gradients are a one-entry list).
    pub fn step_unclipped<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        grads: MultiGradientsParams,
    ) -> M {
        let mut mapper = StepMapper {
            opt: self,
            lr,
            grads: Grads::Multi(grads),
        };
        module.map(&mut mapper)
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
        self.step_with(lr, model, Grads::Multi(grads))
    }

    fn step_with<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        model: M,
        grads: Grads<B::InnerBackend>,
    ) -> M {
        let grads = match self.clip_grad {
            Some(max_norm) => {
                let (grads, norm) = clip_global_norm::<B, M>(&model, grads, max_norm);
                self.last_grad_norm = norm;
                grads
            }
            None => grads,
        };
        let mut mapper = StepMapper {
            opt: self,
            lr,
            grads,
        };
        model.map(&mut mapper)
    }
}

/// `torch.nn.utils.clip_grad_norm_` over all of the model's gradients: the L2 norm of every
/// gradient element together, and each gradient times min(1, max_norm / (norm + 1e-6)).
/// burn's `GradientClipping::Norm` clips each tensor by its own norm, which is not what the
/// references' `--clip_grad` does. The factor stays a device tensor (no sync). Returns the
/// flattened, scaled gradients and the norm before clipping (`None` without gradients).
fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: Grads<B::InnerBackend>,
    max_norm: f64,
) -> (Grads<B::InnerBackend>, Option<Tensor<B::InnerBackend, 1>>) {
    struct Take<'a, I: Backend> {
        grads: &'a mut Grads<I>,
        flat: Vec<(ParamId, Tensor<I, 1>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove_flat::<D>(param.id) {
                self.flat.push((param.id, g));
            }
        }
    }
    let mut take = Take::<B::InnerBackend> {
        grads: &mut grads,
        flat: Vec::new(),
    };
    model.visit(&mut take);
    let flat = take.flat;
    let Some(first) = flat.first().map(|(_, g)| g.device()) else {
        return (grads, None);
    };
    // Each parameter's sum of squares where its gradient is (one device per parameter when
    // data parallel), gathered on one device.
    let squares: Vec<Tensor<B::InnerBackend, 1>> = flat
        .iter()
        .map(|(_, g)| g.clone().square().sum().to_device(&first))
        .collect();
    let norm = Tensor::cat(squares, 0).sum().sqrt();
    let factor = (norm.clone().add_scalar(1e-6).recip() * max_norm).clamp_max(1.0);
    let scaled = flat
        .into_iter()
        .map(|(id, g)| {
            let f = factor.clone().to_device(&g.device());
            (id, g * f)
        })
        .collect();
    (Grads::Flat(scaled), Some(norm))
}

enum Grads<I: Backend> {
    Single(GradientsParams),
    Multi(MultiGradientsParams),
    /// Flattened gradients, already taken out and clipped.
    Flat(HashMap<ParamId, Tensor<I, 1>>),
}

impl<I: Backend> Grads<I> {
    /// The gradient of a `D`-dimensional parameter `id` (summed over devices), flattened, on
    /// the device that should update it.
    fn remove_flat<const D: usize>(&mut self, id: ParamId) -> Option<Tensor<I, 1>> {
        let g: Tensor<I, D> = match self {
            Grads::Single(g) => g.remove::<I, D>(id),
            Grads::Multi(g) => g.remove::<I, D>(id).map(|(t, _)| t),
            Grads::Flat(g) => return g.remove(&id),
        }?;
        let n = g.shape().num_elements();
        Some(g.reshape([n]))
    }
}

struct StepMapper<'a, B: AutodiffBackend> {
    opt: &'a mut AdamW<B>,
    lr: f64,
    grads: Grads<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StepMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(g) = self.grads.remove_flat::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
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
        let device = g.device();
        let mut p = tensor.inner();
        if p.device() != device {
            p = p.to_device(&device);
        }
        // Zeros derived from the gradient, not made on `device`: burn-dispatch tags every
        // tensor with its autodiff checkpointing strategy and refuses to mix tags, and a tensor
        // made on a bare device (`zeros`, `zeros_like`) is untagged. (A non-finite gradient
        // makes the moments non-finite either way.)
        let mut prev = self.opt.state.remove(&id).unwrap_or_else(|| Moments {
            exp_avg: g.clone() * 0.0,
            exp_avg_sq: g.clone() * 0.0,
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

/// A moment tensor's values on the host.
fn host<I: Backend>(t: &Tensor<I, 1>) -> HostTensor {
    HostTensor {
        shape: vec![t.dims()[0]],
        data: t
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoDecayRule;
    use crate::device::DeviceSpec;
    use crate::engine::data_parallel::multi_gradients;
    use burn::nn::Linear;

    type B = crate::RunBackend;
    type I = <B as AutodiffBackend>::InnerBackend;

    fn optim_config(clip_grad: Option<f64>) -> OptimConfig {
        OptimConfig {
            blr: 1e-3,
            lr: None,
            weight_decay: 0.05,
            betas: [0.9, 0.999],
            eps: 1e-8,
            no_decay: NoDecayRule::Official,
            clip_grad,
        }
    }

    /// A Linear(3 -> 2) with the weights of `seed`, and the gradients of a loss over `rows`
    /// of a fixed input.
    fn model_and_grads(
        device: &burn::DispatchDevice,
        rows: std::ops::Range<usize>,
    ) -> (Linear<B>, GradientsParams) {
        let mut init = crate::init::HostInit::new(7);
        let model: Linear<B> = init.linear(3, 2, device);
        let grads = grads_of(&model, device, rows);
        (model, grads)
    }

    fn grads_of(
        model: &Linear<B>,
        device: &burn::DispatchDevice,
        rows: std::ops::Range<usize>,
    ) -> GradientsParams {
        let x = Tensor::<B, 2>::from_floats(
            [[1.0, -2.0, 3.0], [0.5, 4.0, -1.0], [2.0, 0.0, -3.0]],
            device,
        )
        .slice([rows, 0..3]);
        let loss = (model.forward(x).powi_scalar(2) * 0.5).sum();
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn flat(t: Tensor<I, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// The gradients as torch's clip_grad_norm_ sees them: every element of every parameter.
    fn weight_and_bias_grads(model: &Linear<B>, grads: &GradientsParams) -> (Vec<f32>, Vec<f32>) {
        let w = grads.get::<I, 2>(model.weight.id).unwrap();
        let b = grads.get::<I, 1>(model.bias.as_ref().unwrap().id).unwrap();
        (flat(w.reshape([6])), flat(b))
    }

    fn first_moment(opt: &AdamW<B>, id: ParamId) -> Vec<f32> {
        flat(opt.state[&id].exp_avg.clone())
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    /// After one step the first moment is (1 - beta1) x the gradient the update used, so it
    /// shows the clipping: every gradient scaled by max_norm / (global norm + 1e-6) when the
    /// global norm is larger, untouched otherwise.
    #[test]
    fn clip_grad_scales_every_gradient_by_the_global_norm() {
        let device = DeviceSpec::Flex.train_device().unwrap();
        let (model, grads) = model_and_grads(&device, 0..3);
        let (gw, gb) = weight_and_bias_grads(&model, &grads);
        let norm = gw.iter().chain(&gb).map(|g| g * g).sum::<f32>().sqrt();
        let ids = |m: &Linear<B>| (m.weight.id, m.bias.as_ref().unwrap().id);
        for max_norm in [0.5 * norm as f64, 2.0 * norm as f64] {
            let (model, grads) = model_and_grads(&device, 0..3);
            let (w, b) = ids(&model);
            let mut opt = AdamW::<B>::new(&optim_config(Some(max_norm)), &model);
            let _ = opt.step(1e-3, model, grads);
            let seen = opt.last_grad_norm.clone().unwrap().into_scalar();
            assert!((seen - norm).abs() < 1e-4 * norm, "{seen} vs {norm}");
            let coef = (max_norm as f32 / (norm + 1e-6)).min(1.0);
            let expect = |g: &[f32]| g.iter().map(|g| 0.1 * g * coef).collect::<Vec<_>>();
            assert_close(&first_moment(&opt, w), &expect(&gw), 1e-5);
            assert_close(&first_moment(&opt, b), &expect(&gb), 1e-5);
        }
        let (model, grads) = model_and_grads(&device, 0..3);
        let (w, _) = ids(&model);
        let mut opt = AdamW::<B>::new(&optim_config(None), &model);
        let _ = opt.step(1e-3, model, grads);
        assert!(opt.last_grad_norm.is_none());
        let unclipped = |g: &[f32]| g.iter().map(|g| 0.1 * g).collect::<Vec<_>>();
        assert_close(&first_moment(&opt, w), &unclipped(&gw), 1e-5);
    }

    /// Data parallel: the norm is that of the gradients summed over the devices, not of each
    /// device's share, so the clipped step equals the one-device clipped step.
    #[test]
    fn clip_grad_takes_the_norm_of_the_summed_data_parallel_gradients() {
        let device = DeviceSpec::Flex.train_device().unwrap();
        let (model, whole) = model_and_grads(&device, 0..3);
        let (gw, gb) = weight_and_bias_grads(&model, &whole);
        let norm = gw.iter().chain(&gb).map(|g| g * g).sum::<f32>().sqrt();
        let max_norm = 0.25 * norm as f64;
        let mut one = AdamW::<B>::new(&optim_config(Some(max_norm)), &model);
        let stepped_one = one.step(1e-3, model, whole);

        let (model, first) = model_and_grads(&device, 0..2);
        let second = grads_of(&model, &device, 2..3);
        let mut two = AdamW::<B>::new(&optim_config(Some(max_norm)), &model);
        let multi = multi_gradients([first, second], &[device.clone(), device.clone()]);
        let stepped_two = two.step_multi(1e-3, model, multi);

        let seen = two.last_grad_norm.clone().unwrap().into_scalar();
        assert!((seen - norm).abs() < 1e-4 * norm, "{seen} vs {norm}");
        let w = |m: &Linear<B>| flat(m.weight.val().inner().reshape([6]));
        assert_close(&w(&stepped_two), &w(&stepped_one), 1e-6);
        assert_close(
            &first_moment(&two, stepped_two.weight.id),
            &first_moment(&one, stepped_one.weight.id),
            1e-6,
        );
    }
}
