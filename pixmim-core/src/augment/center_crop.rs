//! The evaluation transform of MAE's linear probe and fine-tuning (`build_transform(False)`):
//! Resize the short side to `int(size / crop_pct)` (bicubic), CenterCrop(size), normalise.
//! Here the crop is taken from the source and resized once, which samples the same region.
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::{encoded_region_normalise, resize_region_normalise, Interpolation};
use crate::component::{AugmentationRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::{Augmentation, EncodedImage, ViewMap};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterCropParams {
    /// 224/256 = 0.875 in MAE's eval transform; 1.0 resizes the whole image (small datasets
    /// such as Fashion-MNIST, where a border crop would cut the object).
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
    #[serde(default = "bicubic")]
    pub interpolation: Interpolation,
}
fn default_crop_pct() -> f64 {
    0.875
}
fn bicubic() -> Interpolation {
    Interpolation::Bicubic
}

pub struct CenterCrop {
    pub size: (usize, usize),
    pub params: CenterCropParams,
}

impl CenterCrop {
    pub fn new(size: (usize, usize), params: CenterCropParams) -> Result<Self> {
        if !(params.crop_pct > 0.0 && params.crop_pct <= 1.0) {
            return Err(Error::config(
                "augmentation.crop_pct",
                format!("must be in (0, 1], got {}", params.crop_pct),
            ));
        }
        Ok(Self { size, params })
    }

    /// MAE's evaluation transform at `crop_pct` (bicubic), what kNN, the linear probe,
    /// fine-tuning and the frequency analysis all see.
    pub fn eval(size: (usize, usize), crop_pct: f64) -> Result<Self> {
        Self::new(
            size,
            CenterCropParams {
                crop_pct,
                interpolation: bicubic(),
            },
        )
    }

    /// The view of `img`, normalised into `out` (3 x H x W): the transform draws nothing, so
    /// callers outside a data pipeline (`reconstruct`) need no generator.
    pub fn view(&self, img: &image::RgbImage, out: &mut [f32]) {
        let region = self.region(img.width(), img.height());
        resize_region_normalise(
            img,
            region,
            self.size,
            self.params.interpolation,
            false,
            out,
        );
    }

    /// The source region `[left, top, width, height]` the view shows.
    pub fn region(&self, width: u32, height: u32) -> [f64; 4] {
        let (th, tw) = self.size;
        let (w, h) = (width as f64, height as f64);
        // torchvision Resize(int): short side -> s, long side truncated.
        let s = (th.min(tw) as f64 / self.params.crop_pct).floor();
        let (rw, rh) = if w <= h {
            (s, (s * h / w).floor())
        } else {
            ((s * w / h).floor(), s)
        };
        // CenterCrop: offsets rounded, in resized pixels; then back to source pixels.
        let top = ((rh - th as f64) / 2.0).round_ties_even(); // Python round()
        let left = ((rw - tw as f64) / 2.0).round_ties_even();
        let (kx, ky) = (w / rw, h / rh);
        [left * kx, top * ky, tw as f64 * kx, th as f64 * ky]
    }
}

impl Augmentation for CenterCrop {
    fn describe(&self) -> String {
        format!(
            "Resize(int({}/{}), {:?}) + CenterCrop({}x{})",
            self.size.0, self.params.crop_pct, self.params.interpolation, self.size.0, self.size.1
        )
    }
    fn output_size(&self) -> (usize, usize) {
        self.size
    }
    fn apply(&self, img: &image::RgbImage, _rng: &mut StdRng, out: &mut [f32]) {
        self.view(img, out);
    }
    fn apply_encoded(
        &self,
        img: &dyn EncodedImage,
        _rng: &mut StdRng,
        out: &mut [f32],
    ) -> Result<()> {
        let (width, height) = img.size();
        let (region, interpolation) = (self.region(width, height), self.params.interpolation);
        encoded_region_normalise(img, region, self.size, interpolation, false, out)
    }
    fn view_map(&self, width: u32, height: u32, _rng: &mut StdRng) -> Option<ViewMap> {
        let [left, top, w, h] = self.region(width, height);
        Some(ViewMap {
            x0: left,
            y0: top,
            sx: w / self.size.1 as f64,
            sy: h / self.size.0 as f64,
            flip: false,
            size: self.size,
        })
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Augmentation>> {
    let p: CenterCropParams = crate::config::parse_params(params, "augmentation")?;
    Ok(Box::new(CenterCrop::new(g.image, p)?))
}

inventory::submit! {
    AugmentationRegistration {
        name: "center_crop",
        description: "Resize(size/crop_pct) + CenterCrop: the evaluation transform (MAE eval)",
        params: &["crop_pct", "interpolation"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cc(size: usize, crop_pct: f64) -> CenterCrop {
        let p = CenterCropParams {
            crop_pct,
            interpolation: Interpolation::Bicubic,
        };
        CenterCrop::new((size, size), p).unwrap()
    }

    #[test]
    fn takes_the_central_region_as_torchvision_does() {
        // 500x375 at 224/0.875: short side -> 256, long -> 341; crop 224 at (58.5->58, 16).
        let r = cc(224, 0.875).region(500, 375);
        let k = 375.0 / 256.0;
        assert!((r[0] - 58.0 * 500.0 / 341.0).abs() < 1e-9, "{r:?}");
        assert!((r[1] - 16.0 * k).abs() < 1e-9);
        assert!((r[3] - 224.0 * k).abs() < 1e-9);
        // crop_pct 1 on a square image: the whole image.
        assert_eq!(cc(32, 1.0).region(28, 28), [0.0, 0.0, 28.0, 28.0]);
        assert!(CenterCrop::new((8, 8), toml::from_str("crop_pct = 1.5").unwrap()).is_err());
    }

    #[test]
    fn the_view_map_matches_the_pixels_apply_writes() {
        // A left/right split image: the view's left half must come from the source's left.
        let img = image::RgbImage::from_fn(40, 30, |x, _| {
            image::Rgb(if x < 20 { [0, 0, 0] } else { [255, 255, 255] })
        });
        let t = cc(16, 1.0);
        let mut out = vec![0.0; 3 * 16 * 16];
        let mut rng = StdRng::seed_from_u64(0);
        t.apply(&img, &mut rng, &mut out);
        let m = t.view_map(40, 30, &mut rng).unwrap();
        // The view samples source x in [3.8, 34.3) (40 wide, resized to 21, crop 16 at 2).
        for (x, y) in [(6, 5), (32, 20), (15, 15), (25, 3)] {
            let (vx, vy) = m.view_pixel(x, y).unwrap();
            let dark = out[vy * 16 + vx] < 0.0;
            assert_eq!(dark, x < 20, "source ({x},{y}) -> view ({vx},{vy})");
        }
    }
}
