//! MAE's decoder (facebookresearch/mae `models_mae.py`, numerics §0.5), written once for every
//! method that predicts pixels with it (MAE and so LSMAE and MFF, ConvMAE): the encoder's
//! output embedded to the decoder's width, mask tokens appended and the patches put back in
//! image order, the fixed sin-cos position added, transformer blocks, a norm and a linear
//! prediction of each patch's pixels.
//!
//! Its fields have the official names (`decoder_embed`, `mask_token`, `decoder_pos_embed`,
//! `decoder_blocks`, `decoder_norm`, `decoder_pred`), and checkpoints name them at the model's
//! top level as the official code does: the field a method keeps the decoder in is left out
//! of parameter names ([`crate::checkpoint`]'s transparent modules).
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use super::linear::LinearRows;
use super::pos_embed::{add_position, sincos_2d, PosEmbedOrientation};
use super::precision::Precision;
use super::vit::{set_precision, Block, BlockConfig};
use crate::error::{Error, Result};
use crate::init::HostInit;
use crate::mask::unshuffle_with_mask_tokens;

/// The decoder a method builds, from its `[model]` keys (`decoder_embed_dim`, `decoder_depth`,
/// `decoder_num_heads`) and its encoder's geometry.
#[derive(Clone, Debug)]
pub struct MaeDecoderConfig {
    /// The encoder output's width.
    pub in_dim: usize,
    /// `decoder_embed_dim`.
    pub embed_dim: usize,
    /// `decoder_depth`.
    pub depth: usize,
    /// `decoder_num_heads`.
    pub num_heads: usize,
    pub mlp_ratio: f64,
    /// The mask grid's side: the decoder predicts `grid * grid` patches.
    pub grid: usize,
    /// Values predicted per patch (`p * p * 3`).
    pub out_dim: usize,
    /// The latent's first row is a cls token, carried through the blocks and dropped from
    /// the prediction (MAE); without one the latent is the visible patches alone (ConvMAE).
    pub cls_token: bool,
    /// How the sin-cos table is laid out (the official code of each method differs).
    pub pos_embed: PosEmbedOrientation,
    pub ln_eps: f64,
}

impl MaeDecoderConfig {
    /// The decoder's own rules; errors name the `[model]` key.
    pub fn validate(&self) -> Result<()> {
        let e = |k: &str, m: String| Err(Error::config(format!("model.{k}"), m));
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return e(
                "decoder_num_heads",
                format!(
                    "width {} is not divisible by {} heads",
                    self.embed_dim, self.num_heads
                ),
            );
        }
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(4) {
            return e(
                "decoder_embed_dim",
                format!(
                    "{} must be a positive multiple of 4 (2-D sin-cos position embedding)",
                    self.embed_dim
                ),
            );
        }
        Ok(())
    }

    /// The rows the blocks run over: every patch, and the cls token when there is one.
    fn tokens(&self) -> usize {
        self.grid * self.grid + usize::from(self.cls_token)
    }

    /// Floats autodiff keeps per image ([`crate::memory`]): the embedded rows, the rows with
    /// mask tokens, their gather, the position add, the norm and the prediction's input
    /// (six copies of the rows), and the blocks.
    pub fn activation_floats_per_image(&self) -> f64 {
        let n = self.tokens();
        let hidden = (self.embed_dim as f64 * self.mlp_ratio) as usize;
        6.0 * (n * self.embed_dim) as f64
            + self.depth as f64
                * crate::memory::vit_block_floats(n, self.embed_dim, self.num_heads, hidden)
    }

    /// The decoder with the official initialisation, drawn from `init` in the official order:
    /// the embedding, the mask token (N(0, 0.02), numerics §0.10), the blocks, the prediction.
    pub fn init<B: Backend>(&self, init: &mut HostInit, device: &B::Device) -> MaeDecoder<B> {
        let dd = self.embed_dim;
        let block = BlockConfig {
            dim: dd,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            ln_eps: self.ln_eps,
        };
        let decoder_embed = init.linear(self.in_dim, dd, device);
        let mask_token = Param::from_tensor(Tensor::from_data(
            TensorData::new(init.normal(dd, 0.02), [1, 1, dd]),
            device,
        ));
        let decoder_blocks = (0..self.depth).map(|_| block.init(init, device)).collect();
        let decoder_pred = init.linear(dd, self.out_dim, device);
        let table = sincos_2d(dd, self.grid, self.grid, self.cls_token, self.pos_embed);
        MaeDecoder {
            decoder_embed,
            mask_token,
            decoder_pos_embed: Param::from_tensor(Tensor::from_data(
                TensorData::new(table, [1, self.tokens(), dd]),
                device,
            ))
            .set_require_grad(false),
            decoder_blocks,
            decoder_norm: LayerNormConfig::new(dd)
                .with_epsilon(self.ln_eps)
                .init(device),
            decoder_pred,
            cls_token: self.cls_token,
        }
    }
}

