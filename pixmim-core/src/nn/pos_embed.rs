//! Fixed 2-D sin-cos position embeddings, both orientations (spec §0.3).
use serde::{Deserialize, Serialize};

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
}
