//! Object coverage (PixMIM paper §3.2, Figure 3): how much of the foreground object a
//! training view keeps. For an image with foreground F (|F| pixels):
//! * J(F): the fraction of F inside the view's source region;
//! * J(M o F): the fraction of F inside the region *and* under a visible (unmasked) patch.
//!
//! Each is averaged over `samples` random views per image, then over images. With random
//! masking at ratio 0.75, J(M o F) is about J(F) / 4, so 25% is its upper bound. The paper's
//! ImageNet-S figures: RRC 68.3% / 17.1%, SRC 88.2% / 22.1%.
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::seed::derive;
use crate::data::seed::Purpose;
use crate::error::{Error, Result};
use crate::masking::RandomMasking;
pub use crate::object_mask::{find_mask, Foreground};
use crate::traits::{Augmentation, Corruption};

/// J(F) and J(M o F) of one foreground over `samples` views, each with its own RNG stream
/// (`seed`, `key`), so results do not depend on threads or image order.
pub fn coverage(
    fg: &Foreground,
    augmentation: &dyn Augmentation,
    masking: &RandomMasking,
    patch: usize,
    samples: usize,
    seed: u64,
    key: u64,
) -> Result<(f64, f64)> {
    let area = fg.area();
    if area == 0 {
        return Err(Error::Usage("the foreground mask is empty".into()));
    }
    let (_, vw) = augmentation.output_size();
    let gw = vw / patch;
    let (mut jf, mut jmf) = (0.0, 0.0);
    for s in 0..samples {
        let mut rng =
            StdRng::seed_from_u64(derive(seed, Purpose::Augment, key * 1_000_003 + s as u64));
        let map = augmentation
            .view_map_with_object(fg.width as u32, fg.height as u32, Some(fg), &mut rng)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{} cannot report its crop, so coverage cannot be measured",
                    augmentation.describe()
                ))
            })?;
        let mask = masking.sample(1, &mut rng).mask;
        let (mut inside, mut visible) = (0usize, 0usize);
        for y in 0..fg.height {
            for x in 0..fg.width {
                if !fg.inside[y * fg.width + x] {
                    continue;
                }
                if let Some((vx, vy)) = map.view_pixel(x, y) {
                    inside += 1;
                    let cell = (vy / patch) * gw + vx / patch;
                    if mask[cell] == 0.0 {
                        visible += 1;
                    }
                }
            }
        }
        jf += inside as f64 / area as f64;
        jmf += visible as f64 / area as f64;
    }
    Ok((jf / samples as f64, jmf / samples as f64))
}

/// A masking of the view's patch grid at `ratio`.
pub fn view_masking(
    augmentation: &dyn Augmentation,
    patch: usize,
    ratio: f64,
) -> Result<RandomMasking> {
    let (h, w) = augmentation.output_size();
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(Error::Usage(format!(
            "--patch-size {patch} does not divide the {h}x{w} view"
        )));
    }
    RandomMasking::new(ratio, (h / patch) * (w / patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{CenterCrop, RandomResizedCrop};

    fn full(w: usize, h: usize) -> Foreground {
        Foreground {
            width: w,
            height: h,
            inside: vec![true; w * h],
        }
    }

    #[test]
    fn a_whole_image_object_under_a_full_centre_crop_is_fully_covered() {
        let cc = CenterCrop::new((64, 64), toml::from_str("crop_pct = 1.0").unwrap()).unwrap();
        let m = view_masking(&cc, 16, 0.75).unwrap();
        let (jf, jmf) = coverage(&full(128, 128), &cc, &m, 16, 20, 0, 0).unwrap();
        assert!((jf - 1.0).abs() < 1e-12, "{jf}");
        // 4 of 16 patches visible, each covering exactly 1/16 of the object.
        assert!((jmf - 0.25).abs() < 1e-12, "{jmf}");
    }

    #[test]
    fn rrc_keeps_on_average_its_mean_crop_area_of_a_whole_image_object() {
        let rrc = RandomResizedCrop::new((32, 32), toml::from_str("").unwrap()).unwrap();
        let m = view_masking(&rrc, 8, 0.75).unwrap();
        let (jf, jmf) = coverage(&full(100, 100), &rrc, &m, 8, 400, 1, 0).unwrap();
        // The expected kept fraction is the mean crop area, estimated from other draws.
        let mut rng = StdRng::seed_from_u64(99);
        let mean_area = (0..4000)
            .map(|_| {
                let b = rrc.sample_box(100, 100, &mut rng);
                (b.width * b.height) as f64 / 1e4
            })
            .sum::<f64>()
            / 4000.0;
        assert!((0.45..0.65).contains(&mean_area), "{mean_area}");
        assert!((jf - mean_area).abs() < 0.03, "{jf} vs {mean_area}");
        assert!((jmf - jf / 4.0).abs() < 0.02, "{jmf} vs {jf}");
    }

    #[test]
    fn a_corner_object_is_cut_by_a_centre_crop() {
        // Object in the top-left 10x10 corner of 100x100; a 0.5 centre crop keeps x,y in
        // [25, 75): none of it.
        let mut fg = full(100, 100);
        for y in 0..100 {
            for x in 0..100 {
                fg.inside[y * 100 + x] = x < 10 && y < 10;
            }
        }
        let cc = CenterCrop::new((32, 32), toml::from_str("crop_pct = 0.5").unwrap()).unwrap();
        let m = view_masking(&cc, 8, 0.75).unwrap();
        assert_eq!(coverage(&fg, &cc, &m, 8, 3, 0, 0).unwrap(), (0.0, 0.0));
        fg.inside.iter_mut().for_each(|b| *b = false);
        assert!(coverage(&fg, &cc, &m, 8, 3, 0, 0).is_err());
    }
}
