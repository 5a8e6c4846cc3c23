//! The ConvMAE network (numerics §3.2). Field names follow `models_convmae.py`.
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cblock::{CBlock, CONV_LN_EPS};
use pixmim_core::init::HostInit;
use pixmim_core::masking::{gather_tokens, MaskTensors};
use pixmim_core::method_def::ModelConfig;
use pixmim_core::nn::activation::gelu;
use pixmim_core::nn::{
    add_position, sincos_2d, Block, BlockConfig, LinearRows, MaeDecoder, MaeDecoderConfig,
    PatchEmbed, PosEmbedOrientation,
};
use pixmim_core::registry::Geometry;
use pixmim_core::traits::Autoencoder;
use pixmim_core::{Error, Result};

/// LayerNorm eps of the transformer stage and decoder (numerics §0.7).
const LN_EPS: f64 = 1e-6;

/// `[model]` of a ConvMAE run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvMaeConfig {
    pub img_size: usize,
    /// Patch size of each stage (4, 2, 2): the total, 16, is the mask and target patch.
    pub patch_size: [usize; 3],
    pub embed_dim: [usize; 3],
    pub depth: [usize; 3],
    /// Heads of the transformer stage.
    pub num_heads: usize,
    pub mlp_ratio: [f64; 3],
    pub decoder_embed_dim: usize,
    pub decoder_depth: usize,
    pub decoder_num_heads: usize,
    pub norm_pix: bool,
    pub pos_embed: PosEmbedOrientation,
}

/// A patch-embed stage: conv (kernel = stride) -> LayerNorm over channels -> GELU.
#[derive(Module, Debug)]
pub struct StageEmbed<B: Backend> {
    pub proj: pixmim_core::nn::patch_embed::ConvProj<B>,
    pub norm: LayerNorm<B>,
    pub patch_size: usize,
}

impl<B: Backend> StageEmbed<B> {
    fn new(pe: PatchEmbed<B>, dim: usize, device: &B::Device) -> Self {
        Self {
            proj: pe.proj,
            norm: LayerNormConfig::new(dim)
                .with_epsilon(CONV_LN_EPS)
                .init(device),
            patch_size: pe.patch_size,
        }
    }
    /// (B, C, H, W) -> (B, H/p, W/p, D), channels last.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, _, h, w] = x.dims();
        let p = self.patch_size;
        let pe = PatchEmbed {
            proj: self.proj.clone(),
            patch_size: p,
        };
        let y = pe.forward(x);
        let [_, _, d] = y.dims();
        gelu(self.norm.forward(y.reshape([b, h / p, w / p, d])))
    }
}

impl ConvMaeConfig {
    /// ConvMAE-Base (`convmae_convvit_base_patch16_dec512d8b`): conv 256 x 2, conv 384 x 2,
    /// ViT 768 x 11, MAE's 512 x 8 decoder.
    pub fn base() -> Self {
        Self {
            img_size: 224,
            patch_size: [4, 2, 2],
            embed_dim: [256, 384, 768],
            depth: [2, 2, 11],
            num_heads: 12,
            mlp_ratio: [4.0, 4.0, 4.0],
            decoder_embed_dim: 512,
            decoder_depth: 8,
            decoder_num_heads: 16,
            norm_pix: true,
            pos_embed: PosEmbedOrientation::Official,
        }
    }

    /// CPU runs: 32 px, patches 2/2/2 (mask and target cells of 8 px, 4x4 grid).
    pub fn tiny() -> Self {
        Self {
            img_size: 32,
            patch_size: [2, 2, 2],
            embed_dim: [32, 48, 96],
            depth: [1, 1, 2],
            num_heads: 3,
            decoder_embed_dim: 64,
            decoder_depth: 1,
            decoder_num_heads: 4,
            ..Self::base()
        }
    }

    /// Total downsampling = mask cell and target patch size.
    pub fn total_patch(&self) -> usize {
        self.patch_size.iter().product()
    }

    pub fn grid(&self) -> usize {
        self.img_size / self.total_patch()
    }

    /// MAE's decoder over the transformer stage's output, without a cls token; its MLP ratio
    /// is the first stage's, as in `models_convmae.py`.
    pub fn decoder(&self) -> MaeDecoderConfig {
        let tp = self.total_patch();
        MaeDecoderConfig {
            in_dim: self.embed_dim[2],
            embed_dim: self.decoder_embed_dim,
            depth: self.decoder_depth,
            num_heads: self.decoder_num_heads,
            mlp_ratio: self.mlp_ratio[0],
            grid: self.grid(),
            out_dim: tp * tp * 3,
            cls_token: false,
            pos_embed: self.pos_embed,
            ln_eps: LN_EPS,
        }
    }
}

