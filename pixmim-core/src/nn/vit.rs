//! The pre-norm ViT block (numerics §0.1): qkv bias, explicit softmax attention, exact (erf)
//! GELU, no layer-scale. Drop-path (stochastic depth) is off in pretraining (numerics §0.5) and
//! used only by fine-tuning (paper Table 9). Field names follow the timm/official checkpoint keys
//! (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`). The matrix products run
//! in the block's [`Precision`] (f32 unless training asks for bf16).
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use super::activation::{gelu, softmax};
use super::Precision;
use crate::init::HostInit;

#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    pub dim: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    /// LayerNorm eps: 1e-6 in every ViT block of the five methods (numerics §0.7).
    pub ln_eps: f64,
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub num_heads: usize,
    #[module(skip)]
    pub precision: Precision,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    /// Stochastic-depth rate: each residual branch is dropped per sample with this
    /// probability (and the kept ones scaled by 1/(1 - rate)). 0 everywhere but fine-tuning.
    pub drop_path: f64,
    #[module(skip)]
    pub precision: Precision,
}

impl BlockConfig {
    pub fn init<B: Backend>(&self, init: &mut HostInit, device: &B::Device) -> Block<B> {
        assert!(
            self.dim.is_multiple_of(self.num_heads),
            "dim {} not divisible by heads {}",
            self.dim,
            self.num_heads
        );
        let hidden = (self.dim as f64 * self.mlp_ratio) as usize;
        let ln = || {
            LayerNormConfig::new(self.dim)
                .with_epsilon(self.ln_eps)
                .init(device)
        };
        Block {
            norm1: ln(),
            attn: Attention {
                qkv: init.linear(self.dim, 3 * self.dim, device),
                proj: init.linear(self.dim, self.dim, device),
                num_heads: self.num_heads,
                precision: Precision::F32,
            },
            norm2: ln(),
            mlp: Mlp {
                fc1: init.linear(self.dim, hidden, device),
                fc2: init.linear(hidden, self.dim, device),
            },
            drop_path: 0.0,
            precision: Precision::F32,
        }
    }
}

/// How the attention lays out its heads for the two products. Both compute the same numbers;
/// the choice is a backend's copy costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadLayout {
    /// All heads in one product over (B, h, N, dh) views of q, k and v. One kernel per
    /// operation: the layout for GPUs and ndarray. Splitting and merging the heads permutes
    /// the data once each way.
    Batched,
    /// Each head's products on its (B, N, dh) column block, read in place, and the outputs
    /// concatenated. burn-flex 0.21 copies a permuted 4-D view element by element (its
    /// `FlexTensor::to_contiguous` only tiles layouts that collapse to 2-D), and the batched
    /// layout pays that copy four times per block (merge forward; q, k, v backward): 9% of a
    /// tiny MAE step. Per head, only k's transposed gradient is still such a copy; the rest
    /// are row copies (docs/performance.md, "CPU backends"). On a GPU this would be h times the launches.
    PerHead,
}

impl HeadLayout {
    /// `PerHead` on burn-flex ([`super::is_flex`]), `Batched` elsewhere.
    pub fn for_device<B: Backend>(device: &B::Device) -> Self {
        if super::is_flex::<B>(device) {
            Self::PerHead
        } else {
            Self::Batched
        }
    }
}

impl<B: Backend> Attention<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let layout = HeadLayout::for_device::<B>(&x.device());
        self.forward_in(x, layout)
    }

    /// `forward` with the head layout chosen by the caller (the layouts' equivalence test).
    pub fn forward_in(&self, x: Tensor<B, 3>, layout: HeadLayout) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let dh = d / h;
        let p = self.precision;
        // q, k and v are the three column blocks of the one `qkv` weight (the checkpoint keeps
        // the official fused layout). Three products instead of one fused one give three
        // contiguous (B, N, D) outputs, whose heads both layouts read as views. Slicing one
        // fused output instead costs a strided copy of each part forward and three full-size
        // zero-filled gradients backward.
        let weight = self.qkv.weight.val();
        let bias = self.qkv.bias.as_ref().map(|b| b.val());
        let part = |i: usize| {
            let cols = i * d..(i + 1) * d;
            p.affine(
                x.clone(),
                weight.clone().slice([0..d, cols.clone()]),
                bias.clone().map(|b| b.slice([cols])),
            )
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scale = (dh as f64).powf(-0.5);
        let o = match layout {
            HeadLayout::Batched => {
                let heads = |t: Tensor<B, 3>| t.reshape([b, n, h, dh]).swap_dims(1, 2);
                let (q, k, v) = (heads(q), heads(k), heads(v));
                let attn = softmax(p.matmul(q, k.swap_dims(2, 3)) * scale, 3);
                p.matmul(attn, v).swap_dims(1, 2).reshape([b, n, d])
            }
            HeadLayout::PerHead => {
                let heads = q
                    .chunk(h, 2)
                    .into_iter()
                    .zip(k.chunk(h, 2))
                    .zip(v.chunk(h, 2));
                let o = heads
                    .map(|((q, k), v)| {
                        let attn = softmax(p.matmul(q, k.swap_dims(1, 2)) * scale, 2);
                        p.matmul(attn, v)
                    })
                    .collect();
                Tensor::cat(o, 2)
            }
        };
        p.linear(&self.proj, o)
    }
}

