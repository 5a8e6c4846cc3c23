//! The PIL image operations RandAugment is defined with (timm's `auto_augment.py` calls
//! `ImageOps`, `ImageEnhance` and `Image.transform`), on 8-bit RGB, with PIL's conventions:
//! - geometry (`Image.transform(AFFINE)`): output pixel (x, y) samples the input at
//!   `a (x + 0.5, y + 0.5) + c`, PIL's bicubic (the cubic convolution with a = -1 that PIL's
//!   transforms use, neighbours clamped to the border), values truncated to u8, and points
//!   outside the input take the fill colour;
//! - enhancement (`ImageEnhance`): `blend(degenerate, image, factor)`, truncated and clamped;
//! - grey (`convert("L")`): ITU-R 601-2 luma in PIL's 16-bit fixed point.
//!
//! Written here rather than taken from `imageproc`: its warps use other pixel-centre and
//! kernel conventions, and it would add nalgebra to every build for six small functions.
use image::{Rgb, RgbImage};

/// `Image.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)`: `m` maps output to input.
pub fn affine(img: &RgbImage, m: [f64; 6], fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64, c: usize| img.get_pixel(x.clamp(0, w - 1) as u32, y as u32)[c] as f64;
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
        let xin = m[0] * xo + m[1] * yo + m[2];
        let yin = m[3] * xo + m[4] * yo + m[5];
        if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
            return Rgb(fill);
        }
        let (xs, ys) = (xin - 0.5, yin - 0.5);
        let (x0, y0) = (xs.floor() as i64 - 1, ys.floor() as i64 - 1);
        let (dx, dy) = (xs - xs.floor(), ys - ys.floor());
        Rgb(std::array::from_fn(|c| {
            let row = |y: i64| cubic([0, 1, 2, 3].map(|i| px(x0 + i, y, c)), dx);
            // PIL clamps the first row and repeats the last valid row for rows past the
            // bottom edge (rather than clamping each).
            let mut v = [0.0; 4];
            v[0] = row(y0.clamp(0, h - 1));
            for i in 1..4 {
                let yy = y0 + i as i64;
                v[i] = if (0..h).contains(&yy) {
                    row(yy)
                } else {
                    v[i - 1]
                };
            }
            let r = cubic(v, dy);
            if r <= 0.0 {
                0
            } else if r >= 255.0 {
                255
            } else {
                r as u8
            }
        }))
    })
}

/// PIL's `BICUBIC` macro: cubic convolution with a = -1 through v[1] (d = 0) and v[2] (d = 1).
fn cubic(v: [f64; 4], d: f64) -> f64 {
    let p1 = v[1];
    let p2 = -v[0] + v[2];
    let p3 = 2.0 * (v[0] - v[1]) + v[2] - v[3];
    let p4 = -v[0] + v[1] - v[2] + v[3];
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// `Image.rotate(degrees)` about the centre, counter-clockwise, same size.
pub fn rotate(img: &RgbImage, degrees: f64, fill: [u8; 3]) -> RgbImage {
    let a = -degrees.to_radians();
    // PIL rounds the matrix to 15 decimals, which makes 90-degree multiples exact.
    let r = |v: f64| (v * 1e15).round() / 1e15;
    let (c, s) = (r(a.cos()), r(a.sin()));
    let (cx, cy) = (img.width() as f64 / 2.0, img.height() as f64 / 2.0);
    let m = [c, s, c * -cx + s * -cy + cx, -s, c, -s * -cx + c * -cy + cy];
    affine(img, m, fill)
}

pub fn shear_x(img: &RgbImage, factor: f64, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, factor, 0.0, 0.0, 1.0, 0.0], fill)
}

pub fn shear_y(img: &RgbImage, factor: f64, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, 0.0, factor, 1.0, 0.0], fill)
}

/// Content moves left by `pixels` (timm's `translate_x_abs`: the map adds `pixels` to x).
pub fn translate_x(img: &RgbImage, pixels: f64, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], fill)
}

pub fn translate_y(img: &RgbImage, pixels: f64, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], fill)
}

/// Apply one 256-entry table per channel.
fn map_channels(img: &RgbImage, luts: &[[u8; 256]; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in 0..3 {
            p[c] = luts[c][p[c] as usize];
        }
    }
    out
}

