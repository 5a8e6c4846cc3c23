//! Patch embedding (numerics §0.2): Conv2d(kernel = stride = p), done as patch extraction in the
//! conv's (c, i, j) order + one matmul, which is the same arithmetic and much faster on CPU.
//! The weight keeps the conv's (D, C, p, p) shape so checkpoints map 1:1 (`patch_embed.proj`).
use burn::module::Param;
use burn::prelude::*;

use crate::init::HostInit;

#[derive(Module, Debug)]
pub struct ConvProj<B: Backend> {
    /// (D, C, p, p), as PyTorch's Conv2d.
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
}

#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: ConvProj<B>,
    pub patch_size: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// MAE init: xavier_uniform on the weight viewed as (D, C*p*p); the bias keeps PyTorch's
    /// conv default U(+-1/sqrt(C*p*p)) (numerics §0.10).
    pub fn new(
        in_chans: usize,
        dim: usize,
        p: usize,
        init: &mut HostInit,
        device: &B::Device,
    ) -> Self {
        let fan_in = in_chans * p * p;
        let w = init.xavier(fan_in, dim);
        let b = init.uniform(dim, 1.0 / (fan_in as f64).sqrt());
        Self::from_values(w, b, in_chans, dim, p, device)
    }

    /// PyTorch's default Conv2d init, kaiming_uniform(a=sqrt 5): weight and bias
    /// U(+-1/sqrt(C*p*p)). ConvMAE keeps it for every conv but its last patch embed (§0.10).
    pub fn new_pytorch_default(
        in_chans: usize,
        dim: usize,
        p: usize,
        init: &mut HostInit,
        device: &B::Device,
    ) -> Self {
        let bound = 1.0 / ((in_chans * p * p) as f64).sqrt();
        let w = init.uniform(dim * in_chans * p * p, bound);
        let b = init.uniform(dim, bound);
        Self::from_values(w, b, in_chans, dim, p, device)
    }

    fn from_values(
        w: Vec<f32>,
        b: Vec<f32>,
        in_chans: usize,
        dim: usize,
        p: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            proj: ConvProj {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(w, [dim, in_chans, p, p]),
                    device,
                )),
                bias: Param::from_tensor(Tensor::from_data(TensorData::new(b, [dim]), device)),
            },
            patch_size: p,
        }
    }

    /// (B, C, H, W) -> (B, L, D), patches row-major.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = x.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let [d, _, _, _] = self.proj.weight.dims();
        let patches = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * p * p]);
        let wt = self.proj.weight.val().reshape([d, c * p * p]).transpose();
        patches.matmul(wt.unsqueeze()) + self.proj.bias.val().reshape([1, 1, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    type B = burn::backend::Flex;

    #[test]
    fn equals_a_strided_conv() {
        let dev = Default::default();
        let pe = PatchEmbed::<B>::new(3, 5, 2, &mut HostInit::new(1), &dev);
        let mut conv = Conv2dConfig::new([3, 5], [2, 2])
            .with_stride([2, 2])
            .init::<B>(&dev);
        conv.weight = Param::from_tensor(pe.proj.weight.val());
        conv.bias = Some(Param::from_tensor(pe.proj.bias.val()));
        let x = Tensor::<B, 4>::random([2, 3, 4, 6], burn::tensor::Distribution::Default, &dev);
        let want = conv.forward(x.clone()).flatten::<3>(2, 3).swap_dims(1, 2);
        let got = pe.forward(x);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }
}
