//! The image filters the corruptions are built from, on float images (H, W, C) in [0, 1]:
//! Gaussian blur with SciPy's border modes (skimage's `gaussian` calls SciPy), 2-D
//! convolution with OpenCV's default border, and bilinear sampling.

/// An image as floats, (H, W, C) row-major, values nominally in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct FloatImage {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl FloatImage {
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        Self {
            height: img.height() as usize,
            width: img.width() as usize,
            channels: 3,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    /// One channel of zeros.
    pub fn plane(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            channels: 1,
            data: vec![0.0; height * width],
        }
    }

    /// `np.uint8(np.clip(x, 0, 1) * 255)`: clipped, then truncated as NumPy's cast does.
    pub fn to_rgb(&self) -> image::RgbImage {
        assert_eq!(self.channels, 3);
        let raw = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0) as u8)
            .collect();
        image::RgbImage::from_raw(self.width as u32, self.height as u32, raw).expect("size")
    }

    pub fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    pub fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }
}

/// How a filter reads past the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// SciPy `nearest`: the edge value repeats (a a a | a b c).
    Nearest,
    /// SciPy `reflect`: mirrored including the edge (b a | a b c).
    Reflect,
    /// OpenCV `BORDER_REFLECT_101` (its default) and SciPy `mirror`: mirrored about the edge
    /// (c b | a b c).
    Reflect101,
}

impl Border {
    /// Index `i` (possibly outside) of a line of length `n`.
    pub fn index(self, i: i64, n: usize) -> usize {
        let n = n as i64;
        if n == 1 {
            return 0;
        }
        let i = match self {
            Border::Nearest => i.clamp(0, n - 1),
            Border::Reflect => {
                let p = i.rem_euclid(2 * n);
                if p < n {
                    p
                } else {
                    2 * n - 1 - p
                }
            }
            Border::Reflect101 => {
                let p = i.rem_euclid(2 * n - 2);
                if p < n {
                    p
                } else {
                    2 * n - 2 - p
                }
            }
        };
        i as usize
    }
}

/// SciPy's Gaussian kernel: radius `int(truncate * sigma + 0.5)`, normalised.
pub fn gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f32> {
    let r = (truncate * sigma + 0.5) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| (v / s) as f32).collect()
}

/// Separable Gaussian blur of every channel (`scipy.ndimage.gaussian_filter` with sigma in
/// both spatial axes, 0 across channels).
pub fn gaussian_blur(img: &FloatImage, sigma: f64, truncate: f64, border: Border) -> FloatImage {
    if sigma <= 0.0 {
        return img.clone();
    }
    let k = gaussian_kernel(sigma, truncate);
    convolve_along(&convolve_along(img, &k, border, false), &k, border, true)
}

/// Correlate every channel with the odd 1-D kernel `k` along the rows (`vertical` false)
/// or the columns, reading past the edge through `border`.
fn convolve_along(img: &FloatImage, k: &[f32], border: Border, vertical: bool) -> FloatImage {
    let r = (k.len() / 2) as i64;
    let (h, w, c) = (img.height, img.width, img.channels);
    let mut out = img.clone();
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                out.data[(y * w + x) * c + ch] = k
                    .iter()
                    .enumerate()
                    .map(|(j, &kv)| {
                        let d = j as i64 - r;
                        let v = if vertical {
                            img.at(border.index(y as i64 + d, h), x, ch)
                        } else {
                            img.at(y, border.index(x as i64 + d, w), ch)
                        };
                        kv * v
                    })
                    .sum();
            }
        }
    }
    out
}

/// `cv2.filter2D(img, -1, kernel)` per channel: correlation with a square odd kernel
/// centred on each pixel, `BORDER_REFLECT_101`.
pub fn filter2d(img: &FloatImage, kernel: &[f32], size: usize) -> FloatImage {
    assert_eq!(kernel.len(), size * size);
    let r = (size / 2) as i64;
    let (h, w, c) = (img.height, img.width, img.channels);
    let mut out = img.clone();
    let b = Border::Reflect101;
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let mut acc = 0.0f32;
                for (ky, row) in kernel.chunks_exact(size).enumerate() {
                    let yy = b.index(y as i64 + ky as i64 - r, h);
                    for (kx, &kv) in row.iter().enumerate() {
                        if kv != 0.0 {
                            acc += kv * img.at(yy, b.index(x as i64 + kx as i64 - r, w), ch);
                        }
                    }
                }
                out.data[(y * w + x) * c + ch] = acc;
            }
        }
    }
    out
}

/// Bilinear sample of channel `c` at (y, x) in pixel coordinates (pixel centres at integers),
/// neighbours read through `border`.
pub fn bilinear(img: &FloatImage, y: f64, x: f64, c: usize, border: Border) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (dy, dx) = ((y - y0) as f32, (x - x0) as f32);
    let (y0, x0) = (y0 as i64, x0 as i64);
    let px =
        |yy: i64, xx: i64| img.at(border.index(yy, img.height), border.index(xx, img.width), c);
    let top = px(y0, x0) * (1.0 - dx) + px(y0, x0 + 1) * dx;
    let bottom = px(y0 + 1, x0) * (1.0 - dx) + px(y0 + 1, x0 + 1) * dx;
    top * (1.0 - dy) + bottom * dy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_follow_scipy_and_opencv() {
        // A line a b c d (indices 0..4), read from -3 to 6.
        let read = |b: Border| (-3..7).map(|i| b.index(i, 4)).collect::<Vec<_>>();
        assert_eq!(read(Border::Nearest), [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        assert_eq!(read(Border::Reflect), [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert_eq!(read(Border::Reflect101), [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn gaussian_kernels_are_scipys_and_keep_constants() {
        // sigma 1, truncate 4: radius 4, 9 taps, centre exp(0) / sum.
        let k = gaussian_kernel(1.0, 4.0);
        assert_eq!(k.len(), 9);
        let s: f64 = (-4..=4).map(|x: i32| (-0.5 * (x * x) as f64).exp()).sum();
        assert!((k[4] as f64 - 1.0 / s).abs() < 1e-7);
        let flat = FloatImage {
            height: 5,
            width: 6,
            channels: 3,
            data: vec![0.3; 90],
        };
        for b in [Border::Nearest, Border::Reflect, Border::Reflect101] {
            let g = gaussian_blur(&flat, 1.5, 4.0, b);
            assert!(g.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        }
    }

    #[test]
    fn filter2d_correlates_and_bilinear_interpolates() {
        let mut img = FloatImage::plane(3, 3);
        img.data[4] = 1.0;
        // A kernel with a single 1 right of centre reads the right neighbour.
        let mut k = vec![0.0; 9];
        k[5] = 1.0;
        let out = filter2d(&img, &k, 3);
        // (1, 2) reads (1, 3), mirrored to (1, 1).
        assert_eq!(out.data, [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        assert!((bilinear(&img, 1.0, 0.5, 0, Border::Nearest) - 0.5).abs() < 1e-7);
        assert!((bilinear(&img, 0.5, 0.5, 0, Border::Nearest) - 0.25).abs() < 1e-7);
    }
}
