//! `background_crop` (PixMIM Table 5b "BG", appendix Figure 9): RandomResizedCrop with the
//! usual scale and ratio, redrawn until the crop holds less than `max_object` of the image's
//! object, so the model mostly sees background. Each image's object mask comes from `masks`
//! (`"alpha"`, `"non_black"` or a folder of masks named like the images; a missing mask is a
//! data error under `data.on_error`). After `max_tries` draws without one, the drawn crop with
//! the least object is used. Every draw comes from the image's (seed, step, index) stream, so
//! resume stays exact. Without a mask (a caller that has none, such as `pixmim bench`) it is
//! plain RandomResizedCrop.
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    default_interp, default_ratio, default_scale, half, resize_normalise, CropBox, Interpolation,
    RandomResizedCrop, RandomResizedCropParams,
};
use crate::component::{AugmentationRegistration, Geometry};
use crate::error::{Error, Result};
use crate::object_mask::{Foreground, MaskSource, ObjectCounts};
use crate::traits::{Augmentation, ViewMap};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundCropParams {
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    #[serde(default = "default_ratio")]
    pub ratio: [f64; 2],
    #[serde(default = "default_interp")]
    pub interpolation: Interpolation,
    #[serde(default = "half")]
    pub hflip: f64,
    /// A crop is accepted when it holds less than this fraction of the object.
    #[serde(default = "fifth")]
    pub max_object: f64,
    /// Crops drawn before falling back to the one with the least object.
    #[serde(default = "ten")]
    pub max_tries: usize,
    /// `"alpha"`, `"non_black"`, or a folder of mask images named like the images.
    #[serde(default = "alpha")]
    pub masks: String,
}
fn fifth() -> f64 {
    0.2
}
fn ten() -> usize {
    10
}
fn alpha() -> String {
    "alpha".into()
}

pub struct BackgroundCrop {
    rrc: RandomResizedCrop,
    max_object: f64,
    max_tries: usize,
    masks: MaskSource,
}

impl BackgroundCrop {
    pub fn new(size: (usize, usize), p: BackgroundCropParams) -> Result<Self> {
        if !(p.max_object > 0.0 && p.max_object <= 1.0) {
            return Err(Error::config(
                "augmentation.max_object",
                format!("must be in (0, 1], got {}", p.max_object),
            ));
        }
        if p.max_tries == 0 {
            return Err(Error::config(
                "augmentation.max_tries",
                "must be at least 1",
            ));
        }
        let rrc = RandomResizedCrop::new(
            size,
            RandomResizedCropParams {
                scale: p.scale,
                ratio: p.ratio,
                interpolation: p.interpolation,
                hflip: p.hflip,
            },
        )?;
        Ok(Self {
            rrc,
            max_object: p.max_object,
            max_tries: p.max_tries,
            masks: MaskSource::parse(&p.masks),
        })
    }

    /// The crop and the flip: crops drawn until one holds less than `max_object` of the
    /// object (else the least-object one of `max_tries`), then the flip.
    pub fn draw(
        &self,
        width: u32,
        height: u32,
        object: Option<&Foreground>,
        rng: &mut StdRng,
    ) -> (CropBox, bool) {
        let counts = object.map(ObjectCounts::of).filter(|c| c.total() > 0);
        let fraction = |b: &CropBox| match &counts {
            Some(c) => {
                let (x0, y0) = (b.left as usize, b.top as usize);
                let (x1, y1) = (x0 + b.width as usize, y0 + b.height as usize);
                c.count(x0, y0, x1, y1) as f64 / c.total() as f64
            }
            None => 0.0,
        };
        let mut least: Option<(f64, CropBox)> = None;
        for _ in 0..self.max_tries {
            let b = self.rrc.sample_box(width, height, rng);
            let f = fraction(&b);
            if f < self.max_object {
                least = Some((f, b));
                break;
            }
            if least.is_none_or(|(l, _)| f < l) {
                least = Some((f, b));
            }
        }
        let crop = least.expect("max_tries >= 1").1;
        (crop, rng.gen::<f64>() < self.rrc.params.hflip)
    }
}

