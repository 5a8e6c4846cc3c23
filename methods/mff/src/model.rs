//! The MFF network (numerics §4.1): MAE plus one Linear projection per fused layer except the last,
//! and `proj_weights` (6, 1, 1, 1) initialised to ones; latent = LN(Σ softmax(w)_k · f_k) over
//! all tokens including cls. Decoder, target and loss are MAE's.
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use pixmim_core::init::HostInit;
use pixmim_core::masking::MaskTensors;
use pixmim_core::method_def::ModelConfig;
use pixmim_core::nn::LinearRows;
use pixmim_core::registry::Geometry;
use pixmim_core::traits::Autoencoder;
use pixmim_core::{Error, Result};
use pixmim_mae::{Mae, MaeConfig};

/// `[model]` of an MFF run: MAE's keys plus `out_indices`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MffConfig {
    /// 0-based encoder blocks whose outputs are fused; the last is used as is.
    pub out_indices: Vec<usize>,
    #[serde(flatten)]
    pub mae: MaeConfig,
}

#[derive(Module, Debug)]
pub struct Mff<B: Backend> {
    pub mae: Mae<B>,
    pub proj_layers: Vec<Linear<B>>,
    /// Fusion logits (k, 1, 1, 1); the weights are their softmax.
    pub proj_weights: Param<Tensor<B, 4>>,
    pub out_indices: Vec<usize>,
}

impl<B: Backend> Mff<B> {
    /// softmax(proj_weights), the fusion weights.
    pub fn fusion_weights(&self) -> Tensor<B, 1> {
        let k = self.out_indices.len();
        softmax(self.proj_weights.val().reshape([k]), 0)
    }
}

impl<B: Backend> Autoencoder<B> for Mff<B> {
    fn target_patch_size(&self) -> usize {
        self.mae.patch_size
    }
    fn norm_pix(&self) -> bool {
        self.mae.norm_pix
    }
    /// Fused, normalised latent (B, 1 + len_keep, D).
    fn encode(&self, imgs: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3> {
        let m = &self.mae;
        let mut x = m.visible_tokens(imgs, mask);
        let w = self.fusion_weights();
        let k = self.out_indices.len();
        let mut fused: Option<Tensor<B, 3>> = None;
        let mut slot = 0;
        for (i, blk) in m.blocks.iter().enumerate() {
            x = blk.forward(x);
            if slot < k && self.out_indices[slot] == i {
                let f = if slot + 1 < k {
                    self.proj_layers[slot].forward_rows(x.clone())
                } else {
                    x.clone()
                };
                let term = f * w.clone().narrow(0, slot, 1).reshape([1, 1, 1]);
                fused = Some(match fused {
                    Some(acc) => acc + term,
                    None => term,
                });
                slot += 1;
            }
        }
        m.norm
            .forward(fused.expect("validated: at least one out index"))
    }
    /// MAE's decoder on the fused latent.
    fn decode(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.mae.decode(latent, ids_restore)
    }
    fn has_cls_token(&self) -> bool {
        true
    }
    fn with_drop_path(mut self, rate: f64) -> Self {
        pixmim_core::nn::vit::set_drop_path(&mut self.mae.blocks, rate);
        self
    }
    fn with_precision(mut self, precision: pixmim_core::nn::Precision) -> Self {
        self.mae = self.mae.with_precision(precision);
        self
    }
    /// The fusion weights, as mmpretrain logs them (`weight_0..k`).
    fn metrics(&self) -> Vec<(String, f64)> {
        let w: Vec<f32> = self
            .fusion_weights()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        w.iter()
            .enumerate()
            .map(|(i, v)| (format!("weight_{i}"), *v as f64))
            .collect()
    }
}

/// The network as the registered method builds it (`pixmim_core::method_def`).
impl ModelConfig for MffConfig {
    type Model<B: Backend> = Mff<B>;

