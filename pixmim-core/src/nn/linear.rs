//! A `Linear` applied to every row of a token tensor as one 2-D matrix product.
//!
//! burn 0.21's `Linear::forward` on `(B, N, D)` broadcasts the weight to `(1, D, O)` and runs a
//! *batched* matmul: B small products of N rows each, and in the backward pass the weight
//! gradient is B separate `(D, N) @ (N, O)` products written to a `(B, D, O)` buffer and then
//! summed over B. For MAE's encoder (N = 17 visible tokens at 32 px, 50 at 224) that is many
//! tiny, badly shaped GEMMs and, for MAE-B's fc1, a 600 MB temporary per block at batch 64.
//! Flattening the leading dimensions first gives one `(B*N, D) @ (D, O)` product forward and
//! one `(D, B*N) @ (B*N, O)` product for the weight gradient, which is what PyTorch's
//! `F.linear` does. The values are the same products summed in a different order.
use burn::nn::Linear;
use burn::prelude::*;

/// `Linear::forward` over the last dimension, run as one matrix product over all rows.
pub trait LinearRows<B: Backend> {
    /// `x @ W + b` for `x` of any rank ≥ 2, with the leading dimensions flattened into rows.
    fn forward_rows<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>;
}

impl<B: Backend> LinearRows<B> for Linear<B> {
    fn forward_rows<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear_rows(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `x @ weight + bias` (weight `(D_in, D_out)`, burn's layout) over the rows of `x`.
pub fn linear_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let [_, d_out] = weight.dims();
    on_rows(x, d_out, |rows| {
        burn::tensor::module::linear(rows, weight, bias)
    })
}

/// Apply `f` to `x` seen as a matrix of rows `(prod(leading dims), last dim)` and give the
/// result (`d_out` columns) back its leading dimensions. Free for a contiguous `x`.
pub fn on_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    d_out: usize,
    f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    assert!(D >= 2, "on_rows needs a tensor of rank 2 or more");
    let mut dims = x.dims();
    dims[D - 1] = d_out;
    f(x.flatten::<2>(0, D - 2)).reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::HostInit;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type B = Autodiff<NdArray>;

    #[test]
    fn forward_rows_matches_the_batched_forward_and_its_gradients() {
        let dev = Default::default();
        let mut init = HostInit::new(3);
        let lin: Linear<B> = init.linear(6, 5, &dev);
        let x =
            Tensor::<B, 3>::random([4, 3, 6], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w = Tensor::<B, 3>::random([4, 3, 5], Distribution::Normal(0.0, 1.0), &dev);

        let flat = lin.forward_rows(x.clone());
        assert_eq!(flat.dims(), [4, 3, 5]);
        let g_flat = (flat.clone() * w.clone()).sum().backward();
        let batched = lin.forward(x.clone());
        let g_batched = (batched.clone() * w).sum().backward();

        let close = |a: Tensor<NdArray, 1>, b: Tensor<NdArray, 1>, what: &str| {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.into_data().to_vec().unwrap(),
                b.into_data().to_vec().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() < 1e-5, "{what}[{i}]: {p} vs {q}");
            }
        };
        close(
            flat.inner().flatten(0, 2),
            batched.inner().flatten(0, 2),
            "y",
        );
        close(
            x.grad(&g_flat).unwrap().flatten(0, 2),
            x.grad(&g_batched).unwrap().flatten(0, 2),
            "x grad",
        );
        let wgrad = |g| lin.weight.val().grad(g).unwrap().flatten::<1>(0, 1);
        close(wgrad(&g_flat), wgrad(&g_batched), "weight grad");
        let bgrad = |g| lin.bias.as_ref().unwrap().val().grad(g).unwrap();
        close(bgrad(&g_flat), bgrad(&g_batched), "bias grad");
    }
}
