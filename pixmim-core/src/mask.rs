//! Mask data: which patches a batch keeps (ids_shuffle / ids_restore / mask, numerics §0.4),
//! on the host and on the device, and the token gathers that apply it. The components that
//! draw masks ([`crate::traits::Corruption`]) produce these.
use burn::prelude::*;

/// One batch of masks. Index vectors are (B, L) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskBatch {
    pub batch: usize,
    pub num_patches: usize,
    pub len_keep: usize,
    pub ids_shuffle: Vec<i64>,
    pub ids_restore: Vec<i64>,
    /// 1.0 = removed, 0.0 = visible.
    pub mask: Vec<f32>,
}

/// `int(L * (1 - ratio))`, as Python truncates.
pub fn len_keep(num_patches: usize, ratio: f64) -> usize {
    (num_patches as f64 * (1.0 - ratio)) as usize
}

impl MaskBatch {
    /// Build masks from per-patch noise (B, L): the reference's argsort rule.
    pub fn from_noise(noise: &[f32], batch: usize, num_patches: usize, ratio: f64) -> Self {
        assert_eq!(noise.len(), batch * num_patches, "noise must be (B, L)");
        let keep = len_keep(num_patches, ratio);
        let mut shuffles = Vec::with_capacity(batch * num_patches);
        for b in 0..batch {
            let row = &noise[b * num_patches..(b + 1) * num_patches];
            let mut idx: Vec<i64> = (0..num_patches as i64).collect();
            idx.sort_by(|&i, &j| row[i as usize].total_cmp(&row[j as usize]));
            shuffles.extend(idx);
        }
        Self::from_shuffle(shuffles, batch, num_patches, keep)
    }

    /// Build masks from ids_shuffle (B, L): the first `len_keep` of each row are kept.
    pub fn from_shuffle(
        ids_shuffle: Vec<i64>,
        batch: usize,
        num_patches: usize,
        len_keep: usize,
    ) -> Self {
        let mut ids_restore = vec![0i64; batch * num_patches];
        let mut mask = vec![0f32; batch * num_patches];
        for b in 0..batch {
            let o = b * num_patches;
            for (rank, &id) in ids_shuffle[o..o + num_patches].iter().enumerate() {
                ids_restore[o + id as usize] = rank as i64;
                mask[o + id as usize] = if rank < len_keep { 0.0 } else { 1.0 };
            }
        }
        Self {
            batch,
            num_patches,
            len_keep,
            ids_shuffle,
            ids_restore,
            mask,
        }
    }

    /// Samples `start..start + n` as their own batch (a data-parallel shard).
    pub fn rows(&self, start: usize, n: usize) -> MaskBatch {
        let (l, r) = (
            self.num_patches,
            start * self.num_patches..(start + n) * self.num_patches,
        );
        MaskBatch {
            batch: n,
            num_patches: l,
            len_keep: self.len_keep,
            ids_shuffle: self.ids_shuffle[r.clone()].to_vec(),
            ids_restore: self.ids_restore[r.clone()].to_vec(),
            mask: self.mask[r].to_vec(),
        }
    }

    /// ids_keep (B, len_keep): the visible patches in ascending-noise order.
    pub fn ids_keep(&self) -> Vec<i64> {
        let mut v = Vec::with_capacity(self.batch * self.len_keep);
        for b in 0..self.batch {
            let o = b * self.num_patches;
            v.extend_from_slice(&self.ids_shuffle[o..o + self.len_keep]);
        }
        v
    }

    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> MaskTensors<B> {
        let int = |v: Vec<i64>, n: usize| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [self.batch, n]), device)
        };
        MaskTensors {
            ids_keep: int(self.ids_keep(), self.len_keep),
            ids_restore: int(self.ids_restore.clone(), self.num_patches),
            mask: Tensor::from_data(
                TensorData::new(self.mask.clone(), [self.batch, self.num_patches]),
                device,
            ),
            len_keep: self.len_keep,
        }
    }
}

/// A batch of masks on the device.
#[derive(Clone, Debug)]
pub struct MaskTensors<B: Backend> {
    pub ids_keep: Tensor<B, 2, Int>,
    pub ids_restore: Tensor<B, 2, Int>,
    pub mask: Tensor<B, 2>,
    pub len_keep: usize,
}

