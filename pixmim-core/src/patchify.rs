//! patchify / unpatchify in the spec's target layout (§0.2): (B, 3, H, W) -> (B, L, p*p*3)
//! with the patch vector ordered (row-in-patch, col-in-patch, channel) and patches row-major.
//! (Patch *embedding* uses the conv's (c, i, j) order instead; see `nn::patch_embed`.)
use burn::prelude::*;

pub fn patchify<B: Backend>(imgs: Tensor<B, 4>, p: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = imgs.dims();
    assert!(
        h % p == 0 && w % p == 0,
        "image {h}x{w} not divisible by patch {p}"
    );
    let (gh, gw) = (h / p, w / p);
    imgs.reshape([b, c, gh, p, gw, p])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, gh * gw, p * p * c])
}

/// Exact inverse of [`patchify`] for a (gh x gw) grid.
pub fn unpatchify<B: Backend>(x: Tensor<B, 3>, p: usize, gh: usize, gw: usize) -> Tensor<B, 4> {
    let [b, l, d] = x.dims();
    assert_eq!(l, gh * gw);
    let c = d / (p * p);
    x.reshape([b, gh, gw, p, p, c])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([b, c, gh * p, gw * p])
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn layout_is_row_col_channel_and_round_trips() {
        let dev = Default::default();
        let (c, h, w, p) = (3, 4, 6, 2);
        let data: Vec<f32> = (0..c * h * w).map(|v| v as f32).collect();
        let img = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [1, c, h, w]), &dev);
        let x = patchify(img.clone(), p);
        assert_eq!(x.dims(), [1, 6, 12]);
        let v: Vec<f32> = x.clone().into_data().to_vec().unwrap();
        // patch (r=1, c=2) is token 1*3+2 = 5; element (i, j, ch) at (i*p + j)*3 + ch
        let at = |ch: usize, y: usize, xx: usize| data[(ch * h + y) * w + xx];
        for i in 0..p {
            for j in 0..p {
                for ch in 0..3 {
                    assert_eq!(v[5 * 12 + (i * p + j) * 3 + ch], at(ch, 2 + i, 4 + j));
                }
            }
        }
        let back = unpatchify(x, p, 2, 3);
        assert_eq!(back.into_data().to_vec::<f32>().unwrap(), data);
    }
}
