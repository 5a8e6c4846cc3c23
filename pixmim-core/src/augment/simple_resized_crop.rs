//! Simple Resized Crop (SRC), PixMIM's train transform (numerics §2.2):
//! `Resize(S)` (shorter side to S, longer side int(S*long/short), bilinear, antialiased) ->
//! `RandomCrop(S, padding=4, padding_mode='reflect')` (top drawn first, then left) ->
//! `RandomHorizontalFlip(0.5)`. DeiT III's variant uses bicubic (`interpolation = "bicubic"`).
use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use super::{resize_region, write_normalised, Interpolation};
use crate::component::{AugmentationRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::{Augmentation, EncodedImage, ViewMap};

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SrcParams {
    #[serde(default = "bilinear")]
    pub interpolation: Interpolation,
    #[serde(default = "four")]
    pub padding: usize,
    #[serde(default = "half")]
    pub hflip: f64,
}
impl SrcParams {
    /// PixMIM's pipeline (numerics §2.2): bilinear resize, reflect padding 4, flip 0.5.
    pub fn pixmim() -> Self {
        Self {
            interpolation: bilinear(),
            padding: four(),
            hflip: half(),
        }
    }
}

fn bilinear() -> Interpolation {
    Interpolation::Bilinear
}
fn four() -> usize {
    4
}
fn half() -> f64 {
    0.5
}

pub struct SimpleResizedCrop {
    pub size: usize,
    pub params: SrcParams,
}

/// The crop drawn for one image: offsets into the padded resized image, and the flip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrcDraw {
    pub top: usize,
    pub left: usize,
    pub flip: bool,
}

/// numpy 'reflect' (edge not repeated): index -1 -> 1, n -> n-2.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

impl SimpleResizedCrop {
    pub fn new(size: (usize, usize), params: SrcParams) -> Result<Self> {
        if size.0 != size.1 {
            return Err(Error::config(
                "augmentation",
                format!("SRC needs a square image size, got {size:?}"),
            ));
        }
        if !(0.0..=1.0).contains(&params.hflip) {
            return Err(Error::config(
                "augmentation.hflip",
                "must be a probability in [0, 1]",
            ));
        }
        Ok(Self {
            size: size.0,
            params,
        })
    }

    /// torchvision `Resize(int)`: the shorter side becomes `size`, the longer is truncated.
    pub fn resized_dims(&self, w: u32, h: u32) -> (usize, usize) {
        let s = self.size;
        let (w, h) = (w as usize, h as usize);
        if w <= h {
            (s, s * h / w)
        } else {
            (s * w / h, s)
        }
    }

    /// Offsets in [0, padded - size] (top first, as torchvision), then the flip.
    pub fn draw(&self, w: usize, h: usize, rng: &mut StdRng) -> SrcDraw {
        let p = self.params.padding;
        let top = rng.gen_range(0..=h + 2 * p - self.size);
        let left = rng.gen_range(0..=w + 2 * p - self.size);
        let flip = rng.gen::<f64>() < self.params.hflip;
        SrcDraw { top, left, flip }
    }

    /// Resize `region` of `img` (all of an image of `size`, or its decoded part) to
    /// [`Self::resized_dims`] of `size`, then draw the crop and write it normalised.
    fn resize_and_crop(
        &self,
        img: &image::RgbImage,
        region: [f64; 4],
        size: (u32, u32),
        rng: &mut StdRng,
        out: &mut [f32],
    ) {
        let (nw, nh) = self.resized_dims(size.0, size.1);
        let whole = [0.0, 0.0, img.width() as f64, img.height() as f64];
        let resized =
            if (nw, nh) == (img.width() as usize, img.height() as usize) && region == whole {
                img.as_raw().clone() // torchvision leaves an image already at size untouched
            } else {
                resize_region(img, region, (nh, nw), self.params.interpolation).into_raw()
            };
        let d = self.draw(nw, nh, rng);
        self.crop(&resized, nw, nh, d, out);
    }