#[derive(Module, Debug)]
pub struct MaeDecoder<B: Backend> {
    pub decoder_embed: Linear<B>,
    pub mask_token: Param<Tensor<B, 3>>,
    /// Frozen sin-cos table (1, [1 +] L, D), the cls row zero.
    pub decoder_pos_embed: Param<Tensor<B, 3>>,
    pub decoder_blocks: Vec<Block<B>>,
    pub decoder_norm: LayerNorm<B>,
    pub decoder_pred: Linear<B>,
    pub cls_token: bool,
}

impl<B: Backend> MaeDecoder<B> {
    /// The encoder's output ((B, [1 +] len_keep, D), visible patches in ascending-noise order)
    /// to per-patch predictions in image order: (B, L, out_dim).
    pub fn forward(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.decoder_embed.forward_rows(latent);
        let x = if self.cls_token {
            let [b, n, dd] = x.dims();
            let patches = unshuffle_with_mask_tokens(
                x.clone().slice([0..b, 1..n, 0..dd]),
                self.mask_token.val(),
                ids_restore,
            );
            Tensor::cat(vec![x.slice([0..b, 0..1, 0..dd]), patches], 1)
        } else {
            unshuffle_with_mask_tokens(x, self.mask_token.val(), ids_restore)
        };
        let mut x = add_position(x, self.decoder_pos_embed.val());
        for blk in &self.decoder_blocks {
            x = blk.forward(x);
        }
        let x = self.decoder_pred.forward_rows(self.decoder_norm.forward(x));
        if !self.cls_token {
            return x;
        }
        let [b, n, o] = x.dims();
        x.slice([0..b, 1..n, 0..o])
    }

    /// The blocks' matrix products in `precision`.
    pub fn set_precision(&mut self, precision: Precision) {
        set_precision(&mut self.decoder_blocks, precision);
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    fn config(cls_token: bool) -> MaeDecoderConfig {
        MaeDecoderConfig {
            in_dim: 16,
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
            mlp_ratio: 4.0,
            grid: 2,
            out_dim: 12,
            cls_token,
            pos_embed: PosEmbedOrientation::Official,
            ln_eps: 1e-6,
        }
    }

    /// Predictions come back in image order: two visible patches given in either order (with
    /// `ids_restore` to match) decode to the same predictions; with a cls token its row is
    /// dropped.
    #[test]
    fn predictions_are_in_image_order_whatever_the_visible_order() {
        let dev = Default::default();
        for cls in [false, true] {
            let d = config(cls).init::<NdArray>(&mut HostInit::new(0), &dev);
            let c = usize::from(cls);
            // Rows: [cls], patch 2's, patch 0's (ids_shuffle [2, 0, 1, 3]).
            let rows: Vec<f32> = (0..(c + 2) * 16).map(|i| (i as f32 * 0.37).sin()).collect();
            let latent =
                Tensor::<NdArray, 3>::from_data(TensorData::new(rows, [1, c + 2, 16]), &dev);
            let ids = |v: [i64; 4]| Tensor::<NdArray, 2, Int>::from_data([v], &dev);
            let a = d.forward(latent.clone(), ids([1, 2, 0, 3]));
            assert_eq!(a.dims(), [1, 4, 12]);
            // Patch 0's row first (ids_shuffle [0, 2, 1, 3]).
            let row = |i: usize| latent.clone().slice([0..1, i..i + 1, 0..16]);
            let mut swapped: Vec<_> = (0..c).map(row).collect();
            swapped.extend([row(c + 1), row(c)]);
            let b = d.forward(Tensor::cat(swapped, 1), ids([0, 2, 1, 3]));
            let a = a.into_data().to_vec::<f32>().unwrap();
            let b = b.into_data().to_vec::<f32>().unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "cls {cls}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_widths_name_the_decoder_keys() {
        let mut c = config(true);
        c.num_heads = 3;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.decoder_num_heads"));
        let mut c = config(true);
        c.embed_dim = 6;
        c.num_heads = 2;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.decoder_embed_dim"));
    }
}