#[derive(Module, Debug)]
pub struct ConvMae<B: Backend> {
    pub patch_embed1: StageEmbed<B>,
    pub patch_embed2: StageEmbed<B>,
    pub patch_embed3: StageEmbed<B>,
    pub patch_embed4: Linear<B>,
    /// Frozen (1, L, D), no cls token.
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks1: Vec<CBlock<B>>,
    pub blocks2: Vec<CBlock<B>>,
    pub blocks3: Vec<Block<B>>,
    pub stage1_output_decode: PatchEmbed<B>,
    pub stage2_output_decode: PatchEmbed<B>,
    pub norm: LayerNorm<B>,
    /// `decoder_embed`, `mask_token`, ... under their official names at the top level.
    pub decoder: MaeDecoder<B>,
    /// Nearest-neighbour factors from the mask grid to stages 1 and 2 (4 and 2 for base).
    pub upsample: [usize; 2],
    pub target_patch: usize,
    pub norm_pix: bool,
}

/// Nearest-neighbour upsampling of a (B, G*G) mask to a (B, G*f, G*f, 1) visibility map,
/// 1 = visible: M[b, f*i + a, f*j + c] = mask[b, G*i + j] (numerics §3.2).
pub fn visibility<B: Backend>(mask: Tensor<B, 2>, grid: usize, f: usize) -> Tensor<B, 4> {
    let [b, _] = mask.dims();
    let vis = mask.neg() + 1.0;
    vis.reshape([b, grid, 1, grid, 1])
        .expand([b, grid, f, grid, f])
        .reshape([b, grid * f, grid * f, 1])
}

impl<B: Backend> Autoencoder<B> for ConvMae<B> {
    fn target_patch_size(&self) -> usize {
        self.target_patch
    }
    fn norm_pix(&self) -> bool {
        self.norm_pix
    }
    /// Encoder output after fusion and norm: (B, len_keep, D), visible tokens in
    /// ascending-noise order (no cls token).
    fn encode(&self, imgs: Tensor<B, 4>, mask: &MaskTensors<B>) -> Tensor<B, 3> {
        let [b, _, h, _] = imgs.dims();
        let g = h / self.target_patch;
        let nchw = |x: Tensor<B, 4>| x.permute([0, 3, 1, 2]);
        let v1 = visibility(mask.mask.clone(), g, self.upsample[0]);
        let v2 = visibility(mask.mask.clone(), g, self.upsample[1]);
        let mut x = self.patch_embed1.forward(imgs);
        for blk in &self.blocks1 {
            x = blk.forward(x, v1.clone());
        }
        let s1 = self.stage1_output_decode.forward(nchw(x.clone()));
        let mut x = self.patch_embed2.forward(nchw(x));
        for blk in &self.blocks2 {
            x = blk.forward(x, v2.clone());
        }
        let s2 = self.stage2_output_decode.forward(nchw(x.clone()));
        let x = self.patch_embed3.forward(nchw(x));
        let [_, _, _, d] = x.dims();
        let x = add_position(
            self.patch_embed4.forward_rows(x.reshape([b, g * g, d])),
            self.pos_embed.val(),
        );
        let keep = mask.ids_keep.clone();
        let mut x = gather_tokens(x, keep.clone());
        for blk in &self.blocks3 {
            x = blk.forward(x);
        }
        // Multi-scale fusion: summed after the transformer, then the final norm (§3.2 step 10).
        let x = x + gather_tokens(s1, keep.clone()) + gather_tokens(s2, keep);
        self.norm.forward(x)
    }

    /// MAE's decoder without a cls token. -> (B, L, p*p*3)
    fn decode(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.decoder.forward(latent, ids_restore)
    }
    fn has_cls_token(&self) -> bool {
        false
    }
    /// The official fine-tuning spreads the rates over all three stages; here the
    /// convolutional stages do not drop, and the transformer stage takes the upper part of
    /// that ramp (a simplification, docs/evaluation.md).
    fn with_drop_path(mut self, rate: f64) -> Self {
        let total = self.blocks1.len() + self.blocks2.len() + self.blocks3.len();
        let rates = pixmim_core::nn::vit::drop_path_rates(rate, total);
        let first = total - self.blocks3.len();
        for (blk, r) in self.blocks3.iter_mut().zip(&rates[first..]) {
            blk.drop_path = *r;
        }
        self
    }
    /// The transformer stage and the decoder; the convolutional stages stay f32.
    fn with_precision(mut self, precision: pixmim_core::nn::Precision) -> Self {
        pixmim_core::nn::vit::set_precision(&mut self.blocks3, precision);
        self.decoder.set_precision(precision);
        self
    }
}

/// The network as the registered method builds it (`pixmim_core::method_def`).
impl ModelConfig for ConvMaeConfig {
    type Model<B: Backend> = ConvMae<B>;

