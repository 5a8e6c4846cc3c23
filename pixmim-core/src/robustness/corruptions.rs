//! Twelve of ImageNet-C's fifteen corruptions (Hendrycks & Dietterich 2019,
//! `make_imagenet_c.py`), with its severity tables. Spatial parameters (blur radii and
//! sigmas, glass-blur shifts, the elastic field) are ImageNet-C's at 224 px and scale with
//! the image's shorter side (glass-blur shifts at least 1 px; fog's fractal is drawn at the
//! image's size rounded up to a power of two, 256 at 224 as in ImageNet-C); the rest do not
//! depend on size. The random draws follow ImageNet-C's distributions, not NumPy's streams. Left out: motion blur and snow
//! (both are ImageMagick's `motion_blur` through Wand, whose kernel is not documented well
//! enough to match) and frost (it blends ImageNet-C's own frost photographs).
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Normal, Poisson};

use super::filters::{bilinear, filter2d, gaussian_blur, Border, FloatImage};

/// `(x * 255).astype(np.uint8)` of one value in [0, 1].
fn to_u8(v: f32) -> f32 {
    ((v.clamp(0.0, 1.0) * 255.0) as u8) as f32 / 255.0
}

pub fn gaussian_noise(x: FloatImage, s: usize, rng: &mut StdRng) -> FloatImage {
    let c = [0.08, 0.12, 0.18, 0.26, 0.38][s - 1];
    let n = Normal::new(0.0f32, c).expect("std > 0");
    x.map_with(rng, |v, r| v + n.sample(r))
}

pub fn shot_noise(x: FloatImage, s: usize, rng: &mut StdRng) -> FloatImage {
    let c = [60.0, 25.0, 12.0, 5.0, 3.0][s - 1];
    x.map_with(rng, |v, r| {
        let lambda = v as f64 * c;
        if lambda <= 0.0 {
            return 0.0;
        }
        let k: f64 = Poisson::new(lambda).expect("lambda > 0").sample(r);
        (k / c) as f32
    })
}

/// skimage's `random_noise(mode="s&p", amount=c)`: each value (per channel) independently
/// replaced with probability c, by 1 or 0 equally often.
pub fn impulse_noise(x: FloatImage, s: usize, rng: &mut StdRng) -> FloatImage {
    let c = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1];
    x.map_with(rng, |v, r| {
        let (flip, salt) = (r.gen::<f64>() <= c, r.gen::<f64>() <= 0.5);
        match (flip, salt) {
            (true, true) => 1.0,
            (true, false) => 0.0,
            _ => v,
        }
    })
}

/// A disk of `radius`, antialiased by a small Gaussian (ImageNet-C's `disk`), as a square
/// kernel with its side.
pub fn disk(radius: f64, alias_blur: f64) -> (Vec<f32>, usize) {
    let (lo, ksize) = if radius <= 8.0 {
        (-8.0, 3)
    } else {
        (-radius, 5)
    };
    let coords: Vec<f64> = (0..)
        .map(|i| lo + i as f64)
        .take_while(|&v| v < -lo + 1.0)
        .collect();
    let n = coords.len();
    let mut k: Vec<f32> = coords
        .iter()
        .flat_map(|&y| {
            coords
                .iter()
                .map(move |&x| (x * x + y * y <= radius * radius) as u8 as f32)
        })
        .collect();
    let s: f32 = k.iter().sum::<f32>().max(1.0);
    k.iter_mut().for_each(|v| *v /= s);
    // cv2.GaussianBlur(kernel, (ksize, ksize), alias_blur): a `ksize`-tap Gaussian each way.
    let r = (ksize / 2) as i64;
    let g: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * alias_blur * alias_blur)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let mut g2 = vec![0.0f32; ksize * ksize];
    for (i, a) in g.iter().enumerate() {
        for (j, b) in g.iter().enumerate() {
            g2[i * ksize + j] = (a * b / (gs * gs)) as f32;
        }
    }
    let plane = FloatImage {
        height: n,
        width: n,
        channels: 1,
        data: k,
    };
    (filter2d(&plane, &g2, ksize).data, n)
}

pub fn defocus_blur(x: FloatImage, s: usize, scale: f64) -> FloatImage {
    let (r, alias) = [(3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)][s - 1];
    let (k, n) = disk(r * scale, alias);
    filter2d(&x, &k, n)
}

