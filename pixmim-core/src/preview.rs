//! `pixmim preview`: what the model sees, one row per image:
//! original | augmented view | visible patches after masking | reconstruction target.
use std::path::Path;

use rand::seq::SliceRandom;

use crate::augment::{resize_normalise, to_rgb_image, CropBox, Interpolation};
use crate::data::dataset::{decode, Dataset};
use crate::data::seed::{rng, Purpose};
use crate::error::{Error, Result};
use crate::registry::Composed;
use crate::traits::ImageBatch;

/// Write the preview grid for the first `count` images (in a seeded shuffled order) of `data`.
pub fn preview(c: &Composed, data: &Path, count: usize, out: &Path) -> Result<()> {
    let ds = Dataset::open(data)?;
    let (h, w) = c.geometry.image;
    let (gh, gw) = c.geometry.mask_grid;
    let n = count.min(ds.len()).max(1);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    order.shuffle(&mut rng(c.seed, Purpose::Shuffle, u64::MAX));
    let scale = (128 / h.max(w)).max(1) as u32; // small presets are enlarged for viewing
    let (cw, ch) = (w as u32 * scale, h as u32 * scale);
    let pad = 4u32;
    let mut grid = image::RgbImage::from_pixel(
        4 * (cw + pad) + pad,
        n as u32 * (ch + pad) + pad,
        image::Rgb([255, 255, 255]),
    );
    let masks = c
        .parts
        .masking
        .sample(n, &mut rng(c.seed, Purpose::Mask, 0));
    for (row, &i) in order.iter().take(n).enumerate() {
        let img = decode(&ds.items[i])?;
        let full = CropBox {
            top: 0,
            left: 0,
            height: img.height(),
            width: img.width(),
        };
        let mut original = vec![0.0; 3 * h * w];
        resize_normalise(
            &img,
            full,
            (h, w),
            Interpolation::Bilinear,
            false,
            &mut original,
        );
        let mut view = ImageBatch::zeros(1, 3, h, w);
        c.parts.augmentation.apply(
            &img,
            &mut rng(c.seed, Purpose::Augment, row as u64),
            &mut view.data,
        );
        let target = c
            .parts
            .target
            .generate(&view)
            .unwrap_or_else(|| view.clone());
        let mut visible = to_rgb_image(&view.data, h, w);
        let (ph, pw) = (h / gh, w / gw);
        for (t, &m) in masks.mask[row * gh * gw..(row + 1) * gh * gw]
            .iter()
            .enumerate()
        {
            if m == 1.0 {
                let (r, q) = (t / gw, t % gw);
                for y in r * ph..(r + 1) * ph {
                    for x in q * pw..(q + 1) * pw {
                        visible.put_pixel(x as u32, y as u32, image::Rgb([128, 128, 128]));
                    }
                }
            }
        }
        let panels = [
            to_rgb_image(&original, h, w),
            to_rgb_image(&view.data, h, w),
            visible,
            to_rgb_image(&target.data, h, w),
        ];
        for (k, p) in panels.iter().enumerate() {
            let big = image::imageops::resize(p, cw, ch, image::imageops::FilterType::Nearest);
            image::imageops::replace(
                &mut grid,
                &big,
                (pad + k as u32 * (cw + pad)) as i64,
                (pad + row as u32 * (ch + pad)) as i64,
            );
        }
    }
    grid.save(out)
        .map_err(|e| Error::data(out, format!("cannot write the preview: {e}")))
}
