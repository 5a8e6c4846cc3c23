//! The MAE network (numerics §1.2, §0.5). Field names are the official checkpoint keys.
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use pixmim_core::init::HostInit;
use pixmim_core::masking::{gather_tokens, MaskTensors};
use pixmim_core::method_def::ModelConfig;
use pixmim_core::nn::{
    add_position, sincos_2d, Block, BlockConfig, MaeDecoder, MaeDecoderConfig, PatchEmbed,
    PosEmbedOrientation,
};
use pixmim_core::registry::Geometry;
use pixmim_core::traits::Autoencoder;
use pixmim_core::{Error, Result};

/// `[model]` of an MAE run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub decoder_embed_dim: usize,
    pub decoder_depth: usize,
    pub decoder_num_heads: usize,
    pub mlp_ratio: f64,
    /// `--norm_pix_loss`, on in every recommended run.
    pub norm_pix: bool,
    /// Sin-cos table orientation (numerics §0.3): `official` or `mm`.
    pub pos_embed: PosEmbedOrientation,
}

/// LayerNorm eps of every MAE block and norm (numerics §0.7).
const LN_EPS: f64 = 1e-6;

impl MaeConfig {
    /// ViT-B/16 with the 512-wide, 8-block decoder (`mae_vit_base_patch16_dec512d8b`).
    pub fn base() -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            decoder_embed_dim: 512,
            decoder_depth: 8,
            decoder_num_heads: 16,
            mlp_ratio: 4.0,
            norm_pix: true,
            pos_embed: PosEmbedOrientation::Official,
        }
    }

    /// ViT-L/16 (`mae_vit_large_patch16_dec512d8b`).
    pub fn large() -> Self {
        Self {
            embed_dim: 1024,
            depth: 24,
            num_heads: 16,
            ..Self::base()
        }
    }

    /// ViT-H/14 (`mae_vit_huge_patch14_dec512d8b`).
    pub fn huge() -> Self {
        Self {
            patch_size: 14,
            embed_dim: 1280,
            depth: 32,
            num_heads: 16,
            ..Self::base()
        }
    }

    /// CPU smoke runs and tests: 32 px, patch 4, 192 x 4 encoder, 128 x 2 decoder.
    pub fn tiny() -> Self {
        Self {
            img_size: 32,
            patch_size: 4,
            embed_dim: 192,
            depth: 4,
            num_heads: 3,
            decoder_embed_dim: 128,
            decoder_depth: 2,
            decoder_num_heads: 4,
            ..Self::base()
        }
    }

    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// The decoder these keys describe: over the encoder's output with its cls row.
    pub fn decoder(&self) -> MaeDecoderConfig {
        MaeDecoderConfig {
            in_dim: self.embed_dim,
            embed_dim: self.decoder_embed_dim,
            depth: self.decoder_depth,
            num_heads: self.decoder_num_heads,
            mlp_ratio: self.mlp_ratio,
            grid: self.grid(),
            out_dim: self.patch_size * self.patch_size * 3,
            cls_token: true,
            pos_embed: self.pos_embed,
            ln_eps: LN_EPS,
        }
    }
}

#[derive(Module, Debug)]
pub struct Mae<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    pub cls_token: Param<Tensor<B, 3>>,
    /// Frozen sin-cos table (1, 1 + L, D), cls row zero.
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
    /// `decoder_embed`, `mask_token`, ... under their official names at the top level.
    pub decoder: MaeDecoder<B>,
    pub patch_size: usize,
    pub norm_pix: bool,
}

impl<B: Backend> Mae<B> {
    /// Patch embedding + position (B, L, D), before masking.
    pub fn embed(&self, imgs: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patch_embed.forward(imgs);
        let [_, l, d] = x.dims();
        add_position(x, self.pos_embed.val().slice([0..1, 1..l + 1, 0..d]))
    }

    /// Embedded visible tokens with the cls token prepended: (B, 1 + len_keep, D), the input
    /// of the first encoder block (MFF reuses it).
    pub fn visible_tokens(&self, imgs: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3> {
        let x = gather_tokens(self.embed(imgs), mask.ids_keep.clone());
        let [b, _, d] = x.dims();
        let cls = (self.cls_token.val() + self.pos_embed.val().slice([0..1, 0..1, 0..d]))
            .expand([b, 1, d]);
        Tensor::cat(vec![cls, x], 1)
    }
}

impl<B: Backend> Autoencoder<B> for Mae<B> {
    fn target_patch_size(&self) -> usize {
        self.patch_size
    }
    fn norm_pix(&self) -> bool {
        self.norm_pix
    }
    /// Encoder output after the final norm: (B, 1 + len_keep, D), cls first, visible tokens
    /// in ascending-noise order.
    fn encode(&self, imgs: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3> {
        let mut x = self.visible_tokens(imgs, mask);
        for blk in &self.blocks {
            x = blk.forward(x);
        }
        self.norm.forward(x)
    }

    /// MAE's decoder with the cls row (numerics §0.5). -> (B, L, p*p*3)
    fn decode(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.decoder.forward(latent, ids_restore)
    }
    fn has_cls_token(&self) -> bool {
        true
    }
    fn with_drop_path(mut self, rate: f64) -> Self {
        pixmim_core::nn::vit::set_drop_path(&mut self.blocks, rate);
        self
    }
    fn with_precision(mut self, precision: pixmim_core::nn::Precision) -> Self {
        pixmim_core::nn::vit::set_precision(&mut self.blocks, precision);
        self.decoder.set_precision(precision);
        self
    }
}

/// The network as the registered method builds it (`pixmim_core::method_def`).
impl ModelConfig for MaeConfig {
    type Model<B: Backend> = Mae<B>;

