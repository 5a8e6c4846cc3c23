//! norm_pix and the masked MSE (numerics §0.6).
use burn::prelude::*;

/// Per-patch normalisation over all p*p*3 values: (t - mean) / sqrt(var + 1e-6), with the
/// **unbiased** variance and eps inside the square root, as every reference codebase does.
pub fn norm_pix<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 3> {
    let mean = t.clone().mean_dim(2);
    let var = t.clone().var(2);
    (t - mean) / (var + 1e-6).sqrt()
}

/// mean over the patch vector of (pred - target)^2, summed over removed patches
/// (mask = 1) and divided by their number.
pub fn masked_mse<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let per_patch = (pred - target)
        .powi_scalar(2)
        .mean_dim(2)
        .squeeze_dim::<2>(2);
    (per_patch * mask.clone()).sum() / mask.sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn norm_pix_uses_unbiased_variance_and_eps_inside_sqrt() {
        let dev = Default::default();
        let v = [1.0f32, 2.0, 3.0, 4.0];
        let t = Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), [1, 1, 4]), &dev);
        let out: Vec<f32> = norm_pix(t).into_data().to_vec().unwrap();
        let var = 5.0f64 / 3.0; // sum of squared deviations 5, divisor n-1 = 3
        for (o, x) in out.iter().zip(v) {
            let want = (x as f64 - 2.5) / (var + 1e-6).sqrt();
            assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
        }
    }

    #[test]
    fn masked_mse_averages_removed_patches_only() {
        let dev = Default::default();
        let pred = Tensor::<B, 3>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 3.0, 3.0], [1, 2, 2]),
            &dev,
        );
        let tgt = Tensor::<B, 3>::zeros([1, 2, 2], &dev);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(vec![0.0f32, 1.0], [1, 2]), &dev);
        let l: f32 = masked_mse(pred, tgt, mask).into_scalar();
        assert_eq!(l, 9.0);
    }
}
