//! `resize`: the whole image resized to the training size, no crop, then the usual flip
//! (PixMIM Table 5b, "Resize"). The aspect ratio is not kept: a non-square image is
//! stretched to the square input, as torchvision's `Resize((224, 224))` does, so the view
//! holds all of the image (no crop removes an object, and no padding adds a border the model
//! would have to learn). It is the augmentation with the most object in the view, which is what
//! the paper's ablation compares.
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{encoded_region_normalise, resize_region_normalise, Interpolation};
use crate::component::{AugmentationRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::{Augmentation, EncodedImage, ViewMap};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeParams {
    #[serde(default = "bicubic")]
    pub interpolation: Interpolation,
    /// Probability of a horizontal flip.
    #[serde(default = "half")]
    pub hflip: f64,
}
fn bicubic() -> Interpolation {
    Interpolation::Bicubic
}
fn half() -> f64 {
    0.5
}

pub struct Resize {
    pub size: (usize, usize),
    pub params: ResizeParams,
}

impl Resize {
    pub fn new(size: (usize, usize), params: ResizeParams) -> Result<Self> {
        if !(0.0..=1.0).contains(&params.hflip) {
            return Err(Error::config(
                "augmentation.hflip",
                format!("must be in [0, 1], got {}", params.hflip),
            ));
        }
        Ok(Self { size, params })
    }

    /// The one draw `apply` and `view_map` make: the flip.
    fn flip(&self, rng: &mut StdRng) -> bool {
        rng.gen::<f64>() < self.params.hflip
    }
}

impl Augmentation for Resize {
    fn describe(&self) -> String {
        format!(
            "Resize({}x{}, whole image, {:?}) + hflip(p={})",
            self.size.0, self.size.1, self.params.interpolation, self.params.hflip
        )
    }
    fn output_size(&self) -> (usize, usize) {
        self.size
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        let flip = self.flip(rng);
        let region = [0.0, 0.0, img.width() as f64, img.height() as f64];
        resize_region_normalise(img, region, self.size, self.params.interpolation, flip, out);
    }
    fn apply_encoded(
        &self,
        img: &dyn EncodedImage,
        rng: &mut StdRng,
        out: &mut [f32],
    ) -> Result<()> {
        let flip = self.flip(rng);
        let (width, height) = img.size();
        let whole = [0.0, 0.0, width as f64, height as f64];
        let interpolation = self.params.interpolation;
        encoded_region_normalise(img, whole, self.size, interpolation, flip, out)
    }
    fn view_map(&self, width: u32, height: u32, rng: &mut StdRng) -> Option<ViewMap> {
        let (h, w) = self.size;
        Some(ViewMap {
            x0: 0.0,
            y0: 0.0,
            sx: width as f64 / w as f64,
            sy: height as f64 / h as f64,
            flip: self.flip(rng),
            size: self.size,
        })
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Augmentation>> {
    let p: ResizeParams = crate::config::parse_params(params, "augmentation")?;
    Ok(Box::new(Resize::new(g.image, p)?))
}

inventory::submit! {
    AugmentationRegistration {
        name: "resize",
        description: "the whole image resized to the input size (aspect not kept) + flip (PixMIM Table 5b)",
        params: &["interpolation", "hflip"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn resize(hflip: f64) -> Resize {
        Resize::new(
            (8, 8),
            ResizeParams {
                interpolation: Interpolation::Bilinear,
                hflip,
            },
        )
        .unwrap()
    }

    /// A 32x16 image whose left half is black and right half white: the view keeps both halves
    /// whole (no crop), stretched to the square, and the flip mirrors them.
    #[test]
    fn the_view_is_the_whole_image_stretched_and_flipped_as_drawn() {
        let img = image::RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let mut out = vec![0.0; 3 * 64];
        resize(0.0).apply(&img, &mut StdRng::seed_from_u64(0), &mut out);
        let black = (0.0 - 0.485) / 0.229;
        let white = (1.0 - 0.485) / 0.229;
        // Red channel, row 3: four black columns then four white ones.
        let row = &out[3 * 8..4 * 8];
        assert!(row[..3].iter().all(|v| (v - black).abs() < 1e-4), "{row:?}");
        assert!(row[5..].iter().all(|v| (v - white).abs() < 1e-4), "{row:?}");
        resize(1.0).apply(&img, &mut StdRng::seed_from_u64(0), &mut out);
        let row = &out[3 * 8..4 * 8];
        assert!(row[..3].iter().all(|v| (v - white).abs() < 1e-4), "{row:?}");

        // The coverage map draws the same flip and maps the source's corners to the view's.
        let r = resize(0.5);
        for seed in 0..8 {
            let mut a = StdRng::seed_from_u64(seed);
            let m = r.view_map(32, 16, &mut a.clone()).unwrap();
            assert_eq!(m.flip, r.flip(&mut a));
            let (first, last) = if m.flip { (7, 0) } else { (0, 7) };
            assert_eq!(m.view_pixel(0, 0), Some((first, 0)));
            assert_eq!(m.view_pixel(31, 15), Some((last, 7)));
        }
    }

    #[test]
    fn a_flip_probability_outside_0_1_names_the_key() {
        let e = Resize::new(
            (8, 8),
            ResizeParams {
                interpolation: Interpolation::Bicubic,
                hflip: 1.5,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("augmentation.hflip"), "{e}");
    }
}