    /// Crop `draw` out of the reflect-padded RGB image (w, h) and write it normalised.
    pub fn crop(&self, rgb: &[u8], w: usize, h: usize, d: SrcDraw, out: &mut [f32]) {
        let s = self.size;
        let p = self.params.padding as isize;
        // Only up to `padding` columns at either end fall in the reflected border; the rest
        // of each row is one contiguous run of the source row.
        let cols: Vec<usize> = (0..s)
            .map(|x| reflect(d.left as isize + x as isize - p, w))
            .collect();
        let inner = (p - d.left as isize).clamp(0, s as isize) as usize
            ..(w as isize + p - d.left as isize).clamp(0, s as isize) as usize;
        let mut hwc = vec![0u8; s * s * 3];
        for (y, dst) in hwc.chunks_exact_mut(3 * s).enumerate() {
            let src = &rgb[reflect(d.top as isize + y as isize - p, h) * w * 3..][..w * 3];
            for x in (0..inner.start).chain(inner.end.max(inner.start)..s) {
                dst[3 * x..3 * x + 3].copy_from_slice(&src[3 * cols[x]..3 * cols[x] + 3]);
            }
            if !inner.is_empty() {
                let from = cols[inner.start];
                dst[3 * inner.start..3 * inner.end]
                    .copy_from_slice(&src[3 * from..3 * (from + inner.len())]);
            }
        }
        write_normalised(&hwc, s, s, d.flip, out);
    }
}

