//! Robustness to common corruptions (ImageNet-C; paper Table 4's "domain shift"): the
//! corruptions ([`corruptions`], built from [`filters`]) by name and severity, each a pure
//! function of (seed, image, corruption, severity).
pub mod corruptions;
pub mod filters;

use image::RgbImage;

use self::corruptions as c;
use self::filters::FloatImage;
use crate::data::seed::{rng, Purpose};
use crate::error::{Error, Result};

/// ImageNet-C's names, in its order (noise, blur, weather, digital), of the twelve here.
pub const CORRUPTIONS: [&str; 12] = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "zoom_blur",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
];

/// ImageNet-C's three the twelve leave out, and why (for error messages and docs).
pub const LEFT_OUT: [(&str, &str); 3] = [
    ("motion_blur", "ImageMagick's motion blur kernel"),
    ("snow", "built on ImageMagick's motion blur"),
    ("frost", "blends ImageNet-C's own frost photographs"),
];

/// Parse a comma-separated list (`all` = every corruption); unknown names are refused by
/// name under `key`.
pub fn parse_list(list: &str, key: &str) -> Result<Vec<&'static str>> {
    if list == "all" {
        return Ok(CORRUPTIONS.to_vec());
    }
    list.split(',')
        .map(str::trim)
        .map(|name| {
            CORRUPTIONS
                .iter()
                .find(|&&c| c == name)
                .copied()
                .ok_or_else(|| {
                    let why = LEFT_OUT
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, why)| format!(" (left out: {why})"))
                        .unwrap_or_default();
                    Error::Usage(format!(
                        "{key}: unknown corruption `{name}`{why}; known: {}",
                        CORRUPTIONS.join(", ")
                    ))
                })
        })
        .collect()
}

/// `img` under `corruption` at `severity` (1-5); the random draws are keyed by
/// (seed, image index, corruption, severity).
pub fn corrupt(
    img: &RgbImage,
    corruption: &str,
    severity: usize,
    seed: u64,
    index: u64,
) -> RgbImage {
    assert!((1..=5).contains(&severity), "severity {severity}");
    let k = CORRUPTIONS
        .iter()
        .position(|&n| n == corruption)
        .expect("a known corruption");
    let key = (index * CORRUPTIONS.len() as u64 + k as u64) * 5 + severity as u64 - 1;
    let r = &mut rng(seed, Purpose::Corruption, key);
    let scale = img.width().min(img.height()) as f64 / 224.0;
    let s = severity;
    let x = || FloatImage::from_rgb(img);
    let out = match corruption {
        "gaussian_noise" => c::gaussian_noise(x(), s, r),
        "shot_noise" => c::shot_noise(x(), s, r),
        "impulse_noise" => c::impulse_noise(x(), s, r),
        "defocus_blur" => c::defocus_blur(x(), s, scale),
        "glass_blur" => c::glass_blur(x(), s, scale, r),
        "zoom_blur" => c::zoom_blur(x(), s),
        "fog" => c::fog(x(), s, r),
        "brightness" => c::brightness(x(), s),
        "contrast" => c::contrast(x(), s),
        "elastic_transform" => c::elastic_transform(x(), s, scale, r),
        "pixelate" => return c::pixelate(img, s),
        "jpeg_compression" => return c::jpeg_compression(img, s),
        other => unreachable!("{other} is in CORRUPTIONS"),
    };
    out.to_rgb()
}

/// One row per corruption, one column per severity (the clean image first): what
/// `--dump` shows a user.
pub fn corruption_grid(
    img: &RgbImage,
    corruptions: &[&str],
    severities: &[usize],
    seed: u64,
) -> Result<RgbImage> {
    let rows: Vec<Vec<RgbImage>> = corruptions
        .iter()
        .map(|name| {
            std::iter::once(img.clone())
                .chain(severities.iter().map(|&s| corrupt(img, name, s, seed, 0)))
                .collect()
        })
        .collect();
    crate::image_grid::grid_image(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
        let first = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
            .min()
            .unwrap();
        image::imageops::resize(
            &crate::data::decode::decode(&first).unwrap(),
            64,
            64,
            image::imageops::FilterType::Triangle,
        )
    }

    #[test]
    fn every_corruption_changes_a_photo_and_repeats_per_key() {
        let img = sample();
        for name in CORRUPTIONS {
            let (a, b) = (corrupt(&img, name, 3, 7, 0), corrupt(&img, name, 3, 7, 0));
            assert_eq!(a, b, "{name}: a pure function of its key");
            assert_eq!(a.dimensions(), img.dimensions());
            let diff: f64 = a
                .as_raw()
                .iter()
                .zip(img.as_raw())
                .map(|(&x, &y)| (x as f64 - y as f64).abs())
                .sum::<f64>()
                / a.as_raw().len() as f64;
            assert!(diff > 0.5, "{name}: mean change {diff}");
            let deterministic = matches!(
                name,
                "defocus_blur"
                    | "zoom_blur"
                    | "brightness"
                    | "contrast"
                    | "pixelate"
                    | "jpeg_compression"
            );
            assert_eq!(
                corrupt(&img, name, 3, 7, 1) == a,
                deterministic,
                "{name}: another image index draws anew"
            );
        }
        let grid = corruption_grid(&img, &CORRUPTIONS, &[1, 3, 5], 0).unwrap();
        assert_eq!(grid.dimensions(), (4 * 132 + 4, 12 * 132 + 4));
        grid.save(std::env::temp_dir().join("pixmim-corruptions.png"))
            .unwrap();
    }

    #[test]
    fn lists_name_unknown_and_left_out_corruptions() {
        assert_eq!(parse_list("all", "--corruptions").unwrap().len(), 12);
        assert_eq!(
            parse_list("fog, contrast", "--corruptions").unwrap(),
            ["fog", "contrast"]
        );
        let e = parse_list("fog,frost", "--corruptions")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--corruptions") && e.contains("`frost`") && e.contains("photographs"),
            "{e}"
        );
        let e = parse_list("blurry", "--corruptions")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`blurry`") && e.contains("gaussian_noise"),
            "{e}"
        );
    }
}
