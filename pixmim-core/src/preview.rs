//! `pixmim preview`: what the model sees, one row per image:
//! original | augmented view | visible patches after masking | reconstruction target.
use std::path::Path;

use rand::seq::SliceRandom;

use crate::augment::{resize_normalise, to_rgb_image, CropBox, Interpolation};
use crate::data::dataset::Dataset;
use crate::data::seed::{rng, Purpose};
use crate::error::Result;
use crate::image_grid::write_grid;
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
    let mut rows = Vec::new();
    let masks = c
        .parts
        .masking
        .sample(n, &mut rng(c.seed, Purpose::Mask, 0));
    for (row, &i) in order.iter().take(n).enumerate() {
        let img = ds.read(i)?;
        let original = whole_view(&img, (h, w));
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
        let visible = grey_out_masked(
            to_rgb_image(&view.data, h, w),
            &masks.mask[row * gh * gw..(row + 1) * gh * gw],
            (gh, gw),
        );
        let panels = [
            to_rgb_image(&original, h, w),
            to_rgb_image(&view.data, h, w),
            visible,
            to_rgb_image(&target.data, h, w),
        ];
        rows.push(panels.to_vec());
    }
    write_grid(&rows, out)
}

/// The whole of `img` resized (bilinear) to `size`, normalised (C, H, W): how the previews
/// and the training run's reconstruction images show an image, uncropped.
pub fn whole_view(img: &image::RgbImage, size: (usize, usize)) -> Vec<f32> {
    let full = CropBox {
        top: 0,
        left: 0,
        height: img.height(),
        width: img.width(),
    };
    let mut out = vec![0.0; 3 * size.0 * size.1];
    resize_normalise(img, full, size, Interpolation::Bilinear, false, &mut out);
    out
}

/// Grey (128) every removed patch (mask 1) of `img`, cut into a `grid` of patches.
pub fn grey_out_masked(
    mut img: image::RgbImage,
    mask: &[f32],
    grid: (usize, usize),
) -> image::RgbImage {
    let (gh, gw) = grid;
    let (ph, pw) = (img.height() as usize / gh, img.width() as usize / gw);
    for (t, &m) in mask.iter().enumerate() {
        if m == 1.0 {
            let (r, q) = (t / gw, t % gw);
            for y in r * ph..(r + 1) * ph {
                for x in q * pw..(q + 1) * pw {
                    img.put_pixel(x as u32, y as u32, image::Rgb([128, 128, 128]));
                }
            }
        }
    }
    img
}