pub fn glass_blur(x: FloatImage, s: usize, scale: f64, rng: &mut StdRng) -> FloatImage {
    let (sigma, delta, iterations) = [
        (0.7, 1.0, 2),
        (0.9, 2.0, 1),
        (1.0, 2.0, 3),
        (1.1, 3.0, 2),
        (1.5, 4.0, 2),
    ][s - 1];
    let (sigma, d) = (sigma * scale, ((delta * scale).round() as i64).max(1));
    let mut x = gaussian_blur(&x, sigma, 4.0, Border::Nearest).map(to_u8);
    let (h, w, c) = (x.height as i64, x.width as i64, x.channels);
    // Local pixel swaps, bottom-right to top-left, as the reference loops.
    for _ in 0..iterations {
        for yy in (d + 1..=h - d).rev() {
            for xx in (d + 1..=w - d).rev() {
                let (dx, dy) = (rng.gen_range(-d..d), rng.gen_range(-d..d));
                let (y2, x2) = (yy + dy, xx + dx);
                if yy >= h || xx >= w || y2 < 0 || x2 < 0 || y2 >= h || x2 >= w {
                    continue;
                }
                let a = ((yy * w + xx) as usize) * c;
                let b = ((y2 * w + x2) as usize) * c;
                for ch in 0..c {
                    x.data.swap(a + ch, b + ch);
                }
            }
        }
    }
    gaussian_blur(&x, sigma, 4.0, Border::Nearest)
}