impl<B: Backend> Block<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.stochastic_depth(self.attn.forward(self.norm1.forward(x)));
        let p = self.precision;
        let h = gelu(p.linear(&self.mlp.fc1, self.norm2.forward(x.clone())));
        let z = p.linear(&self.mlp.fc2, h);
        x + self.stochastic_depth(z)
    }

    /// timm's `DropPath`: a per-sample Bernoulli keep mask, scaled by 1/keep.
    fn stochastic_depth(&self, branch: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.drop_path <= 0.0 {
            return branch;
        }
        let keep = 1.0 - self.drop_path;
        let [b, _, _] = branch.dims();
        let mask = Tensor::<B, 3>::random(
            [b, 1, 1],
            burn::tensor::Distribution::Bernoulli(keep),
            &branch.device(),
        );
        branch * (mask / keep)
    }
}

/// timm's stochastic-depth rule: block `i` of `n` drops with `rate * i / (n - 1)`.
pub fn drop_path_rates(rate: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if n > 1 {
                rate * i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// Set the precision of a stack of blocks' matrix products.
pub fn set_precision<B: Backend>(blocks: &mut [Block<B>], precision: Precision) {
    for blk in blocks {
        blk.precision = precision;
        blk.attn.precision = precision;
    }
}

/// Set the stochastic-depth rates of a stack of blocks (linearly rising to `rate`).
pub fn set_drop_path<B: Backend>(blocks: &mut [Block<B>], rate: f64) {
    let rates = drop_path_rates(rate, blocks.len());
    for (blk, r) in blocks.iter_mut().zip(rates) {
        blk.drop_path = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    fn tiny_block() -> BlockConfig {
        BlockConfig {
            dim: 4,
            num_heads: 2,
            mlp_ratio: 2.0,
            ln_eps: 1e-6,
        }
    }

    #[test]
    fn drop_path_zeroes_or_rescales_each_sample_branch() {
        let dev = Default::default();
        let cfg = tiny_block();
        let mut blk: Block<B> = cfg.init(&mut HostInit::new(3), &dev);
        blk.drop_path = 0.5;
        let branch = Tensor::<B, 3>::ones([2000, 2, 4], &dev);
        let out: Vec<f32> = blk.stochastic_depth(branch).into_data().to_vec().unwrap();
        let mut kept = 0;
        for s in out.chunks(8) {
            // All of a sample's values share one decision: 0 or 1 / keep = 2.
            assert!(
                s.iter().all(|&v| v == s[0]) && (s[0] == 0.0 || s[0] == 2.0),
                "{s:?}"
            );
            kept += usize::from(s[0] == 2.0);
        }
        assert!(
            (900..1100).contains(&kept),
            "{kept} of 2000 kept at p = 0.5"
        );
        assert_eq!(drop_path_rates(0.1, 3), vec![0.0, 0.05, 0.1]);
        assert_eq!(drop_path_rates(0.1, 1), vec![0.0]);
    }

    /// One block against a direct f64 evaluation of numerics §0.1 on a tiny input.
    #[test]
    fn block_matches_a_direct_evaluation() {
        let dev = Default::default();
        let cfg = tiny_block();
        let blk: Block<B> = cfg.init(&mut HostInit::new(3), &dev);
        let xv: Vec<f32> = (0..12).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(xv.clone(), [1, 3, 4]), &dev);
        let out: Vec<f32> = blk.forward(x).into_data().to_vec().unwrap();

        let get = |l: &Linear<B>| -> (Vec<f64>, Vec<f64>, usize, usize) {
            let [i, o] = l.weight.dims();
            let w = l
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            let b = l
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            (w, b, i, o)
        };
        let lin = |l: &Linear<B>, x: &[f64]| -> Vec<f64> {
            let (w, b, i, o) = get(l);
            (0..o)
                .map(|c| b[c] + (0..i).map(|r| x[r] * w[r * o + c]).sum::<f64>())
                .collect()
        };
        let ln = |x: &[f64]| -> Vec<f64> {
            let m = x.iter().sum::<f64>() / x.len() as f64;
            let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / x.len() as f64;
            x.iter().map(|a| (a - m) / (v + 1e-6).sqrt()).collect()
        };
        let xs: Vec<Vec<f64>> = (0..3)
            .map(|t| xv[t * 4..t * 4 + 4].iter().map(|&v| v as f64).collect())
            .collect();
        let qkv: Vec<Vec<f64>> = xs.iter().map(|x| lin(&blk.attn.qkv, &ln(x))).collect();
        let mut att = vec![vec![0.0; 4]; 3];
        for h in 0..2 {
            for i in 0..3 {
                let s: Vec<f64> = (0..3)
                    .map(|j| {
                        (0..2)
                            .map(|e| qkv[i][h * 2 + e] * qkv[j][4 + h * 2 + e])
                            .sum::<f64>()
                            / 2f64.sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                for e in 0..2 {
                    att[i][h * 2 + e] = (0..3)
                        .map(|j| (s[j] - mx).exp() / z * qkv[j][8 + h * 2 + e])
                        .sum();
                }
            }
        }
        let erf_gelu = |v: f64| 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()));
        for t in 0..3 {
            let p = lin(&blk.attn.proj, &att[t]);
            let x1: Vec<f64> = (0..4).map(|c| xs[t][c] + p[c]).collect();
            let hdn: Vec<f64> = lin(&blk.mlp.fc1, &ln(&x1))
                .into_iter()
                .map(erf_gelu)
                .collect();
            let m = lin(&blk.mlp.fc2, &hdn);
            for c in 0..4 {
                let want = x1[c] + m[c];
                assert!(
                    (out[t * 4 + c] as f64 - want).abs() < 1e-5,
                    "{} vs {want}",
                    out[t * 4 + c]
                );
            }
        }
    }

    /// The two head layouts are one computation: same output, same gradients for the input
    /// and both weights, on the backend that picks `PerHead`.
    #[test]
    fn head_layouts_agree_in_output_and_gradients() {
        type AB = burn::backend::Autodiff<B>;
        let dev = Default::default();
        assert_eq!(HeadLayout::for_device::<AB>(&dev), HeadLayout::PerHead);
        assert_eq!(
            HeadLayout::for_device::<burn::backend::NdArray>(&Default::default()),
            HeadLayout::Batched
        );
        let cfg = BlockConfig {
            dim: 12,
            num_heads: 3,
            mlp_ratio: 2.0,
            ln_eps: 1e-6,
        };
        let blk: Block<AB> = cfg.init(&mut HostInit::new(5), &dev);
        let xv: Vec<f32> = (0..2 * 5 * 12)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let run = |layout| {
            let x = Tensor::<AB, 3>::from_data(TensorData::new(xv.clone(), [2, 5, 12]), &dev)
                .require_grad();
            let y = blk.attn.forward_in(x.clone(), layout);
            // A weighted sum, so every output position has its own gradient.
            let w = Tensor::<AB, 3>::from_data(
                TensorData::new((0..120).map(|i| (i % 7) as f32 - 3.0).collect(), [2, 5, 12]),
                &dev,
            );
            let g = (y.clone() * w).sum().backward();
            let vec = |t: Tensor<burn::backend::Flex, 3>| t.into_data().to_vec::<f32>().unwrap();
            let vec2 = |t: Tensor<burn::backend::Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
            (
                vec(y.inner()),
                vec(x.grad(&g).unwrap()),
                vec2(blk.attn.qkv.weight.grad(&g).unwrap()),
                vec2(blk.attn.proj.weight.grad(&g).unwrap()),
            )
        };
        let (a, b) = (run(HeadLayout::Batched), run(HeadLayout::PerHead));
        for (name, u, v) in [
            ("output", &a.0, &b.0),
            ("x grad", &a.1, &b.1),
            ("qkv weight grad", &a.2, &b.2),
            ("proj weight grad", &a.3, &b.3),
        ] {
            assert_eq!(u.len(), v.len());
            let worst = u
                .iter()
                .zip(v)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            let scale = u.iter().map(|p| p.abs()).fold(0f32, f32::max);
            assert!(
                scale > 0.1,
                "{name}: all near zero, the test would prove nothing"
            );
            assert!(
                worst <= 1e-5 * scale,
                "{name}: layouts differ by {worst} (scale {scale})"
            );
        }
    }
}
