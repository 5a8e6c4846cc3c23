//! The fine-tuning train transform of MAE's `main_finetune.py` (timm's
//! `transforms_imagenet_train`): RandomResizedCrop (scale 0.08-1, bicubic) + horizontal flip
//! -> RandAugment on the 8-bit crop -> ToTensor + Normalize -> random erasing. Colour jitter
//! is off, as it is in timm whenever RandAugment is on.
use image::imageops;
use rand::rngs::StdRng;
use rand::Rng;

use super::rand_augment::RandAugment;
use super::random_erasing::RandomErasing;
use super::{resize_region, write_normalised, RandomResizedCrop};
use crate::traits::Augmentation;

pub struct FinetuneTransform {
    pub crop: RandomResizedCrop,
    pub rand_augment: Option<RandAugment>,
    pub erasing: Option<RandomErasing>,
}

impl Augmentation for FinetuneTransform {
    fn describe(&self) -> String {
        let mut parts = vec![self.crop.describe()];
        parts.extend(self.rand_augment.as_ref().map(RandAugment::describe));
        parts.extend(
            self.erasing
                .as_ref()
                .map(|e| format!("RandomErasing(p={}, pixel)", e.prob)),
        );
        parts.join(" + ")
    }
    fn output_size(&self) -> (usize, usize) {
        self.crop.size
    }
    fn apply(&self, img: &image::RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        let b = self.crop.sample_box(img.width(), img.height(), rng);
        let flip = rng.gen::<f64>() < self.crop.params.hflip;
        let region = [b.left, b.top, b.width, b.height].map(f64::from);
        let (h, w) = self.crop.size;
        let mut view = resize_region(img, region, (h, w), self.crop.params.interpolation);
        if flip {
            imageops::flip_horizontal_in_place(&mut view);
        }
        if let Some(ra) = &self.rand_augment {
            view = ra.apply(&view, rng);
        }
        write_normalised(view.as_raw(), w, h, false, out);
        if let Some(e) = &self.erasing {
            e.apply(out, h, w, rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::RandomResizedCropParams;
    use rand::SeedableRng;

    fn transform(ra: bool, re: f64) -> FinetuneTransform {
        let mut params = RandomResizedCropParams::official();
        params.scale = [0.08, 1.0];
        FinetuneTransform {
            crop: RandomResizedCrop::new((16, 16), params).unwrap(),
            rand_augment: ra.then(|| RandAugment::parse(RandAugment::OFFICIAL, "aa").unwrap()),
            erasing: (re > 0.0).then(|| RandomErasing::new(re)),
        }
    }

    #[test]
    fn without_extras_it_is_the_random_resized_crop_with_the_same_draws() {
        let img =
            image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 50]));
        let t = transform(false, 0.0);
        for s in 0..20 {
            let (mut a, mut b) = (vec![0.0; 3 * 256], vec![0.0; 3 * 256]);
            t.apply(&img, &mut StdRng::seed_from_u64(s), &mut a);
            t.crop.apply(&img, &mut StdRng::seed_from_u64(s), &mut b);
            assert_eq!(a, b, "seed {s}");
        }
    }

    #[test]
    fn rand_augment_and_erasing_change_views_and_stay_deterministic_per_seed() {
        let img =
            image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 50]));
        let (plain, full) = (transform(false, 0.0), transform(true, 1.0));
        let mut differ = 0;
        for s in 0..20 {
            let view = |t: &FinetuneTransform| {
                let mut v = vec![0.0; 3 * 256];
                t.apply(&img, &mut StdRng::seed_from_u64(s), &mut v);
                v
            };
            assert_eq!(view(&full), view(&full), "a pure function of the seed");
            differ += (view(&full) != view(&plain)) as usize;
        }
        assert_eq!(differ, 20, "erasing at p = 1 changes every view");
        assert!(full.describe().contains("RandAugment") && full.describe().contains("Erasing"));
    }
}
