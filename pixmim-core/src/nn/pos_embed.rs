//! Fixed 2-D sin-cos position embeddings, both orientations (numerics §0.3), and their addition
//! to a batch of tokens.
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// `x + pos` for tokens `x` (B, N, D) and a position table `pos` (1, N, D), the table added
/// to every sample. Written as one N*D row broadcast over B rows, which burn-flex 0.21 adds
/// with its vectorised shared-row kernel; broadcast as (1, N, D) it falls to an
/// element-by-element strided loop. The same sums either way.
pub fn add_position<B: Backend>(x: Tensor<B, 3>, pos: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    assert_eq!(pos.dims(), [1, n, d], "position table shape");
    (x.reshape([b, n * d]) + pos.reshape([1, n * d])).reshape([b, n, d])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbedOrientation {
    /// facebookresearch/mae, ConvMAE, LSMAE: first half encodes the column; float64 math.
    Official,
    /// mmselfsup / mmpretrain: first half encodes the row; float32 math.
    Mm,
}

/// (G_h*G_w [+1 leading zero row for cls], dim) row-major; token t = r*G_w + c.
pub fn sincos_2d(
    dim: usize,
    gh: usize,
    gw: usize,
    cls_token: bool,
    o: PosEmbedOrientation,
) -> Vec<f32> {
    assert!(
        dim.is_multiple_of(4),
        "pos-embed width {dim} must be divisible by 4"
    );
    let q = dim / 4;
    let mut out = Vec::with_capacity((gh * gw + cls_token as usize) * dim);
    if cls_token {
        out.extend(std::iter::repeat_n(0.0f32, dim));
    }
    for r in 0..gh {
        for c in 0..gw {
            match o {
                PosEmbedOrientation::Official => {
                    for pos in [c as f64, r as f64] {
                        let omega = |k: usize| 1.0 / 10000f64.powf(k as f64 / q as f64);
                        out.extend((0..q).map(|k| (pos * omega(k)).sin() as f32));
                        out.extend((0..q).map(|k| (pos * omega(k)).cos() as f32));
                    }
                }
                PosEmbedOrientation::Mm => {
                    for pos in [r as f32, c as f32] {
                        let omega = |k: usize| 1.0f32 / 10000f32.powf(k as f32 / q as f32);
                        out.extend((0..q).map(|k| (pos * omega(k)).sin()));
                        out.extend((0..q).map(|k| (pos * omega(k)).cos()));
                    }
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
    fn official_first_half_is_column_and_mm_is_its_transpose() {
        let (d, g) = (16, 3);
        let off = sincos_2d(d, g, g, true, PosEmbedOrientation::Official);
        let mm = sincos_2d(d, g, g, true, PosEmbedOrientation::Mm);
        assert_eq!(off.len(), (g * g + 1) * d);
        assert!(off[..d].iter().all(|&v| v == 0.0), "cls row is zero");
        // token (r=1, c=2) = 1 + 1*3 + 2; first entry sin(c * omega_0) = sin(2)
        let t = 1 + 5;
        assert!((off[t * d] - 2f32.sin()).abs() < 1e-7);
        assert!((off[t * d + 4] - 2f32.cos()).abs() < 1e-7);
        assert!((off[t * d + 8] - 1f32.sin()).abs() < 1e-7);
        // second frequency: omega_1 = 10000^(-1/4)
        assert!((off[t * d + 1] as f64 - (2.0 * 10000f64.powf(-0.25)).sin()).abs() < 1e-7);
        // mm at (r, c) equals official at (c, r)
        for r in 0..g {
            for c in 0..g {
                let a = &mm[(1 + r * g + c) * d..(2 + r * g + c) * d];
                let b = &off[(1 + c * g + r) * d..(2 + c * g + r) * d];
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn add_position_adds_the_table_to_every_sample() {
        use burn::backend::{Autodiff, Flex};
        type B = Autodiff<Flex>;
        let dev = Default::default();
        let (b, n, d) = (3, 5, 4);
        let x = Tensor::<B, 3>::from_data(
            TensorData::new((0..b * n * d).map(|i| i as f32).collect(), [b, n, d]),
            &dev,
        )
        .require_grad();
        let pos = Tensor::<B, 3>::from_data(
            TensorData::new((0..n * d).map(|i| (i as f32).sqrt()).collect(), [1, n, d]),
            &dev,
        )
        .require_grad();
        let y = add_position(x.clone(), pos.clone());
        y.to_data()
            .assert_eq(&(x.clone() + pos.clone()).to_data(), true);
        let grads = (y * 2.0).sum().backward();
        let gx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let gp: Vec<f32> = pos.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(gx.iter().all(|&g| g == 2.0));
        assert_eq!(gp.len(), n * d);
        assert!(
            gp.iter().all(|&g| g == 2.0 * b as f32),
            "summed over the batch"
        );
    }
}
