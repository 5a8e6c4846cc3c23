//! RandAugment as timm defines it (`rand_augment_transform`, the policy MAE, ConvMAE and
//! LSMAE fine-tune with: `rand-m9-mstd0.5-inc1`). Each image gets `n` ops drawn uniformly
//! with replacement; each op runs with probability 0.5 at magnitude m + N(0, mstd) clipped to
//! [0, 10]; `inc1` selects the "increasing" op set, where a larger magnitude is always a
//! stronger change. The ops are PIL's ([`super::pil_ops`]), on the 8-bit image after the crop.
use image::RgbImage;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::pil_ops as ops;
use crate::error::{Error, Result};

/// timm's `_LEVEL_DENOM`: magnitudes run over [0, 10].
const MAX_LEVEL: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`).
pub const INCREASING: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// A parsed RandAugment policy string.
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    /// `m`: the mean magnitude in [0, 10].
    pub magnitude: f64,
    /// `mstd`: the standard deviation of the per-op magnitude noise.
    pub magnitude_std: f64,
    /// `n`: ops applied per image.
    pub num_ops: usize,
    /// `inc1`: the increasing op set (timm's default set without it is not offered: its
    /// Posterize/Solarize weaken as the magnitude grows, which no MIM recipe uses).
    pub increasing: bool,
    /// Probability of each drawn op running (timm: 0.5).
    pub prob: f64,
    /// Fill colour of the geometric ops: the ImageNet mean in 8 bits, as timm passes it.
    pub fill: [u8; 3],
}

impl RandAugment {
    /// The fine-tuning recipe of MAE, ConvMAE and LSMAE.
    pub const OFFICIAL: &'static str = "rand-m9-mstd0.5-inc1";

    /// Parse timm's policy string (`rand-m9-mstd0.5-inc1`, `rand-m7-n3`, ...): sections
    /// `m` (magnitude), `n` (ops), `mstd`, `inc`. `key` names the option in errors.
    pub fn parse(spec: &str, key: &str) -> Result<Self> {
        let bad = |m: String| Error::Usage(format!("{key}: {m} in `{spec}`"));
        let mut parts = spec.split('-');
        if parts.next() != Some("rand") {
            return Err(bad("a RandAugment policy starts with `rand`".into()));
        }
        let mut ra = RandAugment {
            magnitude: MAX_LEVEL,
            magnitude_std: 0.0,
            num_ops: 2,
            increasing: false,
            prob: 0.5,
            fill: crate::IMAGENET_MEAN.map(|m| (255.0 * m).round() as u8),
        };
        for part in parts {
            let split = part
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .ok_or_else(|| bad(format!("section `{part}` has no value")))?;
            let (name, value) = part.split_at(split);
            let num = |v: &str| -> Result<f64> {
                v.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("`{part}` needs a number >= 0")))
            };
            match name {
                "m" => ra.magnitude = num(value)?.min(MAX_LEVEL),
                "mstd" => ra.magnitude_std = num(value)?,
                "n" => ra.num_ops = num(value)? as usize,
                "inc" => ra.increasing = num(value)? != 0.0,
                other => {
                    return Err(bad(format!(
                        "unknown section `{other}` (known: m, n, mstd, inc)"
                    )))
                }
            }
        }
        if !ra.increasing {
            return Err(bad("only the increasing op set (`inc1`) is offered".into()));
        }
        Ok(ra)
    }

    pub fn describe(&self) -> String {
        format!(
            "RandAugment(n={}, m={}, mstd={}, increasing)",
            self.num_ops, self.magnitude, self.magnitude_std
        )
    }

    /// The ops this image gets (drawn before any is applied, as timm does).
    pub fn draw_ops(&self, rng: &mut StdRng) -> Vec<Op> {
        (0..self.num_ops)
            .map(|_| INCREASING[rng.gen_range(0..INCREASING.len())])
            .collect()
    }

    pub fn apply(&self, img: &RgbImage, rng: &mut StdRng) -> RgbImage {
        let mut out = img.clone();
        for op in self.draw_ops(rng) {
            if rng.gen::<f64>() > self.prob {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std > 0.0 {
                m = Normal::new(m, self.magnitude_std)
                    .expect("std > 0")
                    .sample(rng);
            }
            out = self.apply_op(op, &out, m.clamp(0.0, MAX_LEVEL), rng);
        }
        out
    }

    /// One op at magnitude `m` in [0, 10], with timm's level-to-argument rules (the sign
    /// of the signed ops drawn from `rng`).
    pub fn apply_op(&self, op: Op, img: &RgbImage, m: f64, rng: &mut StdRng) -> RgbImage {
        let level = m / MAX_LEVEL;
        let mut signed = |v: f64| if rng.gen::<f64>() > 0.5 { -v } else { v };
        let fill = self.fill;
        match op {
            Op::AutoContrast => ops::auto_contrast(img),
            Op::Equalize => ops::equalize(img),
            Op::Invert => ops::invert(img),
            Op::Rotate => ops::rotate(img, signed(level * 30.0), fill),
            // Bits kept: 4 at m = 0 down to 0 at m = 10.
            Op::Posterize => ops::posterize(img, 4 - (level * 4.0) as u32),
            // Threshold 256 (nothing) at m = 0 down to 0 (everything inverted) at m = 10.
            Op::Solarize => ops::solarize(img, 256 - (level * 256.0) as u32),
            Op::SolarizeAdd => ops::solarize_add(img, (level * 110.0) as u32, 128),
            Op::Color => ops::color(img, 1.0 + signed(level * 0.9)),
            Op::Contrast => ops::contrast(img, 1.0 + signed(level * 0.9)),
            Op::Brightness => ops::brightness(img, 1.0 + signed(level * 0.9)),
            Op::Sharpness => ops::sharpness(img, 1.0 + signed(level * 0.9)),
            Op::ShearX => ops::shear_x(img, signed(level * 0.3), fill),
            Op::ShearY => ops::shear_y(img, signed(level * 0.3), fill),
            Op::TranslateXRel => {
                ops::translate_x(img, signed(level * 0.45) * img.width() as f64, fill)
            }
            Op::TranslateYRel => {
                ops::translate_y(img, signed(level * 0.45) * img.height() as f64, fill)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_timms_policy_strings_and_names_bad_sections() {
        let ra = RandAugment::parse(RandAugment::OFFICIAL, "--aa").unwrap();
        assert_eq!(
            (ra.magnitude, ra.magnitude_std, ra.num_ops, ra.increasing),
            (9.0, 0.5, 2, true)
        );
        assert_eq!(ra.fill, [124, 116, 104], "timm's img_mean for ImageNet");
        assert_eq!(
            RandAugment::parse("rand-m7-n3-inc1", "--aa")
                .unwrap()
                .num_ops,
            3
        );
        for (spec, word) in [
            ("auto-m9", "starts with `rand`"),
            ("rand-m9-x3-inc1", "unknown section `x`"),
            ("rand-m-inc1", "has no value"),
            ("rand-m9", "inc1"),
        ] {
            let e = RandAugment::parse(spec, "--aa").unwrap_err().to_string();
            assert!(e.contains(word) && e.contains("--aa"), "{spec}: {e}");
        }
    }

    #[test]
    fn ops_are_drawn_uniformly_with_replacement() {
        let ra = RandAugment::parse(RandAugment::OFFICIAL, "aa").unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0usize; 15];
        let mut repeats = 0;
        let draws = 15_000;
        for _ in 0..draws {
            let d = ra.draw_ops(&mut rng);
            repeats += (d[0] == d[1]) as usize;
            for op in d {
                counts[INCREASING.iter().position(|&o| o == op).unwrap()] += 1;
            }
        }
        // 2000 expected per op (sd ~43); the same op twice 1 / 15 of the time.
        assert!(
            counts.iter().all(|&c| (1800..2200).contains(&c)),
            "{counts:?}"
        );
        assert!((850..1150).contains(&repeats), "{repeats}");
    }

    #[test]
    fn about_three_quarters_of_images_change_and_magnitude_zero_is_the_identity_for_most_ops() {
        let img = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 13 + y) as u8, (y * 11) as u8, (x * y) as u8])
        });
        let ra = RandAugment::parse(RandAugment::OFFICIAL, "aa").unwrap();
        let changed = (0..400u64)
            .filter(|&s| ra.apply(&img, &mut StdRng::seed_from_u64(s)) != img)
            .count();
        // Each of 2 ops runs with p = 0.5: 1 - 0.25 = 0.75 of images get at least one (a
        // few ops, such as equalize, can leave an image as it was).
        assert!((250..330).contains(&changed), "{changed}");
        // m = 0: the enhancements have factor 1, shears/translations/rotation 0, solarize
        // threshold 256, solarize-add 0: all the identity. Posterize keeps 4 bits and the
        // image-statistics ops do not depend on m.
        let mut rng = StdRng::seed_from_u64(0);
        for op in INCREASING {
            let out = ra.apply_op(op, &img, 0.0, &mut rng);
            let identity = !matches!(
                op,
                Op::AutoContrast | Op::Equalize | Op::Invert | Op::Posterize
            );
            assert_eq!(out == img, identity, "{op:?}");
        }
    }

    #[test]
    fn the_strongest_magnitude_reaches_timms_end_points() {
        let img = RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 30) as u8, 77])
        });
        let ra = RandAugment::parse(RandAugment::OFFICIAL, "aa").unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        // Posterize at 10 keeps 0 bits: black. Solarize at 10 inverts everything.
        let p = ra.apply_op(Op::Posterize, &img, 10.0, &mut rng);
        assert!(p.as_raw().iter().all(|&v| v == 0));
        assert_eq!(
            ra.apply_op(Op::Solarize, &img, 10.0, &mut rng),
            ops::invert(&img)
        );
        // Brightness at 10 is a factor 0.1 or 1.9, never anything else.
        for _ in 0..20 {
            let b = ra.apply_op(Op::Brightness, &img, 10.0, &mut rng);
            let v = b.get_pixel(1, 0)[0];
            assert!(v == 3 || v == 57, "{v}");
        }
        // Translation at 10 moves the content by 45% of the width (3.6 px of 8), either way.
        let t = ra.apply_op(Op::TranslateXRel, &img, 10.0, &mut rng);
        let fills = t.pixels().filter(|p| p.0 == ra.fill).count();
        assert!((3 * 8..=4 * 8).contains(&fills), "{fills}");
    }
}
