//! The gradients of one optimiser step summed over the process group in one call.
//!
//! burn names parameters by `ParamId`s that are random in each process, so the ranks order
//! them by their checkpoint names instead: every parameter's gradient (summed over this
//! process's devices first) goes into one flat buffer in name order, the buffer is summed over
//! the ranks, and each parameter's slice comes back as its gradient, on the device that held
//! this process's first shard, where AdamW then updates it.
use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::GradientSync;
use crate::error::Result;

/// Sum `grads` (one per local device, each `module`'s gradients) over this process's devices
/// and then over the ranks with `sync`; `what` names the sum in a time-out's message.
pub fn all_reduce<B, M>(
    sync: &dyn GradientSync,
    module: &M,
    mut grads: Vec<GradientsParams>,
    what: &str,
) -> Result<GradientsParams>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut take = Take::<B::InnerBackend> {
        grads: &mut grads,
        taken: Vec::new(),
    };
    module.visit(&mut take);
    let mut taken = take.taken;
    let names: HashMap<ParamId, String> = crate::checkpoint::param_infos(module)
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    taken.sort_by(|a, b| names[&a.0].cmp(&names[&b.0]));
    let mut out = GradientsParams::new();
    let Some(device) = taken.first().map(|(_, g)| g.device()) else {
        return Ok(out); // nothing trainable: every rank skips the call alike
    };
    let lengths: Vec<(ParamId, usize)> = taken.iter().map(|(id, g)| (*id, g.dims()[0])).collect();
    let flat = Tensor::cat(taken.into_iter().map(|(_, g)| g).collect(), 0);
    let mut host = flat
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| crate::Error::Training(format!("reading the gradients for {what}: {e:?}")))?;
    sync.all_reduce_gradients(&mut host, what)?;
    let n = host.len();
    let summed = tagged_like_params(module, TensorData::new(host, [n])).to_device(&device);
    let mut start = 0;
    let mut parts = HashMap::new();
    for (id, len) in lengths {
        parts.insert(id, summed.clone().narrow(0, start, len));
        start += len;
    }
    module.visit(&mut Put::<B::InnerBackend> {
        parts,
        out: &mut out,
    });
    Ok(out)
}

/// `data` as an inner tensor made through the module's (autodiff) device: burn-dispatch tags
/// each tensor with its autodiff checkpointing strategy (`train.activation_checkpointing`) and
/// refuses to mix tags, and a tensor made on a bare inner device is untagged. Same memory and
/// copy as making it there.
fn tagged_like_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    data: TensorData,
) -> Tensor<B::InnerBackend, 1> {
    let device = module.devices().into_iter().next().unwrap_or_default();
    Tensor::<B, 1>::from_data(data, &device).inner()
}

/// Takes each parameter's gradients out of every device's set, summed on the first device
/// holding one, flattened.
struct Take<'a, I: Backend> {
    grads: &'a mut [GradientsParams],
    taken: Vec<(ParamId, Tensor<I, 1>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut sum: Option<Tensor<B::InnerBackend, D>> = None;
        for g in self.grads.iter_mut() {
            if let Some(t) = g.remove::<B::InnerBackend, D>(param.id) {
                sum = Some(match sum {
                    Some(s) => {
                        let t = t.to_device(&s.device());
                        s + t
                    }
                    None => t,
                });
            }
        }
        if let Some(s) = sum {
            let n = s.shape().num_elements();
            self.taken.push((param.id, s.reshape([n])));
        }
    }
}

/// Registers each summed slice as its parameter's gradient, in the parameter's shape.
struct Put<'a, I: Backend> {
    parts: HashMap<ParamId, Tensor<I, 1>>,
    out: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Put<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(flat) = self.parts.remove(&param.id) {
            let shape = param.val().shape();
            self.out
                .register::<B::InnerBackend, D>(param.id, flat.reshape(shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::tests::on_ranks;
    use crate::distributed::ProcessGroup;
    use burn::nn::Linear;
    use std::sync::Arc;

    type B = crate::RunBackend;
    type I = <B as AutodiffBackend>::InnerBackend;

    fn values(t: Tensor<I, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().unwrap()
    }

    /// Each rank's model has its own random ParamIds, as separate processes do; rank r's
    /// gradient of every parameter is its value times (r + 1) on one local device and half
    /// that on a second. The sum must come back per parameter whatever the ids.
    #[test]
    fn gradients_are_summed_over_devices_and_ranks() {
        let device = crate::device::DeviceSpec::Flex.train_device().unwrap();
        let shared: Linear<B> = crate::init::HostInit::new(7).linear(4, 3, &device);
        let expected = [values(shared.weight.val().inner()), {
            let b = shared.bias.as_ref().unwrap().val().inner();
            values(b.unsqueeze::<2>())
        }];
        let sums = on_ranks(3, |g| {
            let mut model: Linear<B> = shared.clone();
            model.weight = Param::from_tensor(shared.weight.val());
            model.bias = Some(Param::from_tensor(shared.bias.as_ref().unwrap().val()));
            let bias = model.bias.as_ref().unwrap();
            let scale = (g.rank() + 1) as f32;
            let per_device = |k: f32| {
                let mut gp = GradientsParams::new();
                gp.register::<I, 2>(model.weight.id, model.weight.val().inner() * (scale * k));
                gp.register::<I, 1>(bias.id, bias.val().inner() * (scale * k));
                gp
            };
            let grads = vec![per_device(1.0), per_device(0.5)];
            let sync = crate::distributed::HostSync(Arc::new(g.clone()));
            let mut out = all_reduce(&sync, &model, grads, "test").unwrap();
            [
                values(
                    out.remove::<I, 2>(model.weight.id)
                        .expect("the weight's gradient"),
                ),
                values(
                    out.remove::<I, 1>(bias.id)
                        .expect("the bias's")
                        .unsqueeze::<2>(),
                ),
            ]
        });
        // The sum over ranks of (r + 1) * 1.5 is 9.
        for s in sums {
            for (got, want) in s.iter().zip(&expected) {
                assert_eq!(got.len(), want.len());
                for (a, w) in got.iter().zip(want) {
                    assert!(
                        (a - 9.0 * w).abs() <= 1e-6 * w.abs().max(1.0),
                        "{a} vs {}",
                        9.0 * w
                    );
                }
            }
        }
    }
}