/// Gather tokens (B, L, D) at per-sample indices (B, K) -> (B, K, D).
///
/// Done as a row selection from `x` seen as (B*L, D), sample i's token j being row
/// i*L + ids[i, j]: the same values as `gather` along dim 1 with the indices expanded to
/// (B, K, D) (PyTorch's form, numerics §0.4), but the backward pass adds whole rows back
/// (`select_add`) instead of scattering B*K*D single elements through a materialised index
/// tensor, which burn-flex 0.21 does one element at a time (docs/performance.md, "CPU backends").
pub fn gather_tokens<B: Backend>(x: Tensor<B, 3>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [b, l, d] = x.dims();
    let [_, k] = ids.dims();
    let first_row = Tensor::<B, 1, Int>::arange_step(0..(b * l) as i64, l, &x.device());
    let rows = (ids + first_row.reshape([b, 1])).reshape([b * k]);
    x.reshape([b * l, d]).select(0, rows).reshape([b, k, d])
}

/// Decoder input assembly (numerics §0.5): append mask tokens after the visible tokens (B, K, D)
/// and put everything back in spatial order with ids_restore (B, L) -> (B, L, D).
pub fn unshuffle_with_mask_tokens<B: Backend>(
    visible: Tensor<B, 3>,
    mask_token: Tensor<B, 3>,
    ids_restore: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let [b, k, d] = visible.dims();
    let [_, l] = ids_restore.dims();
    let x = Tensor::cat(vec![visible, mask_token.expand([b, l - k, d])], 1);
    gather_tokens(x, ids_restore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_noise_keeps_lowest_noise_in_ascending_order() {
        let noise = [0.9, 0.1, 0.5, 0.3];
        let mb = MaskBatch::from_noise(&noise, 1, 4, 0.5);
        assert_eq!(mb.ids_shuffle, vec![1, 3, 2, 0]);
        assert_eq!(mb.ids_keep(), vec![1, 3]);
        assert_eq!(mb.mask, vec![1.0, 0.0, 1.0, 0.0]);
        assert_eq!(mb.ids_restore, vec![3, 0, 2, 1]);
    }

    /// The row selection gives `gather` along dim 1's values and gradient, on both CPU
    /// backends (the parity tests exercise it only through whole models).
    fn gather_tokens_is_gather_along_tokens<B: burn::tensor::backend::AutodiffBackend>() {
        let dev = Default::default();
        let (b, l, d, k) = (3, 7, 5, 4);
        let values: Vec<f32> = (0..b * l * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = || Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [b, l, d]), &dev);
        let ids: Vec<i64> = vec![6, 0, 3, 2, 1, 5, 4, 0, 2, 6, 1, 3];
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, k]), &dev);
        let weights = Tensor::<B, 3>::from_data(
            TensorData::new((0..b * k * d).map(|i| i as f32).collect(), [b, k, d]),
            &dev,
        );
        let (x1, x2) = (x().require_grad(), x().require_grad());
        let ours = gather_tokens(x1.clone(), ids.clone());
        let theirs = x2
            .clone()
            .gather(1, ids.unsqueeze_dim::<3>(2).expand([b, k, d]));
        ours.to_data().assert_eq(&theirs.to_data(), true);
        let g1 = (ours * weights.clone()).sum().backward();
        let g2 = (theirs * weights).sum().backward();
        let (g1, g2) = (x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
        g1.to_data().assert_eq(&g2.to_data(), true);
        let unpicked: f32 = g1.slice([1..2, 6..7, 0..d]).sum().into_scalar().elem();
        assert_eq!(
            unpicked, 0.0,
            "token 6 of sample 1 is not kept: no gradient"
        );
    }

    #[test]
    fn gather_tokens_matches_gather_on_ndarray_and_flex() {
        use burn::backend::{Autodiff, Flex, NdArray};
        gather_tokens_is_gather_along_tokens::<Autodiff<NdArray>>();
        gather_tokens_is_gather_along_tokens::<Autodiff<Flex>>();
    }
}
