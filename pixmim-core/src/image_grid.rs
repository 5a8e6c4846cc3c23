//! Rows of image panels drawn as one image: previews, reconstructions (logged and written) and
//! the robustness corruptions' overview.
use std::path::Path;

use crate::error::{Error, Result};

/// Write rows of equally sized panels as one PNG ([`grid_image`]).
pub fn write_grid(rows: &[Vec<image::RgbImage>], out: &Path) -> Result<()> {
    grid_image(rows)?
        .save(out)
        .map_err(|e| Error::data(out, format!("cannot write the image: {e}")))
}

/// Rows of equally sized panels as one image on white, small images enlarged (nearest
/// neighbour) to about 128 px so patches stay visible.
pub fn grid_image(rows: &[Vec<image::RgbImage>]) -> Result<image::RgbImage> {
    let first = rows
        .first()
        .and_then(|r| r.first())
        .ok_or_else(|| Error::Usage("nothing to draw".into()))?;
    let (w, h) = first.dimensions();
    let scale = (128 / h.max(w)).max(1);
    let (cw, ch) = (w * scale, h * scale);
    let pad = 4u32;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let mut grid = image::RgbImage::from_pixel(
        cols * (cw + pad) + pad,
        rows.len() as u32 * (ch + pad) + pad,
        image::Rgb([255, 255, 255]),
    );
    for (row, panels) in rows.iter().enumerate() {
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
    Ok(grid)
}
