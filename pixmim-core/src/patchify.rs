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

/// [`patchify`] of one host image (3, H, W), row-major slices: (L, p*p*3).
pub fn patchify_host(chw: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(c * h * w);
    for r in 0..gh {
        for q in 0..gw {
            for y in 0..p {
                for x in 0..p {
                    for ch in 0..c {
                        out.push(chw[(ch * h + r * p + y) * w + q * p + x]);
                    }
                }
            }
        }
    }
    out
}

/// [`unpatchify`] of one host image: (L, p*p*3) -> (3, gh*p, gw*p).
pub fn unpatchify_host(patches: &[f32], p: usize, (gh, gw): (usize, usize)) -> Vec<f32> {
    let (h, w) = (gh * p, gw * p);
    let c = patches.len() / (h * w);
    let mut out = vec![0.0; patches.len()];
    for (t, patch) in patches.chunks(p * p * c).enumerate() {
        let (r, q) = (t / gw, t % gw);
        for y in 0..p {
            for x in 0..p {
                for ch in 0..c {
                    out[(ch * h + r * p + y) * w + q * p + x] = patch[(y * p + x) * c + ch];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patchify_matches_the_tensor_one_and_inverts() {
        type B = burn::backend::Flex;
        let (c, h, w, p) = (3, 8, 12, 4);
        let v: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let t = Tensor::<B, 4>::from_data(
            TensorData::new(v.clone(), [1, c, h, w]),
            &Default::default(),
        );
        let want: Vec<f32> = patchify(t, p).into_data().to_vec().unwrap();
        let got = patchify_host(&v, c, h, w, p);
        assert_eq!(got, want);
        assert_eq!(unpatchify_host(&got, p, (h / p, w / p)), v);
    }
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