    /// `out_indices` is MFF's; the other keys are MAE's, parsed and checked by MAE's config.
    fn from_table(t: &toml::Table) -> Result<Self> {
        let mut mae_part = t.clone();
        let out = mae_part
            .remove("out_indices")
            .ok_or_else(|| Error::config("model.out_indices", "is missing"))?;
        let out_indices: Vec<usize> = out.try_into().map_err(|e: toml::de::Error| {
            Error::config("model.out_indices", e.message().to_string())
        })?;
        let c = Self {
            out_indices,
            mae: MaeConfig::from_table(&mae_part)?,
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let d = self.mae.depth;
        if self.out_indices.is_empty() {
            return Err(Error::config(
                "model.out_indices",
                "needs at least one block",
            ));
        }
        if self.out_indices.windows(2).any(|w| w[0] >= w[1])
            || *self.out_indices.last().unwrap() >= d
        {
            return Err(Error::config(
                "model.out_indices",
                format!(
                    "must be strictly increasing block indices below depth {d}, got {:?}",
                    self.out_indices
                ),
            ));
        }
        Ok(())
    }

    fn geometry(&self) -> Result<Geometry> {
        self.mae.geometry()
    }
    fn activation_floats_per_image(&self, visible: usize) -> Option<f64> {
        // MAE's, plus each fused layer's projection and its weighted copy.
        let fused = 2.0 * (self.out_indices.len() * (visible + 1) * self.mae.embed_dim) as f64;
        Some(self.mae.activation_floats_per_image(visible)? + fused)
    }
    fn init<B: Backend>(&self, device: &B::Device, seed: u64) -> Mff<B> {
        let mae = self.mae.init::<B>(device, seed);
        // Separate stream for the extra layers so the MAE part matches MAE's init for a seed.
        let mut init = HostInit::new(seed ^ 0x004D_4646);
        let d = self.mae.embed_dim;
        let k = self.out_indices.len();
        let proj_layers = (0..k - 1).map(|_| init.linear(d, d, device)).collect();
        let proj_weights = Param::from_tensor(Tensor::ones([k, 1, 1, 1], device));
        // A single fused layer has nothing to weigh: mmpretrain freezes the weight then.
        let proj_weights = if k == 1 {
            proj_weights.set_require_grad(false)
        } else {
            proj_weights
        };
        Mff {
            mae,
            proj_layers,
            proj_weights,
            out_indices: self.out_indices.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use pixmim_core::config::{NoDecayRule, OptimConfig};
    use pixmim_core::masking::RandomMasking;
    use pixmim_core::optim::AdamW;
    use pixmim_core::traits::Corruption;
    use rand::SeedableRng;

    type B = burn::backend::Autodiff<burn::backend::NdArray>;

    fn tiny() -> MffConfig {
        crate::presets::recipe("tiny").unwrap().model
    }

    #[test]
    fn fusion_weights_start_uniform_sum_to_one_and_learn() {
        let dev = Default::default();
        let mut m = tiny().init::<B>(&dev, 0);
        let k = m.out_indices.len();
        let w: Vec<f32> = m.fusion_weights().into_data().to_vec().unwrap();
        assert!(w.iter().all(|&v| (v - 1.0 / k as f32).abs() < 1e-7));
        let cfg = OptimConfig {
            blr: 1.0,
            lr: None,
            weight_decay: 0.05,
            betas: [0.9, 0.95],
            eps: 1e-8,
            no_decay: NoDecayRule::Mm,
            clip_grad: None,
        };
        let mut opt = AdamW::<B>::new(&cfg, &m);
        let imgs = Tensor::<B, 4>::random(
            [2, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let mask = RandomMasking::new(0.75, 64)
            .unwrap()
            .sample(2, &mut rand::rngs::StdRng::seed_from_u64(1))
            .to_tensors::<B>(&dev);
        for _ in 0..3 {
            let loss = m.loss(
                m.forward(imgs.clone(), &mask),
                imgs.clone(),
                mask.mask.clone(),
            );
            let g = GradientsParams::from_grads(loss.backward(), &m);
            m = opt.step(1e-2, m, g);
        }
        let w: Vec<f32> = m.fusion_weights().into_data().to_vec().unwrap();
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(
            w.iter().any(|&v| (v - 1.0 / k as f32).abs() > 1e-4),
            "weights never moved: {w:?}"
        );
        let metrics = m.metrics();
        assert_eq!(metrics.len(), k);
        assert_eq!(metrics[0].0, "weight_0");
    }

    #[test]
    fn one_fused_layer_is_plain_mae() {
        let dev = Default::default();
        let mut c = tiny();
        c.out_indices = vec![c.mae.depth - 1];
        let mff = c.init::<B>(&dev, 3);
        let mae = c.mae.init::<B>(&dev, 3);
        let imgs =
            Tensor::<B, 4>::random([1, 3, 32, 32], burn::tensor::Distribution::Default, &dev);
        let mask = RandomMasking::new(0.75, 64)
            .unwrap()
            .sample(1, &mut rand::rngs::StdRng::seed_from_u64(2))
            .to_tensors::<B>(&dev);
        let diff: f32 = (mff.forward(imgs.clone(), &mask) - mae.forward(imgs, &mask))
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn out_indices_are_validated() {
        let mut t = toml::Table::try_from(crate::presets::recipe("tiny").unwrap().model).unwrap();
        t.insert(
            "out_indices".into(),
            toml::Value::Array(vec![2.into(), 1.into()]),
        );
        assert!(MffConfig::from_table(&t)
            .unwrap_err()
            .to_string()
            .contains("model.out_indices"));
        t.insert(
            "out_indices".into(),
            toml::Value::Array(vec![0.into(), 9.into()]),
        );
        assert!(MffConfig::from_table(&t).is_err());
    }
}