impl Augmentation for BackgroundCrop {
    fn describe(&self) -> String {
        format!(
            "BackgroundCrop: {} redrawn (up to {}x) until < {} of the object (masks: {:?})",
            self.rrc.describe(),
            self.max_tries,
            self.max_object,
            self.masks
        )
    }
    fn output_size(&self) -> (usize, usize) {
        self.rrc.size
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        self.apply_with_object(img, None, rng, out)
    }
    fn view_map(&self, width: u32, height: u32, rng: &mut StdRng) -> Option<ViewMap> {
        self.view_map_with_object(width, height, None, rng)
    }
    fn object_masks(&self) -> Option<&MaskSource> {
        Some(&self.masks)
    }
    fn apply_with_object(
        &self,
        img: &image::RgbImage,
        object: Option<&Foreground>,
        rng: &mut StdRng,
        out: &mut [f32],
    ) {
        let (crop, flip) = self.draw(img.width(), img.height(), object, rng);
        let p = &self.rrc.params;
        resize_normalise(img, crop, self.rrc.size, p.interpolation, flip, out);
    }
    fn view_map_with_object(
        &self,
        width: u32,
        height: u32,
        object: Option<&Foreground>,
        rng: &mut StdRng,
    ) -> Option<ViewMap> {
        let (crop, flip) = self.draw(width, height, object, rng);
        let (h, w) = self.rrc.size;
        Some(ViewMap {
            x0: crop.left as f64,
            y0: crop.top as f64,
            sx: crop.width as f64 / w as f64,
            sy: crop.height as f64 / h as f64,
            flip,
            size: self.rrc.size,
        })
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Augmentation>> {
    let p: BackgroundCropParams = crate::config::parse_params(params, "augmentation")?;
    Ok(Box::new(BackgroundCrop::new(g.image, p)?))
}

inventory::submit! {
    AugmentationRegistration {
        name: "background_crop",
        description: "RandomResizedCrop redrawn until it holds < max_object of the object (PixMIM Table 5b, BG)",
        params: &["scale", "ratio", "interpolation", "hflip", "max_object", "max_tries", "masks"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn crop(max_object: f64, max_tries: usize) -> BackgroundCrop {
        BackgroundCrop::new(
            (16, 16),
            BackgroundCropParams {
                scale: default_scale(),
                ratio: default_ratio(),
                interpolation: Interpolation::Bilinear,
                hflip: 0.5,
                max_object,
                max_tries,
                masks: "non_black".into(),
            },
        )
        .unwrap()
    }

    /// An object in the left quarter of a 64x64 image: accepted crops hold less than a fifth of
    /// it, far less than RandomResizedCrop's; the view map draws the same crops as `apply`.
    #[test]
    fn crops_avoid_the_object_and_the_view_map_agrees() {
        let fg = Foreground {
            width: 64,
            height: 64,
            inside: (0..64 * 64).map(|i| i % 64 < 16).collect(),
        };
        let counts = ObjectCounts::of(&fg);
        let frac = |b: &CropBox| {
            let (x0, y0) = (b.left as usize, b.top as usize);
            counts.count(x0, y0, x0 + b.width as usize, y0 + b.height as usize) as f64
                / counts.total() as f64
        };
        let bg = crop(0.2, 50);
        let (mut bg_mean, mut rrc_mean) = (0.0, 0.0);
        for seed in 0..200 {
            let (b, flip) = bg.draw(64, 64, Some(&fg), &mut StdRng::seed_from_u64(seed));
            assert!(frac(&b) < 0.2, "seed {seed}: {:?} holds {}", b, frac(&b));
            bg_mean += frac(&b) / 200.0;
            let (r, _) = bg.draw(64, 64, None, &mut StdRng::seed_from_u64(seed));
            rrc_mean += frac(&r) / 200.0;
            let m = bg
                .view_map_with_object(64, 64, Some(&fg), &mut StdRng::seed_from_u64(seed))
                .unwrap();
            assert_eq!((m.x0, m.y0, m.flip), (b.left as f64, b.top as f64, flip));
        }
        assert!(bg_mean < 0.1 && rrc_mean > 0.3, "{bg_mean} vs {rrc_mean}");
    }

    /// When no crop can avoid the object (it fills the image), the least-object draw is used.
    #[test]
    fn without_an_acceptable_crop_the_least_object_one_is_used() {
        let fg = Foreground {
            width: 32,
            height: 32,
            inside: vec![true; 32 * 32],
        };
        let bg = crop(0.01, 5);
        let (b, _) = bg.draw(32, 32, Some(&fg), &mut StdRng::seed_from_u64(3));
        let mut rng = StdRng::seed_from_u64(3);
        let smallest = (0..5)
            .map(|_| bg.rrc.sample_box(32, 32, &mut rng))
            .min_by_key(|b| b.width * b.height)
            .unwrap();
        assert_eq!(b, smallest);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = |p: BackgroundCropParams| BackgroundCrop::new((8, 8), p).err().unwrap().to_string();
        let base = BackgroundCropParams {
            scale: default_scale(),
            ratio: default_ratio(),
            interpolation: Interpolation::Bicubic,
            hflip: 0.5,
            max_object: 0.0,
            max_tries: 10,
            masks: "alpha".into(),
        };
        assert!(e(base.clone()).contains("augmentation.max_object"));
        let no_tries = BackgroundCropParams {
            max_object: 0.2,
            max_tries: 0,
            ..base
        };
        assert!(e(no_tries).contains("augmentation.max_tries"));
    }
}