    fn validate(&self) -> Result<()> {
        let e = |k: &str, m: String| Err(Error::config(format!("model.{k}"), m));
        let [w0, w1, w2] = self.embed_dim;
        let [d0, d1, d2] = self.depth;
        let [r0, r1, r2] = self.mlp_ratio;
        pixmim_core::config::check_model_size(
            &[
                ("embed_dim[0]", w0),
                ("embed_dim[1]", w1),
                ("embed_dim[2]", w2),
                ("decoder_embed_dim", self.decoder_embed_dim),
            ],
            &[
                ("depth[0]", d0),
                ("depth[1]", d1),
                ("depth[2]", d2),
                ("decoder_depth", self.decoder_depth),
            ],
            &[
                ("num_heads", self.num_heads),
                ("decoder_num_heads", self.decoder_num_heads),
            ],
            &[
                ("mlp_ratio[0]", r0),
                ("mlp_ratio[1]", r1),
                ("mlp_ratio[2]", r2),
            ],
        )?;
        if self.img_size == 0 {
            return e("img_size", "must be positive".into());
        }
        if self.patch_size.contains(&0) {
            return e("patch_size", "sizes must be positive".into());
        }
        // Their product is the total patch; each within the largest image keeps it from
        // overflowing.
        if self
            .patch_size
            .iter()
            .any(|&p| p > pixmim_core::component::MAX_IMAGE_SIDE)
        {
            return e(
                "patch_size",
                format!(
                    "{:?}: each stage's patch must be at most {}",
                    self.patch_size,
                    pixmim_core::component::MAX_IMAGE_SIDE
                ),
            );
        }
        if !self.img_size.is_multiple_of(self.total_patch()) {
            return e(
                "img_size",
                format!(
                    "{} is not divisible by the total patch {}",
                    self.img_size,
                    self.total_patch()
                ),
            );
        }
        if self.num_heads == 0 || !self.embed_dim[2].is_multiple_of(self.num_heads) {
            return e(
                "num_heads",
                format!(
                    "width {} is not divisible by {} heads",
                    self.embed_dim[2], self.num_heads
                ),
            );
        }
        if !self.embed_dim[2].is_multiple_of(4) {
            return e(
                "embed_dim",
                "the transformer stage's width must be a multiple of 4".into(),
            );
        }
        self.decoder().validate()?;
        if self.depth[2] == 0 {
            return e(
                "depth",
                "the transformer stage needs at least one block".into(),
            );
        }
        Ok(())
    }

    fn geometry(&self) -> Result<Geometry> {
        Ok(Geometry::square(self.img_size, self.grid()))
    }

    /// Floats autodiff keeps per training image with `visible` of the grid's cells kept
    /// ([`pixmim_core::memory`]): the two convolutional stages run densely on their full maps
    /// (a conv block keeps about 22 copies of its map: two LayerNorms, the 1x1 convolutions,
    /// the masked product, the depthwise convolution and its layout copies, the 4x MLP before
    /// and after GELU; fitted to measured peaks like the ViT blocks'), then
    /// MAE's transformer stage on the visible tokens and its decoder on every cell.
    fn activation_floats_per_image(&self, visible: usize) -> Option<f64> {
        use pixmim_core::memory::vit_block_floats;
        let [p1, p2, _] = self.patch_size;
        let [d1, d2, d3] = self.embed_dim;
        let (g, tp) = (self.grid(), self.total_patch());
        let l = g * g;
        let map1 = ((self.img_size / p1).pow(2) * d1) as f64;
        let map2 = ((self.img_size / (p1 * p2)).pow(2) * d2) as f64;
        let pixels = (self.img_size * self.img_size * 3) as f64;
        let hidden = |w: usize, r: f64| (w as f64 * r) as usize;
        // Each patch embed: conv output, LayerNorm in/out, GELU out.
        let embeds = 4.0 * (map1 + map2 + (l * d3) as f64) + 2.0 * pixels;
        let conv_stages = 22.0 * (self.depth[0] as f64 * map1 + self.depth[1] as f64 * map2);
        // Stage outputs at the grid, their gathered rows, patch_embed4 and the position add.
        let fusion = (6 * l * d3 + 4 * visible * d3) as f64;
        let stage3 = self.depth[2] as f64
            * vit_block_floats(visible, d3, self.num_heads, hidden(d3, self.mlp_ratio[2]));
        let decoder = self.decoder().activation_floats_per_image();
        let loss = 6.0 * (l * tp * tp * 3) as f64;
        Some(embeds + conv_stages + fusion + stage3 + decoder + loss)
    }

