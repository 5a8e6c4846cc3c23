//! Augmentations. This module: RandomResizedCrop + horizontal flip + ImageNet
//! normalisation, MAE's train transform (numerics §1.1), with torchvision's box sampling.
//! [`center_crop`]: the evaluation transform. [`finetune`]: the fine-tuning train transform
//! (RandAugment, random erasing) and [`mixup`] (Mixup / CutMix of its batches).
//! [`simple_resized_crop`]: SRC, PixMIM's train transform
//! (MFF trains with it too). Resampling uses `fast_image_resize`
//! (CatmullRom = PIL's bicubic, antialiased); it is not bit-exact to Pillow (numerics §7.1).
use fast_image_resize::{
    images::{Image, ImageRef},
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::component::{AugmentationRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::{Augmentation, EncodedImage, ViewMap};
use crate::{IMAGENET_MEAN, IMAGENET_STD};

pub mod background_crop;
pub mod center_crop;
pub mod finetune;
pub mod mixup;
pub mod pil_ops;
pub mod rand_augment;
pub mod random_erasing;
pub mod resize;
pub mod simple_resized_crop;
pub use center_crop::CenterCrop;
pub use simple_resized_crop::{SimpleResizedCrop, SrcParams};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl Interpolation {
    pub fn alg(self) -> ResizeAlg {
        match self {
            Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        }
    }
}

/// A crop box in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomResizedCropParams {
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    #[serde(default = "default_ratio")]
    pub ratio: [f64; 2],
    #[serde(default = "default_interp")]
    pub interpolation: Interpolation,
    #[serde(default = "half")]
    pub hflip: f64,
}
impl RandomResizedCropParams {
    /// MAE's `RandomResizedCrop(scale=(0.2, 1.0), interpolation=3)` + flip (numerics §1.1).
    pub fn official() -> Self {
        Self {
            scale: default_scale(),
            ratio: default_ratio(),
            interpolation: default_interp(),
            hflip: half(),
        }
    }
}

fn default_scale() -> [f64; 2] {
    [0.2, 1.0]
}
fn default_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn default_interp() -> Interpolation {
    Interpolation::Bicubic
}
fn half() -> f64 {
    0.5
}

pub struct RandomResizedCrop {
    pub size: (usize, usize),
    pub params: RandomResizedCropParams,
}

impl RandomResizedCrop {
    pub fn new(size: (usize, usize), params: RandomResizedCropParams) -> Result<Self> {
        let [s0, s1] = params.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(Error::config(
                "augmentation.scale",
                format!("must satisfy 0 < min <= max <= 1, got {:?}", params.scale),
            ));
        }
        let [r0, r1] = params.ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            return Err(Error::config(
                "augmentation.ratio",
                format!("must satisfy 0 < min <= max, got {:?}", params.ratio),
            ));
        }
        if !(0.0..=1.0).contains(&params.hflip) {
            return Err(Error::config(
                "augmentation.hflip",
                "must be a probability in [0, 1]",
            ));
        }
        Ok(Self { size, params })
    }

    /// torchvision `RandomResizedCrop.get_params`: 10 tries, then a centre crop clamped to
    /// the ratio range.
    pub fn sample_box(&self, width: u32, height: u32, rng: &mut StdRng) -> CropBox {
        let area = (width * height) as f64;
        let [s0, s1] = self.params.scale;
        let (lr0, lr1) = (self.params.ratio[0].ln(), self.params.ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.gen_range(s0..=s1);
            let ar = if lr0 < lr1 {
                rng.gen_range(lr0..lr1)
            } else {
                lr0
            }
            .exp();
            let w = (target * ar).sqrt().round() as i64;
            let h = (target / ar).sqrt().round() as i64;
            if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
                let top = rng.gen_range(0..=(height as i64 - h)) as u32;
                let left = rng.gen_range(0..=(width as i64 - w)) as u32;
                return CropBox {
                    top,
                    left,
                    height: h as u32,
                    width: w as u32,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.params.ratio[0] {
            (width, (width as f64 / self.params.ratio[0]).round() as u32)
        } else if in_ratio > self.params.ratio[1] {
            (
                (height as f64 * self.params.ratio[1]).round() as u32,
                height,
            )
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// Resize the `crop` of `img` to `size` with antialiasing, optionally mirrored, and write it
/// normalised as (3, H, W) into `out`.
pub fn resize_normalise(
    img: &image::RgbImage,
    crop: CropBox,
    size: (usize, usize),
    interpolation: Interpolation,
    flip: bool,
    out: &mut [f32],
) {
    let region = [
        crop.left as f64,
        crop.top as f64,
        crop.width as f64,
        crop.height as f64,
    ];
    resize_region_normalise(img, region, size, interpolation, flip, out)
}

/// [`resize_normalise`] of a sub-pixel region `[left, top, width, height]`.
pub fn resize_region_normalise(
    img: &image::RgbImage,
    region: [f64; 4],
    size: (usize, usize),
    interpolation: Interpolation,
    flip: bool,
    out: &mut [f32],
) {
    let (h, w) = size;
    let dst = resize_region(img, region, size, interpolation);
    write_normalised(dst.as_raw(), w, h, flip, out);
}

/// [`resize_region_normalise`] of an image not yet decoded: only what the resize reads is
/// decoded ([`EncodedImage::pixels_for`]).
pub fn encoded_region_normalise(
    img: &dyn EncodedImage,
    region: [f64; 4],
    size: (usize, usize),
    interpolation: Interpolation,
    flip: bool,
    out: &mut [f32],
) -> Result<()> {
    let (pixels, region) = img.pixels_for(region, size)?;
    resize_region_normalise(&pixels, region, size, interpolation, flip, out);
    Ok(())
}

/// The sub-pixel region `[left, top, width, height]` of `img` resized to `size` (8-bit, for
/// transforms that work on pixels before normalisation).
pub fn resize_region(
    img: &image::RgbImage,
    region: [f64; 4],
    size: (usize, usize),
    interpolation: Interpolation,
) -> image::RgbImage {
    let (h, w) = size;
    // A borrowed view: no copy of the decoded image before resizing.
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("RGB buffer matches its size");
    let mut dst = Image::new(w as u32, h as u32, PixelType::U8x3);
    let [left, top, width, height] = region;
    let opts = ResizeOptions::new()
        .crop(left, top, width, height)
        .resize_alg(interpolation.alg());
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .expect("resize of a valid crop");
    image::RgbImage::from_raw(w as u32, h as u32, dst.into_vec()).expect("RGB buffer of the size")
}

/// HWC u8 -> normalised CHW f32 (`ToTensor` then `Normalize`), mirrored if `flip`.
/// A u8 has 256 values, so each channel's normalised values come from a table computed once
/// with the same formula: the result is identical, without a division per value.
pub fn write_normalised(hwc: &[u8], w: usize, h: usize, flip: bool, out: &mut [f32]) {
    assert_eq!(out.len(), 3 * h * w);
    assert_eq!(hwc.len(), 3 * h * w);
    let lut = normalise_table();
    let (r, rest) = out.split_at_mut(h * w);
    let (g, b) = rest.split_at_mut(h * w);
    let rows = hwc.chunks_exact(3 * w);
    let planes = r
        .chunks_exact_mut(w)
        .zip(g.chunks_exact_mut(w))
        .zip(b.chunks_exact_mut(w));
    for (row, ((r, g), b)) in rows.zip(planes) {
        let out = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
        // Two loops rather than a branch per pixel, so each is a straight pass.
        if flip {
            normalise_row(row.chunks_exact(3).rev(), out, lut);
        } else {
            normalise_row(row.chunks_exact(3), out, lut);
        }
    }
}

fn normalise_row<'a>(
    pixels: impl Iterator<Item = &'a [u8]>,
    out: impl Iterator<Item = ((&'a mut f32, &'a mut f32), &'a mut f32)>,
    lut: &[[f32; 256]; 3],
) {
    for (px, ((r, g), b)) in pixels.zip(out) {
        *r = lut[0][px[0] as usize];
        *g = lut[1][px[1] as usize];
        *b = lut[2][px[2] as usize];
    }
}

/// `(v / 255 - mean[c]) / std[c]` for every u8 value `v` of each channel `c`.
fn normalise_table() -> &'static [[f32; 256]; 3] {
    static TABLE: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        })
    })
}