    fn validate(&self) -> Result<()> {
        let e = |k: &str, m: String| Err(Error::config(format!("model.{k}"), m));
        pixmim_core::config::check_model_size(
            &[
                ("embed_dim", self.embed_dim),
                ("decoder_embed_dim", self.decoder_embed_dim),
            ],
            &[("depth", self.depth), ("decoder_depth", self.decoder_depth)],
            &[
                ("num_heads", self.num_heads),
                ("decoder_num_heads", self.decoder_num_heads),
            ],
            &[("mlp_ratio", self.mlp_ratio)],
        )?;
        if self.img_size == 0 {
            return e("img_size", "must be positive".into());
        }
        if self.patch_size == 0 {
            return e("patch_size", "must be positive".into());
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return e(
                "img_size",
                format!(
                    "{} is not divisible by patch_size {}",
                    self.img_size, self.patch_size
                ),
            );
        }
        let (d, h) = (self.embed_dim, self.num_heads);
        if h == 0 || d % h != 0 {
            return e(
                "num_heads",
                format!("width {d} is not divisible by {h} heads"),
            );
        }
        if d == 0 || d % 4 != 0 {
            return e(
                "embed_dim",
                format!("{d} must be a positive multiple of 4 (2-D sin-cos position embedding)"),
            );
        }
        self.decoder().validate()?;
        if self.depth == 0 {
            return e("depth", "must be at least 1".into());
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return e("mlp_ratio", "must be > 0".into());
        }
        Ok(())
    }

    fn geometry(&self) -> Result<Geometry> {
        Ok(Geometry::square(self.img_size, self.grid()))
    }

    /// Floats autodiff keeps per training image with `visible` patches kept: the patch
    /// embedding, the encoder over the visible tokens and cls, the decoder over every token,
    /// the prediction and the norm_pix loss ([`pixmim_core::memory`]).
    fn activation_floats_per_image(&self, visible: usize) -> Option<f64> {
        use pixmim_core::memory::vit_block_floats;
        let (l, p, d) = (self.grid() * self.grid(), self.patch_size, self.embed_dim);
        let pixels = (l * p * p * 3) as f64;
        let hidden = (d as f64 * self.mlp_ratio) as usize;
        let n = (visible + 1) as f64;
        let embed = 2.0 * pixels + 3.0 * (l * d) as f64 + 2.0 * n * d as f64;
        let encoder = self.depth as f64 * vit_block_floats(visible + 1, d, self.num_heads, hidden)
            + 2.0 * n * d as f64;
        // Prediction, patchified target, its normalisation, the squared error.
        let loss = 6.0 * pixels;
        Some(embed + encoder + self.decoder().activation_floats_per_image() + loss)
    }