fn same_lut(f: impl Fn(u8) -> u8) -> [[u8; 256]; 3] {
    let lut: [u8; 256] = std::array::from_fn(|i| f(i as u8));
    [lut; 3]
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for p in img.pixels() {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

/// `ImageOps.autocontrast(img)` (no cutoff): each channel stretched so its darkest value
/// becomes 0 and its brightest 255; a constant channel is left alone.
pub fn auto_contrast(img: &RgbImage) -> RgbImage {
    let h = histograms(img);
    let luts = std::array::from_fn(|c| {
        let lo = h[c].iter().position(|&n| n > 0).unwrap_or(0);
        let hi = h[c].iter().rposition(|&n| n > 0).unwrap_or(0);
        std::array::from_fn(|i| {
            if hi <= lo {
                return i as u8;
            }
            let scale = 255.0 / (hi - lo) as f64;
            ((i as f64 * scale - lo as f64 * scale) as i64).clamp(0, 255) as u8
        })
    });
    map_channels(img, &luts)
}

/// `ImageOps.equalize(img)`: each channel's cumulative histogram as the mapping, with PIL's
/// integer steps (the last occupied bin left out of the step).
pub fn equalize(img: &RgbImage) -> RgbImage {
    let h = histograms(img);
    let luts = std::array::from_fn(|c| {
        let used: Vec<u64> = h[c].iter().copied().filter(|&n| n > 0).collect();
        let identity = std::array::from_fn(|i| i as u8);
        if used.len() <= 1 {
            return identity;
        }
        let step = (used.iter().sum::<u64>() - used[used.len() - 1]) / 255;
        if step == 0 {
            return identity;
        }
        let mut n = step / 2;
        std::array::from_fn(|i| {
            let v = (n / step).min(255) as u8;
            n += h[c][i];
            v
        })
    });
    map_channels(img, &luts)
}

pub fn invert(img: &RgbImage) -> RgbImage {
    map_channels(img, &same_lut(|v| 255 - v))
}

/// `ImageOps.posterize(img, bits)`: keep the top `bits` bits (0 gives black).
pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    map_channels(img, &same_lut(|v| v & mask))
}

/// `ImageOps.solarize(img, threshold)`: values at or above the threshold inverted.
pub fn solarize(img: &RgbImage, threshold: u32) -> RgbImage {
    map_channels(
        img,
        &same_lut(|v| if (v as u32) < threshold { v } else { 255 - v }),
    )
}

/// timm's `solarize_add`: `add` added (saturating) to values below the threshold.
pub fn solarize_add(img: &RgbImage, add: u32, threshold: u32) -> RgbImage {
    map_channels(
        img,
        &same_lut(|v| {
            if (v as u32) < threshold {
                (v as u32 + add).min(255) as u8
            } else {
                v
            }
        }),
    )
}

/// `convert("L")`: (19595 R + 38470 G + 7471 B + 2^15) >> 16.
pub fn luma(p: &Rgb<u8>) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, img, factor)`: degenerate + factor (img - degenerate), truncated
/// to u8 and clamped (factor > 1 extrapolates away from the degenerate image).
fn blend(degenerate: &RgbImage, img: &RgbImage, factor: f64) -> RgbImage {
    let f = factor as f32;
    let mut out = img.clone();
    for (o, d) in out.pixels_mut().zip(degenerate.pixels()) {
        for c in 0..3 {
            let v = d[c] as f32 + f * (o[c] as f32 - d[c] as f32);
            o[c] = if v <= 0.0 {
                0
            } else if v >= 255.0 {
                255
            } else {
                v as u8
            };
        }
    }
    out
}

/// `ImageEnhance.Color`: towards (factor < 1) or away from the image's grey version.
pub fn color(img: &RgbImage, factor: f64) -> RgbImage {
    let mut grey = img.clone();
    for p in grey.pixels_mut() {
        let l = luma(p);
        *p = Rgb([l; 3]);
    }
    blend(&grey, img, factor)
}

/// `ImageEnhance.Contrast`: towards or away from a flat image at the mean grey level.
pub fn contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let n = (img.width() * img.height()).max(1) as f64;
    let mean = img.pixels().map(|p| luma(p) as f64).sum::<f64>() / n;
    let flat = RgbImage::from_pixel(img.width(), img.height(), Rgb([(mean + 0.5) as u8; 3]));
    blend(&flat, img, factor)
}

/// `ImageEnhance.Brightness`: towards or away from black.
pub fn brightness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&RgbImage::new(img.width(), img.height()), img, factor)
}

/// `ImageEnhance.Sharpness`: towards or away from `filter(SMOOTH)` (3x3 kernel, centre 5,
/// others 1, over 13; the border pixels are not filtered).
pub fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let mut smooth = img.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let mut acc = [0u32; 3];
                for (dy, dx) in (0..3).flat_map(|dy| (0..3).map(move |dx| (dy, dx))) {
                    let k = if dy == 1 && dx == 1 { 5 } else { 1 };
                    let p = img.get_pixel(x + dx - 1, y + dy - 1);
                    for c in 0..3 {
                        acc[c] += k * p[c] as u32;
                    }
                }
                // Rounded to nearest: sum / 13 + 0.5.
                smooth.put_pixel(x, y, Rgb(acc.map(|a| ((2 * a + 13) / 26) as u8)));
            }
        }
    }
    blend(&smooth, img, factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 x 3 image with distinct values per pixel and channel.
    fn ramp() -> RgbImage {
        RgbImage::from_fn(4, 3, |x, y| {
            let v = (10 * (y * 4 + x)) as u8;
            Rgb([v, v + 1, 200 - v])
        })
    }

    #[test]
    fn the_identity_and_integer_translations_copy_pixels_exactly() {
        let img = ramp();
        assert_eq!(affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [7; 3]), img);
        // Content moves left by one: column x shows input column x + 1; the last is fill.
        let t = translate_x(&img, 1.0, [7, 8, 9]);
        for y in 0..3 {
            for x in 0..3 {
                assert_eq!(t.get_pixel(x, y), img.get_pixel(x + 1, y));
            }
            assert_eq!(t.get_pixel(3, y), &Rgb([7, 8, 9]));
        }
        let t = translate_y(&img, -1.0, [7, 8, 9]);
        assert_eq!(t.get_pixel(2, 0), &Rgb([7, 8, 9]));
        assert_eq!(t.get_pixel(2, 1), img.get_pixel(2, 0));
    }

    #[test]
    fn rotating_a_square_by_90_degrees_is_exact_and_counter_clockwise() {
        let img = RgbImage::from_fn(3, 3, |x, y| Rgb([(y * 3 + x) as u8 * 20, 0, 0]));
        let r = rotate(&img, 90.0, [0; 3]);
        // Counter-clockwise: the top-right pixel goes to the top-left.
        assert_eq!(r.get_pixel(0, 0), img.get_pixel(2, 0));
        assert_eq!(r.get_pixel(0, 2), img.get_pixel(0, 0));
        assert_eq!(r.get_pixel(1, 1), img.get_pixel(1, 1));
    }

    #[test]
    fn sub_pixel_samples_use_pils_cubic() {
        // Values below were printed by Pillow 13 (`Image.transform(AFFINE, BICUBIC)` and
        // `rotate`) on the same inputs.
        let row = |v: [u8; 4]| RgbImage::from_fn(4, 1, |x, _| Rgb([v[x as usize]; 3]));
        let r = |img: &RgbImage| img.pixels().map(|p| p[0]).collect::<Vec<_>>();
        // A symmetric step is interpolated linearly by the a = -1 cubic ...
        assert_eq!(
            r(&translate_x(&row([0, 0, 100, 100]), 0.25, [7; 3])),
            [0, 25, 114, 100]
        );
        assert_eq!(
            r(&translate_x(&row([0, 0, 100, 100]), 0.5, [7; 3])),
            [0, 50, 112, 7]
        );
        // ... a ramp that bends is not: linear would give 50 at x = 1.
        assert_eq!(
            r(&translate_x(&row([0, 0, 100, 200]), 0.5, [7; 3])),
            [0, 37, 162, 7]
        );
        let img = RgbImage::from_fn(6, 2, |x, _| Rgb([x as u8 * 10; 3]));
        let s = shear_x(&img, 1.0, [99; 3]);
        assert_eq!(r(&s)[..6], [3, 15, 25, 35, 46, 99]);
        assert_eq!(r(&s)[6..], [15, 25, 35, 46, 99, 99]);
        let rot = rotate(&ramp(), 30.0, [1, 2, 3]);
        assert_eq!(r(&rot), [1, 11, 37, 63, 9, 35, 74, 100, 46, 72, 98, 1]);
    }

    #[test]
    fn tables_do_what_pil_documents() {
        let img = RgbImage::from_raw(3, 1, vec![0, 100, 200, 127, 128, 255, 50, 60, 70]).unwrap();
        assert_eq!(invert(&img).as_raw()[..3], [255, 155, 55]);
        assert_eq!(posterize(&img, 1).as_raw()[..6], [0, 0, 128, 0, 128, 128]);
        assert_eq!(posterize(&img, 0).as_raw().iter().max(), Some(&0));
        assert_eq!(posterize(&img, 8), img);
        assert_eq!(solarize(&img, 128).as_raw()[3..6], [127, 127, 0]);
        assert_eq!(solarize(&img, 256), img);
        assert_eq!(
            solarize_add(&img, 100, 128).as_raw()[..6],
            [100, 200, 200, 227, 128, 255]
        );
    }

    #[test]
    fn autocontrast_stretches_each_channel_to_the_full_range() {
        let img = RgbImage::from_raw(2, 1, vec![50, 10, 7, 150, 20, 7]).unwrap();
        let a = auto_contrast(&img);
        // R: 50..150 -> 0..255; G: 10..20 -> 0..255; B constant: unchanged.
        assert_eq!(a.as_raw()[..], [0, 0, 7, 255, 255, 7]);
    }

    #[test]
    fn equalize_follows_pils_cumulative_steps() {
        // R values: 0 x2, 10 x1, 20 x1 -> used [2, 1, 1]; step = (4 - 1) / 255 = 0 -> unchanged.
        let img = RgbImage::from_raw(4, 1, vec![0, 0, 0, 0, 0, 0, 10, 0, 0, 20, 0, 0]).unwrap();
        assert_eq!(equalize(&img), img);
        // 512 pixels: 256 at 0 and 256 at 1: step = (512 - 256) / 255 = 1, n starts at 0:
        // lut[0] = 0, then n = 256: lut[1] = 256 -> clamped 255.
        let img = RgbImage::from_fn(512, 1, |x, _| Rgb([(x % 2) as u8, 0, 0]));
        let e = equalize(&img);
        assert_eq!((e.get_pixel(0, 0)[0], e.get_pixel(1, 0)[0]), (0, 255));
    }

    #[test]
    fn enhancements_blend_with_their_degenerate_image() {
        let img = RgbImage::from_raw(2, 1, vec![100, 50, 0, 200, 150, 100]).unwrap();
        assert_eq!(brightness(&img, 0.5).as_raw()[..3], [50, 25, 0]);
        assert_eq!(brightness(&img, 1.0), img);
        assert_eq!(brightness(&img, 1.9).as_raw()[3..], [255, 255, 190]);
        // Colour 0 = the grey image: luma of (100, 50, 0) = 59.6... -> 60 in PIL's fixed point.
        let l = luma(&Rgb([100, 50, 0]));
        assert_eq!(l, 59);
        assert_eq!(color(&img, 0.0).as_raw()[..3], [l; 3]);
        // Extrapolation truncates and clamps (Pillow 13: 120 45 0 220 145 70).
        assert_eq!(color(&img, 1.5).as_raw()[..], [120, 45, 0, 220, 145, 70]);
        // Contrast 0 = flat at the mean luma (rounded): lumas 59 and 159 -> 109.
        assert_eq!(luma(&Rgb([200, 150, 100])), 159);
        assert_eq!(contrast(&img, 0.0).as_raw()[..], [109; 6]);
        // A constant image has nothing to sharpen; an impulse is smoothed by 5 / 13.
        let flat = RgbImage::from_pixel(5, 5, Rgb([80; 3]));
        assert_eq!(sharpness(&flat, 0.0), flat);
        let mut dot = RgbImage::new(3, 3);
        dot.put_pixel(1, 1, Rgb([130; 3]));
        assert_eq!(sharpness(&dot, 0.0).get_pixel(1, 1)[0], 50);
        // 132 x 5 / 13 = 50.77: rounded, as PIL's filter does.
        dot.put_pixel(1, 1, Rgb([132; 3]));
        assert_eq!(sharpness(&dot, 0.0).get_pixel(1, 1)[0], 51);
        assert_eq!(
            sharpness(&dot, 0.0).get_pixel(0, 0)[0],
            0,
            "borders are kept"
        );
    }
}