    fn init<B: Backend>(&self, device: &B::Device, seed: u64) -> ConvMae<B> {
        let mut init = HostInit::new(seed);
        let [p1, p2, p3] = self.patch_size;
        let [d1, d2, d3] = self.embed_dim;
        let g = self.grid();
        let pe1 = PatchEmbed::new_pytorch_default(3, d1, p1, &mut init, device);
        let pe2 = PatchEmbed::new_pytorch_default(d1, d2, p2, &mut init, device);
        // Only patch_embed3 gets xavier on its flattened weight (numerics §0.10).
        let pe3 = PatchEmbed::new(d2, d3, p3, &mut init, device);
        let blocks1 = (0..self.depth[0])
            .map(|_| CBlock::new(d1, self.mlp_ratio[0], &mut init, device))
            .collect();
        let blocks2 = (0..self.depth[1])
            .map(|_| CBlock::new(d2, self.mlp_ratio[1], &mut init, device))
            .collect();
        let enc = BlockConfig {
            dim: d3,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio[2],
            ln_eps: LN_EPS,
        };
        let blocks3 = (0..self.depth[2])
            .map(|_| enc.init(&mut init, device))
            .collect();
        let frozen = |v: Vec<f32>, d: usize| {
            Param::from_tensor(Tensor::<B, 3>::from_data(
                TensorData::new(v, [1, g * g, d]),
                device,
            ))
            .set_require_grad(false)
        };
        let patch_embed4 = init.linear(d3, d3, device);
        let stage1_output_decode =
            PatchEmbed::new_pytorch_default(d1, d3, p2 * p3, &mut init, device);
        let stage2_output_decode = PatchEmbed::new_pytorch_default(d2, d3, p3, &mut init, device);
        let decoder = self.decoder().init(&mut init, device);
        let tp = self.total_patch();
        ConvMae {
            patch_embed1: StageEmbed::new(pe1, d1, device),
            patch_embed2: StageEmbed::new(pe2, d2, device),
            patch_embed3: StageEmbed::new(pe3, d3, device),
            patch_embed4,
            pos_embed: frozen(sincos_2d(d3, g, g, false, self.pos_embed), d3),
            blocks1,
            blocks2,
            blocks3,
            stage1_output_decode,
            stage2_output_decode,
            norm: LayerNormConfig::new(d3).with_epsilon(LN_EPS).init(device),
            decoder,
            upsample: [p2 * p3, p3],
            target_patch: tp,
            norm_pix: self.norm_pix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmim_core::masking::{MaskBatch, RandomMasking};
    use pixmim_core::traits::Corruption;
    use rand::SeedableRng;

    type B = burn::backend::NdArray;

    fn tiny() -> ConvMaeConfig {
        crate::presets::recipe("tiny").unwrap().model
    }

    #[test]
    fn mask_upsampling_is_nearest_neighbour() {
        let dev = Default::default();
        let m = MaskBatch::from_noise(&[0.9, 0.1, 0.5, 0.3], 1, 4, 0.5); // removes patches 0 and 2
        let v: Vec<f32> = visibility(m.to_tensors::<B>(&dev).mask, 2, 4)
            .into_data()
            .to_vec()
            .unwrap();
        for y in 0..8 {
            for x in 0..8 {
                let cell = (y / 4) * 2 + x / 4;
                assert_eq!(v[y * 8 + x], 1.0 - m.mask[cell], "({y},{x})");
            }
        }
    }

    /// Spec §7.5: randomising the pixels under masked patches must not change what the
    /// encoder outputs for the visible tokens.
    #[test]
    fn masked_pixels_do_not_leak_into_visible_tokens() {
        let dev = Default::default();
        let cfg = tiny();
        let m = cfg.init::<B>(&dev, 0);
        let (s, p) = (cfg.img_size, cfg.total_patch());
        let g = s / p;
        let masks = RandomMasking::new(0.75, g * g)
            .unwrap()
            .sample(2, &mut rand::rngs::StdRng::seed_from_u64(4));
        let mt = masks.to_tensors::<B>(&dev);
        let imgs = Tensor::<B, 4>::random(
            [2, 3, s, s],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let noise = Tensor::<B, 4>::random(
            [2, 3, s, s],
            burn::tensor::Distribution::Normal(0.0, 5.0),
            &dev,
        );
        // pixel-level removed map: 1 under masked patches
        let removed = visibility(mt.mask.clone().neg() + 1.0, g, p).permute([0, 3, 1, 2]); // (B,1,S,S)
        let scrambled = imgs.clone() + noise * removed;
        let a = m.encode(imgs, &mt);
        let b = m.encode(scrambled.clone(), &mt);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < 1e-5, "visible tokens changed by {diff}");
    }

    #[test]
    fn base_has_the_published_parameter_count() {
        let cfg = crate::presets::recipe("base").unwrap().model;
        type AB = burn::backend::Autodiff<burn::backend::NdArray>;
        let m = cfg.init::<AB>(&Default::default(), 0);
        assert_eq!(
            pixmim_core::checkpoint::count_params(&m),
            (114_790_528, 150_528 + 100_352)
        );
    }
}
