//! GELU and softmax as the blocks use them, with a burn-flex path around per-element libm.
//!
//! On a GPU and on ndarray both are burn's own ops (the composite erf GELU, see [`gelu`]). On
//! burn-flex the values come from the vectorised kernels in [`super::vmath`], computed on the
//! host, and the gradient flows through an exact linearisation built from cheap tracked ops:
//!
//! `y = value + J(x - x.detach())`
//!
//! `x - x.detach()` is exactly zero, so the forward value is `value` to the bit, while its
//! gradient is the identity, so the backward pass applies `J`, the Jacobian of the function
//! at `x`, written with constants the kernel returned. burn 0.21 offers no custom backward
//! for the `Dispatch` backend the methods run on, and this needs none. Per-element libm was
//! the largest cost of a CPU step; what this saves is in docs/performance.md, "CPU backends".
use burn::prelude::*;
use burn::tensor::DType;

use super::vmath;

/// Take the host path? On burn-flex with f32 data, where reading a tensor out is a copy.
/// burn-ndarray 0.21's read costs more than its per-element libm, so ndarray keeps burn's ops.
fn host_kernels<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.dtype() == DType::F32 && super::is_flex::<B>(&x.device())
}

/// The tensor's values on the host, row-major.
fn host_values<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Vec<f32> {
    x.to_data()
        .into_vec::<f32>()
        .expect("an f32 tensor converts to f32 values")
}

fn from_host<B: Backend, const D: usize>(v: Vec<f32>, like: &Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, like.shape()), &like.device())
}

/// Exact (erf) GELU, `nn.GELU()`'s default: `x (1 + erf(x / sqrt 2)) / 2`.
///
/// Elsewhere (GPUs, ndarray) it is built from `erf` so that autodiff derives it exactly:
/// burn 0.21's fused `gelu` has an exact forward, but its default `gelu_backward` (used by
/// ndarray and the cubecl backends) differentiates the tanh approximation, which put MAE's
/// gradients 3e-4 off the reference. On flex: value and slope from [`vmath::gelu_and_slope`], gradient
/// `slope * grad`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !host_kernels(&x) {
        return erf_composite_gelu(x);
    }
    let xv = host_values(&x);
    let (mut y, mut slope) = (vec![0.0; xv.len()], vec![0.0; xv.len()]);
    vmath::gelu_and_slope(&xv, &mut y, &mut slope);
    let (y, slope) = (from_host(y, &x), from_host(slope, &x));
    let delta = x.clone() - x.detach();
    y + delta * slope
}