/// Normalised CHW f32 -> RGB8 image (clamped), for viewing.
pub fn to_rgb_image(chw: &[f32], h: usize, w: usize) -> image::RgbImage {
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c: usize| {
            let v = chw[(c * h + y as usize) * w + x as usize] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
            (v * 255.0).round().clamp(0.0, 255.0) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// RGB8 image -> normalised CHW f32 at its own size (no resize).
pub fn normalise_image(img: &image::RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0.0; 3 * w * h];
    write_normalised(img.as_raw(), w, h, false, &mut out);
    out
}

impl Augmentation for RandomResizedCrop {
    fn describe(&self) -> String {
        format!(
            "RandomResizedCrop({}x{}, scale={:?}, ratio=[{:.4}, {:.4}], {:?}) + hflip(p={})",
            self.size.0,
            self.size.1,
            self.params.scale,
            self.params.ratio[0],
            self.params.ratio[1],
            self.params.interpolation,
            self.params.hflip
        )
    }
    fn output_size(&self) -> (usize, usize) {
        self.size
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        let crop = self.sample_box(img.width(), img.height(), rng);
        let flip = rng.gen::<f64>() < self.params.hflip;
        resize_normalise(img, crop, self.size, self.params.interpolation, flip, out);
    }
    fn apply_encoded(
        &self,
        img: &dyn EncodedImage,
        rng: &mut StdRng,
        out: &mut [f32],
    ) -> Result<()> {
        let (width, height) = img.size();
        let crop = self.sample_box(width, height, rng);
        let flip = rng.gen::<f64>() < self.params.hflip;
        let region = [crop.left, crop.top, crop.width, crop.height].map(f64::from);
        let interpolation = self.params.interpolation;
        encoded_region_normalise(img, region, self.size, interpolation, flip, out)
    }
    fn view_map(&self, width: u32, height: u32, rng: &mut StdRng) -> Option<ViewMap> {
        let crop = self.sample_box(width, height, rng);
        let flip = rng.gen::<f64>() < self.params.hflip;
        let (h, w) = self.size;
        Some(ViewMap {
            x0: crop.left as f64,
            y0: crop.top as f64,
            sx: crop.width as f64 / w as f64,
            sy: crop.height as f64 / h as f64,
            flip,
            size: self.size,
        })
    }
}

fn build_rrc(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Augmentation>> {
    let p: RandomResizedCropParams = crate::config::parse_params(params, "augmentation")?;
    Ok(Box::new(RandomResizedCrop::new(g.image, p)?))
}

inventory::submit! {
    AugmentationRegistration {
        name: "rrc",
        description: "RandomResizedCrop + flip (MAE, numerics §1.1)",
        params: &["scale", "ratio", "interpolation", "hflip"],
        build: build_rrc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rrc() -> RandomResizedCrop {
        RandomResizedCrop::new((32, 32), toml::from_str("").unwrap()).unwrap()
    }

    #[test]
    fn boxes_respect_scale_and_ratio_or_fall_back_to_centre() {
        let a = rrc();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..500 {
            let b = a.sample_box(500, 375, &mut rng);
            assert!(b.left + b.width <= 500 && b.top + b.height <= 375);
            let frac = (b.width * b.height) as f64 / (500.0 * 375.0);
            assert!(frac > 0.19 && frac <= 1.0, "{frac}");
            let r = b.width as f64 / b.height as f64;
            assert!(r > 0.74 && r < 1.34, "{r}");
        }
        // A 10:1 strip can never satisfy the ratio: centre fallback clamped to 4/3.
        let b = a.sample_box(1000, 100, &mut rng);
        assert_eq!((b.width, b.height), (133, 100));
        assert_eq!((b.left, b.top), ((1000 - 133) / 2, 0));
    }

    #[test]
    fn normalises_and_flips() {
        let hwc: Vec<u8> = vec![0, 0, 0, 255, 255, 255];
        let mut out = vec![0.0; 6];
        write_normalised(&hwc, 2, 1, true, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out[1] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
        let mut out2 = vec![0.0; 6];
        write_normalised(&hwc, 2, 1, false, &mut out2);
        assert_eq!(out[0], out2[1]);
    }

    #[test]
    fn the_normalise_table_equals_the_formula_on_every_pixel() {
        let (w, h) = (5, 3);
        let hwc: Vec<u8> = (0..3 * w * h).map(|i| (i * 37 % 256) as u8).collect();
        for flip in [false, true] {
            let mut out = vec![0.0; 3 * w * h];
            write_normalised(&hwc, w, h, flip, &mut out);
            for (y, x, c) in
                (0..h).flat_map(|y| (0..w).flat_map(move |x| (0..3).map(move |c| (y, x, c))))
            {
                let sx = if flip { w - 1 - x } else { x };
                let v = hwc[(y * w + sx) * 3 + c] as f32 / 255.0;
                let want = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                assert_eq!(
                    out[(c * h + y) * w + x],
                    want,
                    "flip {flip} at ({y}, {x}, {c})"
                );
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant_after_resize() {
        let img = image::RgbImage::from_pixel(50, 40, image::Rgb([10, 200, 30]));
        let mut out = vec![0.0; 3 * 32 * 32];
        rrc().apply(&img, &mut StdRng::seed_from_u64(1), &mut out);
        let want = (200.0 / 255.0 - 0.456) / 0.224;
        assert!(out[32 * 32..2 * 32 * 32]
            .iter()
            .all(|v| (v - want).abs() < 1e-5));
    }
}