/// SciPy's `zoom(order=1)` of the centre 1/z of `x` back to full size (`clipped_zoom`).
fn clipped_zoom(x: &FloatImage, z: f64) -> FloatImage {
    let (h, w) = (x.height, x.width);
    let (ch, cw) = (
        (h as f64 / z).ceil() as usize,
        (w as f64 / z).ceil() as usize,
    );
    let (top, left) = ((h - ch) / 2, (w - cw) / 2);
    let (oh, ow) = (
        (ch as f64 * z).round() as usize,
        (cw as f64 * z).round() as usize,
    );
    let (trim_t, trim_l) = ((oh - h) / 2, (ow - w) / 2);
    // Output index o of the zoomed crop samples crop coordinate o (n_in - 1) / (n_out - 1).
    let ratio = |n_in: usize, n_out: usize| {
        if n_out > 1 {
            (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
        } else {
            0.0
        }
    };
    let (ry, rx) = (ratio(ch, oh), ratio(cw, ow));
    let mut out = x.clone();
    for y in 0..h {
        for xx in 0..w {
            let sy = top as f64 + (y + trim_t) as f64 * ry;
            let sx = left as f64 + (xx + trim_l) as f64 * rx;
            for c in 0..x.channels {
                out.data[(y * w + xx) * x.channels + c] = bilinear(x, sy, sx, c, Border::Nearest);
            }
        }
    }
    out
}

pub fn zoom_blur(x: FloatImage, s: usize) -> FloatImage {
    let (end, step) = [
        (1.11, 0.01),
        (1.16, 0.01),
        (1.21, 0.02),
        (1.26, 0.02),
        (1.31, 0.03),
    ][s - 1];
    let zooms: Vec<f64> = (0..)
        .map(|i| 1.0 + i as f64 * step)
        .take_while(|&z| z < end)
        .collect();
    let mut acc = x.clone();
    for &z in &zooms {
        let zoomed = clipped_zoom(&x, z);
        acc.data
            .iter_mut()
            .zip(&zoomed.data)
            .for_each(|(a, b)| *a += b);
    }
    let n = (zooms.len() + 1) as f32;
    acc.map(|v| v / n)
}

/// ImageNet-C's `plasma_fractal`: diamond-square on a wrapping `size` x `size` grid (a power
/// of two), the random offsets shrinking by `decay` per level, scaled to [0, 1].
pub fn plasma_fractal(size: usize, decay: f64, rng: &mut StdRng) -> Vec<f64> {
    assert!(size.is_power_of_two());
    let mut m = vec![0.0f64; size * size];
    let at = |i: usize, j: usize| (i % size) * size + (j % size);
    let (mut step, mut wibble) = (size, 100.0f64);
    while step >= 2 {
        let (half, n) = (step / 2, size / step);
        let noisy = |sum: f64, r: &mut StdRng| sum / 4.0 + wibble * r.gen_range(-wibble..wibble);
        // Squares: each centre from its four corners.
        for i in 0..n {
            for j in 0..n {
                let sum = m[at(i * step, j * step)]
                    + m[at((i + 1) * step, j * step)]
                    + m[at(i * step, (j + 1) * step)]
                    + m[at((i + 1) * step, (j + 1) * step)];
                m[at(i * step + half, j * step + half)] = noisy(sum, rng);
            }
        }
        // Diamonds: edge midpoints from the two centres and two corners around them.
        let centre = |m: &Vec<f64>, i: i64, j: i64| {
            m[at(
                (i.rem_euclid(n as i64)) as usize * step + half,
                (j.rem_euclid(n as i64)) as usize * step + half,
            )]
        };
        for i in 0..n {
            for j in 0..n {
                let sum = centre(&m, i as i64, j as i64)
                    + centre(&m, i as i64 - 1, j as i64)
                    + m[at(i * step, j * step)]
                    + m[at(i * step, (j + 1) * step)];
                m[at(i * step, j * step + half)] = noisy(sum, rng);
            }
        }
        for i in 0..n {
            for j in 0..n {
                let sum = centre(&m, i as i64, j as i64)
                    + centre(&m, i as i64, j as i64 - 1)
                    + m[at(i * step, j * step)]
                    + m[at((i + 1) * step, j * step)];
                m[at(i * step + half, j * step)] = noisy(sum, rng);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let lo = m.iter().cloned().fold(f64::INFINITY, f64::min);
    m.iter_mut().for_each(|v| *v -= lo);
    let hi = m.iter().cloned().fold(0.0, f64::max).max(1e-12);
    m.iter().map(|v| v / hi).collect()
}

pub fn fog(x: FloatImage, s: usize, rng: &mut StdRng) -> FloatImage {
    let (strength, decay) = [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s - 1];
    let size = x.height.max(x.width).next_power_of_two();
    let plasma = plasma_fractal(size, decay, rng);
    let max = x.data.iter().cloned().fold(0.0f32, f32::max);
    let k = max / (max + strength as f32);
    let mut out = x.clone();
    for y in 0..x.height {
        for xx in 0..x.width {
            let add = (strength * plasma[y * size + xx]) as f32;
            for c in 0..x.channels {
                let i = (y * x.width + xx) * x.channels + c;
                out.data[i] = (x.data[i] + add) * k;
            }
        }
    }
    out
}

/// HSV value + c: with hue and saturation kept, RGB scales with the value (a black pixel
/// becomes grey at c).
pub fn brightness(mut x: FloatImage, s: usize) -> FloatImage {
    let c = [0.1f32, 0.2, 0.3, 0.4, 0.5][s - 1];
    for px in x.data.chunks_exact_mut(3) {
        let v = px[0].max(px[1]).max(px[2]);
        let v2 = (v + c).min(1.0);
        if v > 0.0 {
            px.iter_mut().for_each(|p| *p *= v2 / v);
        } else {
            px.fill(v2);
        }
    }
    x
}

pub fn contrast(mut x: FloatImage, s: usize) -> FloatImage {
    let c = [0.4f32, 0.3, 0.2, 0.1, 0.05][s - 1];
    let n = (x.height * x.width) as f32;
    let means: Vec<f32> = (0..x.channels)
        .map(|ch| x.data.iter().skip(ch).step_by(x.channels).sum::<f32>() / n)
        .collect();
    let channels = x.channels;
    for (i, v) in x.data.iter_mut().enumerate() {
        let m = means[i % channels];
        *v = (*v - m) * c + m;
    }
    x
}

/// The affine map (2 x 3) taking the three points `from` to `to`
/// (`cv2.getAffineTransform`).
fn affine_from_points(from: [[f64; 2]; 3], to: [[f64; 2]; 3]) -> [f64; 6] {
    // Solve [x y 1] (a b c)^T = x' and = y' by Cramer's rule.
    let det3 = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let a = from.map(|p| [p[0], p[1], 1.0]);
    let d = det3(a);
    let mut out = [0.0; 6];
    for row in 0..2 {
        for col in 0..3 {
            let mut m = a;
            for k in 0..3 {
                m[k][col] = to[k][row];
            }
            out[row * 3 + col] = det3(m) / d;
        }
    }
    out
}

pub fn elastic_transform(x: FloatImage, s: usize, scale: f64, rng: &mut StdRng) -> FloatImage {
    // ImageNet-C writes these in units of 244 (a typo for 224 its authors kept).
    let (alpha, sigma, shift) = [
        (244.0 * 2.0, 244.0 * 0.7, 244.0 * 0.1),
        (244.0 * 2.0, 244.0 * 0.08, 244.0 * 0.2),
        (244.0 * 0.05, 244.0 * 0.01, 244.0 * 0.02),
        (244.0 * 0.07, 244.0 * 0.01, 244.0 * 0.02),
        (244.0 * 0.12, 244.0 * 0.01, 244.0 * 0.02),
    ][s - 1];
    // The displacement is alpha x the smoothed field's spread, which falls as 1 / sigma:
    // alpha scales twice so that displacements scale with the image like the rest.
    let (alpha, sigma, shift) = (alpha * scale * scale, sigma * scale, shift * scale);
    let (h, w, ch) = (x.height, x.width, x.channels);
    // A random affine: three points around the centre moved by up to `shift`.
    let (cy, cx) = ((h / 2) as f64, (w / 2) as f64);
    let sq = (h.min(w) / 3) as f64;
    let from = [[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]];
    let to = from.map(|p| p.map(|v| v + rng.gen_range(-shift..shift)));
    // warpAffine samples the source at the inverse map of each output pixel.
    let m = affine_from_points(to, from);
    let mut warped = x.clone();
    for y in 0..h {
        for xx in 0..w {
            let sx = m[0] * xx as f64 + m[1] * y as f64 + m[2];
            let sy = m[3] * xx as f64 + m[4] * y as f64 + m[5];
            for c in 0..ch {
                warped.data[(y * w + xx) * ch + c] = bilinear(&x, sy, sx, c, Border::Reflect101);
            }
        }
    }
    // Smooth random displacement fields.
    let field = |r: &mut StdRng| {
        let mut f = FloatImage::plane(h, w);
        f.data.iter_mut().for_each(|v| *v = r.gen_range(-1.0..1.0));
        gaussian_blur(&f, sigma, 3.0, Border::Reflect).map(|v| v * alpha as f32)
    };
    let (dx, dy) = (field(rng), field(rng));
    let mut out = warped.clone();
    for y in 0..h {
        for xx in 0..w {
            let (sy, sx) = (
                y as f64 + dy.data[y * w + xx] as f64,
                xx as f64 + dx.data[y * w + xx] as f64,
            );
            for c in 0..ch {
                out.data[(y * w + xx) * ch + c] = bilinear(&warped, sy, sx, c, Border::Reflect);
            }
        }
    }
    out
}

/// PIL `resize(BOX)` down to a fraction of the size and back up.
pub fn pixelate(x: &image::RgbImage, s: usize) -> image::RgbImage {
    use fast_image_resize::{
        images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    };
    let c = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1];
    let (w, h) = x.dimensions();
    let (sw, sh) = (
        ((w as f64 * c) as u32).max(1),
        ((h as f64 * c) as u32).max(1),
    );
    let resize = |src: &image::RgbImage, w: u32, h: u32| {
        let src = Image::from_vec_u8(
            src.width(),
            src.height(),
            src.as_raw().clone(),
            PixelType::U8x3,
        )
        .expect("RGB buffer");
        let mut dst = Image::new(w, h, PixelType::U8x3);
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
        Resizer::new()
            .resize(&src, &mut dst, &opts)
            .expect("resize");
        image::RgbImage::from_raw(w, h, dst.into_vec()).expect("size")
    };
    resize(&resize(x, sw, sh), w, h)
}

/// Encoded as JPEG at ImageNet-C's quality and decoded again.
pub fn jpeg_compression(x: &image::RgbImage, s: usize) -> image::RgbImage {
    let q = [25u8, 18, 15, 10, 7][s - 1];
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q)
        .encode_image(x)
        .expect("JPEG encoding of an RGB image");
    image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .expect("decoding our own JPEG")
        .to_rgb8()
}

impl FloatImage {
    fn map_with(mut self, rng: &mut StdRng, f: impl Fn(f32, &mut StdRng) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v, rng));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn flat(v: f32, side: usize) -> FloatImage {
        FloatImage {
            height: side,
            width: side,
            channels: 3,
            data: vec![v; side * side * 3],
        }
    }

    fn mean_std(d: &[f32]) -> (f64, f64) {
        let n = d.len() as f64;
        let m = d.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = d.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var.sqrt())
    }

    #[test]
    fn noises_have_the_tabled_statistics() {
        let r = &mut StdRng::seed_from_u64(0);
        for (s, c) in [(1, 0.08), (5, 0.38)] {
            let (m, sd) = mean_std(&gaussian_noise(flat(0.5, 64), s, r).data);
            // At severity 5 the clip at 0 and 1 (|z| > 1.3) shrinks the spread a little.
            assert!(
                (m - 0.5).abs() < 0.01 && (sd - c).abs() < 0.05 * c + 0.04 * (s - 1) as f64,
                "{s}: {m} {sd}"
            );
        }
        // Poisson(x c) / c: mean x, variance x / c.
        let (m, sd) = mean_std(&shot_noise(flat(0.5, 64), 1, r).data);
        assert!(
            (m - 0.5).abs() < 0.01 && (sd - (0.5f64 / 60.0).sqrt()).abs() < 0.005,
            "{m} {sd}"
        );
        // Salt and pepper: 27% of values replaced at severity 5, half by 1, half by 0.
        let d = impulse_noise(flat(0.5, 64), 5, r).data;
        let (ones, zeros) = (
            d.iter().filter(|&&v| v == 1.0).count(),
            d.iter().filter(|&&v| v == 0.0).count(),
        );
        let n = d.len() as f64;
        assert!(
            ((ones + zeros) as f64 / n - 0.27).abs() < 0.015
                && (ones as f64 / zeros as f64 - 1.0).abs() < 0.1
        );
    }

    #[test]
    fn blurs_keep_a_flat_image_and_spread_a_point() {
        let r = &mut StdRng::seed_from_u64(1);
        let scale = 1.0;
        let blurred: [fn(FloatImage, &mut StdRng) -> FloatImage; 4] = [
            |x, _| defocus_blur(x, 3, 1.0),
            |x, r| glass_blur(x, 1, 1.0, r),
            |x, _| zoom_blur(x, 3),
            |x, r| elastic_transform(x, 3, 1.0, r),
        ];
        for (k, f) in blurred.iter().enumerate() {
            let out = f(flat(0.4, 32), r);
            assert!(out.data.iter().all(|v| (v - 0.4).abs() < 2e-3), "blur {k}");
        }
        // The defocus disk of radius 6 (severity 3) sums to 1 and covers ~pi 6^2 pixels.
        let (k, n) = disk(6.0 * scale, 0.5);
        assert_eq!(n, 17);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // The antialiasing spreads the edge by a pixel: count where it is above half height.
        let top = k.iter().cloned().fold(0.0f32, f32::max);
        let support = k.iter().filter(|&&v| v > top / 2.0).count() as f64;
        assert!(
            (support / (std::f64::consts::PI * 36.0) - 1.0).abs() < 0.15,
            "{support}"
        );
    }

    #[test]
    fn digital_and_weather_corruptions_do_what_imagenet_c_says() {
        let r = &mut StdRng::seed_from_u64(2);
        // Brightness: black becomes grey at +c; a colour keeps its channel ratios.
        let mut x = flat(0.0, 2);
        x.data[3..6].copy_from_slice(&[0.2, 0.4, 0.1]);
        let b = brightness(x, 2);
        assert_eq!(&b.data[..3], &[0.2; 3]);
        assert!((b.data[4] / b.data[3] - 2.0).abs() < 1e-6 && (b.data[4] - 0.6).abs() < 1e-6);
        // Contrast: per-channel mean kept, deviations times c.
        let mut x = flat(0.5, 4);
        x.data
            .iter_mut()
            .step_by(3)
            .enumerate()
            .for_each(|(i, v)| *v = (i % 2) as f32);
        let c5 = contrast(x.clone(), 5);
        let (m0, s0) = mean_std(&x.data.iter().step_by(3).copied().collect::<Vec<_>>());
        let (m1, s1) = mean_std(&c5.data.iter().step_by(3).copied().collect::<Vec<_>>());
        assert!((m0 - m1).abs() < 1e-6 && (s1 / s0 - 0.05).abs() < 1e-5);
        // Fog: the fractal spans [0, 1]; fog lowers the contrast and keeps the image's
        // maximum as the ceiling.
        let p = plasma_fractal(32, 2.0, r);
        let (lo, hi) = p
            .iter()
            .fold((1.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-12);
        let mut x = flat(0.0, 32);
        x.data[..32 * 16 * 3].fill(0.8);
        let f = fog(x.clone(), 1, r);
        assert!(f.data.iter().all(|&v| v <= 0.8 + 1e-6));
        assert!(mean_std(&f.data).1 < 0.6 * mean_std(&x.data).1);
        // Pixelate at 0.25: a 32 px image is made of 8 px blocks (each row has at most 8 runs).
        let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 7 + y) as u8, 0, 0]));
        let p = pixelate(&img, 5);
        for y in 0..32 {
            let runs = (1..32)
                .filter(|&x| p.get_pixel(x, y) != p.get_pixel(x - 1, y))
                .count()
                + 1;
            assert!(runs <= 8, "row {y}: {runs}");
        }
        // JPEG: lower quality, larger error.
        let err = |s| {
            let j = jpeg_compression(&img, s);
            j.as_raw()
                .iter()
                .zip(img.as_raw())
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
        };
        assert!(err(5) > err(1) && err(1) > 0.0);
    }
}
