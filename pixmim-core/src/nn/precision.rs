//! Mixed precision for the transformer blocks, the rule `torch.autocast` applies in the official
//! AMP recipe (numerics §1.3): the matrix products (the four linear layers of a block and the two
//! attention products) take bf16 inputs and hand back f32; LayerNorm, softmax, GELU, the
//! residual stream, the loss and AdamW's master weights stay f32. The casts are ordinary autodiff
//! ops, so every parameter's gradient arrives in f32.
//!
//! bf16 rather than the official fp16: it has f32's exponent range, so no loss scaling
//! (GradScaler) is needed. A deviation, listed in the README.
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use super::linear::{linear_rows, on_rows};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the reference numerics; the test vectors are checked in it on the
    /// CPU). On a CUDA card with TF32 tensor cores, burn-cuda's matmuls round f32 inputs to
    /// TF32 (cubek's default strategy), as PyTorch does with `allow_tf32`; docs/performance.md, "GPU".
    #[default]
    F32,
    /// Matrix products in bf16, the rest in f32.
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(Error::config(
                "train.precision",
                format!("unknown precision `{other}` (expected f32 or bf16)"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// `a @ b`, in this precision; the result is f32.
    pub fn matmul<B: Backend, const D: usize>(
        self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        match self {
            Self::F32 => a.matmul(b),
            Self::Bf16 => a
                .cast(FloatDType::BF16)
                .matmul(b.cast(FloatDType::BF16))
                .cast(FloatDType::F32),
        }
    }

    /// `linear.forward(x)`, its product in this precision over all rows at once (see
    /// [`LinearRows`](super::LinearRows)); the bias is added in f32.
    pub fn linear<B: Backend, const D: usize>(
        self,
        linear: &Linear<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        self.affine(
            x,
            linear.weight.val(),
            linear.bias.as_ref().map(|b| b.val()),
        )
    }

    /// `x @ weight + bias` over the rows of `x` (weight `(D_in, D_out)`), the product in this
    /// precision and the bias added in f32.
    pub fn affine<B: Backend, const D: usize>(
        self,
        x: Tensor<B, D>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, D> {
        match self {
            Self::F32 => linear_rows(x, weight, bias),
            Self::Bf16 => {
                let [_, d_out] = weight.dims();
                on_rows(x, d_out, |rows| {
                    let y = rows
                        .cast(FloatDType::BF16)
                        .matmul(weight.cast(FloatDType::BF16))
                        .cast(FloatDType::F32);
                    match bias {
                        Some(b) => y + b.unsqueeze(),
                        None => y,
                    }
                })
            }
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::HostInit;
    use crate::nn::vit::{set_precision, BlockConfig};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Distribution};

    type B = Autodiff<Flex>;

    fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    }

    fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
        assert_eq!(t.dtype(), DType::F32, "mixed precision must hand back f32");
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn parse_names_the_key() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!(Precision::parse("f32").unwrap(), Precision::F32);
        let e = Precision::parse("fp16").unwrap_err().to_string();
        assert!(e.contains("train.precision") && e.contains("fp16"), "{e}");
    }

    /// bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operand): a 16-long dot
    /// product lands within about 1% of f32, and the result comes back as f32.
    #[test]
    fn bf16_linear_and_matmul_stay_close_to_f32() {
        let dev = Default::default();
        let lin = HostInit::new(1).linear::<B>(16, 12, &dev);
        let x = Tensor::<B, 3>::random([4, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
        let f = values(Precision::F32.linear(&lin, x.clone()));
        let h = values(Precision::Bf16.linear(&lin, x.clone()));
        let err = rel_l2(&h, &f);
        assert!(err > 0.0 && err < 1e-2, "linear: {err}");
        let y = x.clone().swap_dims(1, 2);
        let f = values(Precision::F32.matmul(x.clone(), y.clone()));
        let h = values(Precision::Bf16.matmul(x, y));
        let err = rel_l2(&h, &f);
        assert!(err > 0.0 && err < 1e-2, "matmul: {err}");
    }

    /// The whole block in bf16: its output and every weight gradient stay within a few
    /// percent of f32, and the gradients reach the f32 parameters as f32.
    #[test]
    fn bf16_block_gradients_reach_the_f32_weights() {
        let dev = Default::default();
        let cfg = BlockConfig {
            dim: 32,
            num_heads: 4,
            mlp_ratio: 4.0,
            ln_eps: 1e-6,
        };
        let x = Tensor::<B, 3>::random([2, 9, 32], Distribution::Normal(0.0, 1.0), &dev);
        let run = |p: Precision| {
            let mut blocks = vec![cfg.init::<B>(&mut HostInit::new(7), &dev)];
            set_precision(&mut blocks, p);
            let blk = &blocks[0];
            let out = blk.forward(x.clone());
            let grads = (out.clone() * out.clone()).sum().backward();
            let g = |w: &burn::module::Param<Tensor<B, 2>>| values(w.val().grad(&grads).unwrap());
            (values(out), g(&blk.attn.qkv.weight), g(&blk.mlp.fc2.weight))
        };
        let (f_out, f_qkv, f_fc2) = run(Precision::F32);
        let (h_out, h_qkv, h_fc2) = run(Precision::Bf16);
        for (what, h, f) in [
            ("output", &h_out, &f_out),
            ("qkv grad", &h_qkv, &f_qkv),
            ("fc2 grad", &h_fc2, &f_fc2),
        ] {
            let err = rel_l2(h, f);
            assert!(err > 0.0 && err < 3e-2, "{what}: {err}");
        }
    }
}