impl Augmentation for SimpleResizedCrop {
    fn describe(&self) -> String {
        format!(
            "SimpleResizedCrop: Resize({}, {:?}) + RandomCrop({}, padding={}, reflect) + hflip(p={})",
            self.size, self.params.interpolation, self.size, self.params.padding, self.params.hflip
        )
    }
    fn output_size(&self) -> (usize, usize) {
        (self.size, self.size)
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        let whole = [0.0, 0.0, img.width() as f64, img.height() as f64];
        self.resize_and_crop(img, whole, img.dimensions(), rng, out);
    }
    fn apply_encoded(
        &self,
        img: &dyn EncodedImage,
        rng: &mut StdRng,
        out: &mut [f32],
    ) -> Result<()> {
        let (w, h) = img.size();
        let (nw, nh) = self.resized_dims(w, h);
        let (pixels, region) = img.pixels_for([0.0, 0.0, w as f64, h as f64], (nh, nw))?;
        self.resize_and_crop(&pixels, region, (w, h), rng, out);
        Ok(())
    }
    /// The crop in source pixels; the reflect padding maps outside the source, so a
    /// coverage count sees padding as no object (it only repeats pixels already counted).
    fn view_map(&self, width: u32, height: u32, rng: &mut StdRng) -> Option<ViewMap> {
        let (nw, nh) = self.resized_dims(width, height);
        let d = self.draw(nw, nh, rng);
        let (kx, ky) = (width as f64 / nw as f64, height as f64 / nh as f64);
        let p = self.params.padding as f64;
        Some(ViewMap {
            x0: (d.left as f64 - p) * kx,
            y0: (d.top as f64 - p) * ky,
            sx: kx,
            sy: ky,
            flip: d.flip,
            size: (self.size, self.size),
        })
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Augmentation>> {
    let p: SrcParams = crate::config::parse_params(params, "augmentation")?;
    Ok(Box::new(SimpleResizedCrop::new(g.image, p)?))
}

inventory::submit! {
    AugmentationRegistration {
        name: "src",
        description: "Simple Resized Crop: resize, reflect-pad 4, random crop, flip (PixMIM, numerics §2.2)",
        params: &["interpolation", "padding", "hflip"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IMAGENET_MEAN, IMAGENET_STD};
    use rand::SeedableRng;

    fn src(size: usize, padding: usize) -> SimpleResizedCrop {
        let p: SrcParams = toml::from_str(&format!("padding = {padding}")).unwrap();
        SimpleResizedCrop::new((size, size), p).unwrap()
    }

    #[test]
    fn resize_keeps_the_aspect_and_truncates_the_long_side() {
        assert_eq!(src(224, 4).resized_dims(500, 375), (298, 224));
        assert_eq!(src(224, 4).resized_dims(375, 500), (224, 298));
        assert_eq!(src(224, 4).resized_dims(224, 300), (224, 300));
    }

    #[test]
    fn reflect_padding_does_not_repeat_the_edge() {
        // numpy.pad([0,1,2,3], 2, 'reflect') = [2,1,0,1,2,3,2,1]
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }

    #[test]
    fn a_hand_computed_crop() {
        // A 3x3 image whose red channel is 10*y + x, padding 1, crop 3 at (top 0, left 2):
        // padded row -1 reflects to row 1, column 3 reflects to column 1.
        let a = src(3, 1);
        let mut rgb = vec![0u8; 27];
        for y in 0..3 {
            for x in 0..3 {
                rgb[(y * 3 + x) * 3] = (10 * y + x) as u8;
            }
        }
        let mut out = vec![0.0; 27];
        a.crop(
            &rgb,
            3,
            3,
            SrcDraw {
                top: 0,
                left: 2,
                flip: false,
            },
            &mut out,
        );
        let red: Vec<u8> = out[..9]
            .iter()
            .map(|v| ((v * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0).round() as u8)
            .collect();
        // padded coords (y-1, x+1): rows [1,0,1], cols [1,2,1]
        assert_eq!(red, vec![11, 12, 11, 1, 2, 1, 11, 12, 11]);
        let mut flipped = vec![0.0; 27];
        a.crop(
            &rgb,
            3,
            3,
            SrcDraw {
                top: 0,
                left: 2,
                flip: true,
            },
            &mut flipped,
        );
        assert_eq!(flipped[0], out[2]);
    }

    #[test]
    fn every_offset_reads_the_reflect_padded_pixel() {
        // Padding 3 around a 9x5 image cropped to 5: every (top, left) the draw can give, each
        // output pixel checked against numpy's reflect of its padded coordinates.
        let (w, h, p) = (9usize, 5usize, 3usize);
        let a = src(5, p);
        let rgb: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 0]))
            .collect();
        let unnormalise =
            |v: f32, c: usize| ((v * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0).round() as usize;
        for top in 0..=h + 2 * p - 5 {
            for left in 0..=w + 2 * p - 5 {
                let mut out = vec![0.0; 75];
                let flip = false;
                a.crop(&rgb, w, h, SrcDraw { top, left, flip }, &mut out);
                for (i, (r, g)) in out[..25].iter().zip(&out[25..50]).enumerate() {
                    let (y, x) = (i / 5, i % 5);
                    let want_x = reflect(left as isize + x as isize - p as isize, w);
                    let want_y = reflect(top as isize + y as isize - p as isize, h);
                    assert_eq!(
                        (unnormalise(*r, 0), unnormalise(*g, 1)),
                        (want_x, want_y),
                        "top {top} left {left} pixel ({y}, {x})"
                    );
                }
            }
        }
    }

    #[test]
    fn offsets_span_0_to_8_on_the_short_side_and_flip_half_the_time() {
        let a = src(224, 4);
        let mut rng = StdRng::seed_from_u64(3);
        let (mut tops, mut lefts, mut flips) = (vec![0usize; 9], 0usize, 0usize);
        let n = 4000;
        for _ in 0..n {
            let d = a.draw(298, 224, &mut rng);
            tops[d.top] += 1;
            lefts = lefts.max(d.left);
            flips += d.flip as usize;
        }
        assert!(
            tops.iter().all(|&c| c > 0),
            "every offset 0..=8 occurs: {tops:?}"
        );
        assert_eq!(lefts, 298 + 8 - 224);
        let f = flips as f64 / n as f64;
        assert!((f - 0.5).abs() < 0.03, "flip frequency {f}");
    }

    #[test]
    fn output_is_the_training_size() {
        let a = src(32, 4);
        let img = image::RgbImage::from_fn(60, 45, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = vec![f32::NAN; 3 * 32 * 32];
        a.apply(&img, &mut StdRng::seed_from_u64(0), &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
