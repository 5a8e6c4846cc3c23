//! ConvMAE's convolution block (numerics §3.2), channels-last (B, H, W, C): the 1x1 convolutions
//! are Linear layers over channels; the mask is applied only before the 5x5 depthwise conv, the
//! one place where positions mix, so masked pixels never reach visible ones.
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::prelude::*;

use pixmim_core::init::HostInit;
use pixmim_core::nn::activation::gelu;
use pixmim_core::nn::LinearRows;

/// LayerNorm eps in ConvMAE's conv parts: plain nn.LayerNorm (numerics §0.7).
pub const CONV_LN_EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub struct CMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct CBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub conv1: Linear<B>,
    /// 5x5 depthwise, padding 2.
    pub attn: Conv2d<B>,
    pub conv2: Linear<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: CMlp<B>,
}

/// PyTorch's default init for a conv/linear with this fan-in: U(+-1/sqrt(fan_in)).
fn torch_default_linear<B: Backend>(
    init: &mut HostInit,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(init.uniform(d_in * d_out, bound), [d_in, d_out]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(init.uniform(d_out, bound), [d_out]),
            device,
        ))),
    }
}

impl<B: Backend> CBlock<B> {
    /// ConvMAE keeps PyTorch's default init for every conv in the block (numerics §0.10).
    pub fn new(dim: usize, mlp_ratio: f64, init: &mut HostInit, device: &B::Device) -> Self {
        let hidden = (dim as f64 * mlp_ratio) as usize;
        let ln = || {
            LayerNormConfig::new(dim)
                .with_epsilon(CONV_LN_EPS)
                .init(device)
        };
        let mut attn = Conv2dConfig::new([dim, dim], [5, 5])
            .with_groups(dim)
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(device);
        let bound = 1.0 / 25f64.sqrt();
        attn.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(init.uniform(dim * 25, bound), [dim, 1, 5, 5]),
            device,
        ));
        attn.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(init.uniform(dim, bound), [dim]),
            device,
        )));
        Self {
            norm1: ln(),
            conv1: torch_default_linear(init, dim, dim, device),
            attn,
            conv2: torch_default_linear(init, dim, dim, device),
            norm2: ln(),
            mlp: CMlp {
                fc1: torch_default_linear(init, dim, hidden, device),
                fc2: torch_default_linear(init, hidden, dim, device),
            },
        }
    }

    /// x (B, H, W, C); visible (B, H, W, 1) with 1 = visible.
    pub fn forward(&self, x: Tensor<B, 4>, visible: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv1.forward_rows(self.norm1.forward(x.clone())) * visible;
        let y = self
            .attn
            .forward(y.permute([0, 3, 1, 2]))
            .permute([0, 2, 3, 1]);
        // `y` is a permuted view: burn's batched product reads it in place, where flattening
        // it into rows would first copy it.
        let x = x + self.conv2.forward(y);
        let z = self.mlp.fc2.forward_rows(gelu(
            self.mlp.fc1.forward_rows(self.norm2.forward(x.clone())),
        ));
        x + z
    }
}