    /// Build with the official initialisation (numerics §0.10), from `seed`.
    fn init<B: Backend>(&self, device: &B::Device, seed: u64) -> Mae<B> {
        let mut init = HostInit::new(seed);
        let g = self.grid();
        let p = self.patch_size;
        let frozen = |v: Vec<f32>, d: usize| {
            Param::from_tensor(Tensor::<B, 3>::from_data(
                TensorData::new(v, [1, g * g + 1, d]),
                device,
            ))
            .set_require_grad(false)
        };
        let enc = BlockConfig {
            dim: self.embed_dim,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            ln_eps: LN_EPS,
        };
        let d = self.embed_dim;
        // cls_token: N(0, 0.02) (numerics §0.10).
        let token = |v: Vec<f32>, d: usize| {
            Param::from_tensor(Tensor::<B, 3>::from_data(
                TensorData::new(v, [1, 1, d]),
                device,
            ))
        };
        let patch_embed = PatchEmbed::new(3, d, p, &mut init, device);
        let cls_token = token(init.normal(d, 0.02), d);
        let blocks = (0..self.depth)
            .map(|_| enc.init(&mut init, device))
            .collect();
        let decoder = self.decoder().init(&mut init, device);
        Mae {
            patch_embed,
            cls_token,
            pos_embed: frozen(sincos_2d(d, g, g, true, self.pos_embed), d),
            blocks,
            norm: LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device),
            decoder,
            patch_size: p,
            norm_pix: self.norm_pix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use pixmim_core::checkpoint::param_infos;
    use pixmim_core::config::{NoDecayRule, OptimConfig};
    use pixmim_core::masking::{MaskBatch, RandomMasking};
    use pixmim_core::optim::adamw::skips_decay;
    use pixmim_core::optim::AdamW;
    use pixmim_core::traits::Corruption;
    use rand::SeedableRng;

    type B = burn::backend::Autodiff<burn::backend::NdArray>;

    fn tiny() -> MaeConfig {
        crate::presets::recipe("tiny").unwrap().model
    }

    #[test]
    fn layer_decay_follows_maes_param_groups() {
        let m = tiny().init::<B>(&Default::default(), 0);
        let infos = param_infos(&m);
        let scales = pixmim_core::eval::finetune::layer_decay_scales(&infos, 0.5);
        let scale = |name: &str| scales[&infos.iter().find(|p| p.name == name).unwrap().id];
        // depth 4: layers 0 (embeddings) .. 4 (last block), 5 = top (norm, head).
        for (name, layer) in [
            ("cls_token", 0),
            ("patch_embed.proj.weight", 0),
            ("blocks.0.attn.qkv.weight", 1),
            ("blocks.3.mlp.fc2.bias", 4),
            ("norm.weight", 5),
        ] {
            assert_eq!(scale(name), 0.5f64.powi(5 - layer), "{name}");
        }
    }

    #[test]
    fn drop_path_drops_whole_samples_and_is_off_by_default() {
        let m = tiny().init::<B>(&Default::default(), 0);
        assert!(m.blocks.iter().all(|b| b.drop_path == 0.0));
        let m = m.with_drop_path(0.3);
        for (b, want) in m.blocks.iter().zip([0.0, 0.1, 0.2, 0.3]) {
            assert!(
                (b.drop_path - want).abs() < 1e-12,
                "{} vs {want}",
                b.drop_path
            );
        }
        assert!(m.decoder.decoder_blocks.iter().all(|b| b.drop_path == 0.0));
    }

    #[test]
    fn no_decay_sets_follow_timm_and_mmengine() {
        let m = tiny().init::<B>(&Default::default(), 0);
        let infos = param_infos(&m);
        let rule = |r: NoDecayRule, name: &str| {
            let p = infos
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name}"));
            skips_decay(r, p)
        };
        for (name, official, mm) in [
            ("cls_token", false, true),
            ("mask_token", false, true),
            ("blocks.0.attn.qkv.weight", false, false),
            ("blocks.0.attn.qkv.bias", true, true),
            ("blocks.0.norm1.weight", true, true),
            ("norm.bias", true, true),
            ("decoder_norm.weight", true, true),
            ("patch_embed.proj.weight", false, false),
            ("patch_embed.proj.bias", true, true),
        ] {
            assert_eq!(
                rule(NoDecayRule::Official, name),
                official,
                "official {name}"
            );
            assert_eq!(rule(NoDecayRule::Mm, name), mm, "mm {name}");
        }
        let frozen: Vec<_> = infos
            .iter()
            .filter(|p| !p.require_grad)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(frozen, vec!["pos_embed", "decoder_pos_embed"]);
    }

    #[test]
    fn loss_falls_on_a_fixed_batch() {
        let dev = Default::default();
        let mut m = tiny().init::<B>(&dev, 1);
        let cfg = OptimConfig {
            blr: 1.0,
            lr: None,
            weight_decay: 0.05,
            betas: [0.9, 0.95],
            eps: 1e-8,
            no_decay: NoDecayRule::Official,
            clip_grad: None,
        };
        let mut opt = AdamW::<B>::new(&cfg, &m);
        let imgs = Tensor::<B, 4>::random(
            [4, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let masks: MaskBatch = RandomMasking::new(0.75, 64)
            .unwrap()
            .sample(4, &mut rand::rngs::StdRng::seed_from_u64(0));
        let mask = masks.to_tensors::<B>(&dev);
        let mut losses = vec![];
        for _ in 0..15 {
            let pred = m.forward(imgs.clone(), &mask);
            let loss = m.loss(pred, imgs.clone(), mask.mask.clone());
            losses.push(loss.clone().into_scalar());
            let g = GradientsParams::from_grads(loss.backward(), &m);
            m = opt.step(1e-3, m, g);
        }
        assert!(losses[14] < 0.7 * losses[0], "{losses:?}");
    }

    #[test]
    fn bad_model_configs_name_the_key() {
        let mut c = tiny();
        c.img_size = 30;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.img_size"));
        let mut c = tiny();
        c.num_heads = 5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.num_heads"));
        let mut c = tiny();
        c.decoder_embed_dim = 130;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.decoder"));
    }
}