/// GELU from burn's `erf`, differentiated op by op.
fn erf_composite_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * ((x / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5
}

/// Softmax over `dim`. On flex, over the last dimension: values from
/// [`vmath::softmax_rows`], and the Jacobian `diag(y) - y y^T` applied as
/// `y * (d - sum(y * d))` for the zero tangent `d`.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    if dim + 1 != D || !host_kernels(&x) {
        return burn::tensor::activation::softmax(x, dim);
    }
    let row = x.dims()[dim];
    let mut yv = host_values(&x);
    vmath::softmax_rows(&mut yv, row);
    let y = from_host(yv, &x);
    let delta = x.clone() - x.detach();
    let along = (y.clone() * delta.clone()).sum_dim(dim);
    y.clone() + y * (delta - along)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};

    /// Value and input gradient of `f` under a weighted sum (every output position has its
    /// own gradient), on backend `AB`.
    fn value_and_grad<AB, const D: usize>(
        f: impl Fn(Tensor<AB, D>) -> Tensor<AB, D>,
        x: &[f32],
        shape: [usize; D],
    ) -> (Vec<f32>, Vec<f32>)
    where
        AB: burn::tensor::backend::AutodiffBackend,
    {
        let dev = Default::default();
        let xt =
            Tensor::<AB, D>::from_data(TensorData::new(x.to_vec(), shape), &dev).require_grad();
        let w: Vec<f32> = (0..x.len()).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let wt = Tensor::<AB, D>::from_data(TensorData::new(w, shape), &dev);
        let y = f(xt.clone());
        let g = (y.clone() * wt).sum().backward();
        (values(y.inner()), values(xt.grad(&g).unwrap()))
    }

    fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().unwrap()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.1,
            "{what}: all near zero, the test would prove nothing"
        );
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    fn inputs(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.08)
            .collect()
    }

    /// The host path against burn's composite ops (taken on flex by `x.erf()` and
    /// `activation::softmax` directly): the same values and the same gradients.
    #[test]
    fn flex_gelu_matches_the_erf_composite_in_value_and_gradient() {
        type AB = Autodiff<Flex>;
        let x = inputs(6 * 35);
        let (v0, g0) = value_and_grad::<AB, 2>(erf_composite_gelu, &x, [6, 35]);
        let (v1, g1) = value_and_grad::<AB, 2>(gelu, &x, [6, 35]);
        assert_close("gelu value", &v1, &v0, 1e-6);
        assert_close("gelu grad", &g1, &g0, 1e-6);
    }

    #[test]
    fn flex_softmax_matches_burns_softmax_in_value_and_gradient() {
        type AB = Autodiff<Flex>;
        let x = inputs(2 * 3 * 4 * 9);
        let (v0, g0) = value_and_grad::<AB, 4>(
            |t| burn::tensor::activation::softmax(t, 3),
            &x,
            [2, 3, 4, 9],
        );
        let (v1, g1) = value_and_grad::<AB, 4>(|t| softmax(t, 3), &x, [2, 3, 4, 9]);
        assert_close("softmax value", &v1, &v0, 1e-6);
        assert_close("softmax grad", &g1, &g0, 1e-5);
    }

    #[test]
    fn the_host_path_is_taken_on_flex_only() {
        let dev = Default::default();
        assert!(host_kernels(&Tensor::<Autodiff<Flex>, 1>::zeros([2], &dev)));
        assert!(!host_kernels(&Tensor::<Autodiff<NdArray>, 1>::zeros(
            [2],
            &Default::default()
        )));
        let d = crate::device::DeviceSpec::Flex.train_device().unwrap();
        assert!(host_kernels(&Tensor::<crate::RunBackend, 1>::zeros(
            [2],
            &d
        )));
        let d = crate::device::DeviceSpec::NdArray.train_device().unwrap();
        assert!(!host_kernels(&Tensor::<crate::RunBackend, 1>::zeros(
            [2],
            &d
        )));
        // bf16 data stays on burn's ops.
        let half = Tensor::<Autodiff<Flex>, 1>::zeros([2], &dev).cast(DType::BF16);
        assert!(!host_kernels(&half));
    }

    /// The exact derivative of GELU, in f64.
    fn gelu_slope(v: f64) -> f64 {
        let pdf = (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        0.5 * (1.0 + libm::erf(v / 2f64.sqrt())) + v * pdf
    }

    fn assert_exact_slope<AB: burn::tensor::backend::AutodiffBackend>(
        f: impl Fn(Tensor<AB, 1>) -> Tensor<AB, 1>,
        what: &str,
    ) {
        let xs = [-3.0f32, -1.2, -0.3, 0.0, 0.4, 1.7, 2.9];
        let x = Tensor::<AB, 1>::from_floats(xs, &Default::default()).require_grad();
        let g = f(x.clone()).sum().backward();
        for (v, gv) in xs.iter().zip(values(x.grad(&g).unwrap())) {
            let want = gelu_slope(*v as f64);
            assert!(
                (gv as f64 - want).abs() < 1e-6,
                "{what}: gelu'({v}) = {gv}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_gradient_is_the_exact_derivative() {
        // The composite is what GPUs run; burn's fused gelu would fail this on ndarray.
        assert_exact_slope::<Autodiff<NdArray>>(gelu, "composite on ndarray");
        assert_exact_slope::<Autodiff<Flex>>(gelu, "host path on flex");
    }
}
