//! Object masks: which pixels of an image are its object (the paper's foreground, §3.2).
//! From a mask file per image (same stem, in a folder), from the image's alpha channel, or,
//! for images on a black background such as Fashion-MNIST, from its non-black pixels. The
//! coverage analysis and the `background_crop` augmentation read them.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where an image's object mask comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSource {
    /// The image file's alpha channel (alpha above 127 is object).
    Alpha,
    /// Pixels whose luma is above 0 (images on a black background, IDX datasets).
    NonBlack,
    /// A folder holding a mask image per image, same file stem (luma above 127 is object).
    Folder(PathBuf),
}

impl MaskSource {
    /// `"alpha"`, `"non_black"`, or a folder path.
    pub fn parse(s: &str) -> Self {
        match s {
            "alpha" => Self::Alpha,
            "non_black" => Self::NonBlack,
            dir => Self::Folder(PathBuf::from(dir)),
        }
    }

    /// The mask of dataset item `item` (a file path; `SHARD#MEMBER` in shards, `file#index` in
    /// an IDX file), whose decoded pixels are `rgb` and whose file `encoded` reads (for its
    /// alpha channel). A missing or unreadable mask is a data error naming the file.
    pub fn load(
        &self,
        item: &Path,
        rgb: &image::RgbImage,
        encoded: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Foreground> {
        match self {
            Self::Alpha => Foreground::from_alpha_bytes(item, &encoded()?),
            Self::NonBlack => Ok(Foreground::non_black(rgb)),
            Self::Folder(dir) => {
                Foreground::from_mask_file(&find_mask(dir, item)?, rgb.dimensions())
            }
        }
    }
}

/// A binary foreground mask at the image's own size.
#[derive(Clone, Debug)]
pub struct Foreground {
    pub width: usize,
    pub height: usize,
    pub inside: Vec<bool>,
}

impl Foreground {
    pub fn area(&self) -> usize {
        self.inside.iter().filter(|&&b| b).count()
    }

    /// The foreground of `image`: its mask in `masks` (same stem), else its alpha channel.
    pub fn for_image(image: &Path, masks: Option<&Path>) -> Result<Self> {
        match masks {
            Some(dir) => {
                let size = image::image_dimensions(image)
                    .map_err(|e| Error::data(image, format!("cannot read: {e}")))?;
                Self::from_mask_file(&find_mask(dir, image)?, size)
            }
            None => Self::from_alpha(image),
        }
    }

    /// From a mask image (foreground = luma above 127), checked against the image's size.
    pub fn from_mask_file(mask: &Path, image_size: (u32, u32)) -> Result<Self> {
        let m = image::open(mask)
            .map_err(|e| Error::data(mask, format!("cannot read mask: {e}")))?
            .into_luma8();
        if m.dimensions() != image_size {
            return Err(Error::data(
                mask,
                format!(
                    "mask is {}x{} but its image is {}x{}",
                    m.width(),
                    m.height(),
                    image_size.0,
                    image_size.1
                ),
            ));
        }
        Ok(Self {
            width: m.width() as usize,
            height: m.height() as usize,
            inside: m.pixels().map(|p| p.0[0] > 127).collect(),
        })
    }

    /// From the alpha channel of an RGBA image (foreground = alpha above 127).
    pub fn from_alpha(image: &Path) -> Result<Self> {
        let bytes = std::fs::read(image).map_err(|e| Error::io(image, e))?;
        Self::from_alpha_bytes(image, &bytes)
    }

    /// [`Self::from_alpha`] of an image file's bytes; `image` names them.
    pub fn from_alpha_bytes(image: &Path, bytes: &[u8]) -> Result<Self> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| Error::data(image, format!("cannot read: {e}")))?;
        if !img.color().has_alpha() {
            return Err(Error::data(
                image,
                "has no alpha channel: pass --masks DIR with a mask image per image",
            ));
        }
        let rgba = img.into_rgba8();
        Ok(Self {
            width: rgba.width() as usize,
            height: rgba.height() as usize,
            inside: rgba.pixels().map(|p| p.0[3] > 127).collect(),
        })
    }
}

/// The mask file for `image` in `masks`: same file stem, any image extension. A shard member
/// `SHARD#DIR/KEY.jpg` has the stem `KEY` (tried after the whole name's, so a file with `#`
/// in its name keeps its own).
pub fn find_mask(masks: &Path, image: &Path) -> Result<PathBuf> {
    let stem = image.file_stem().unwrap_or_default();
    let name = image.as_os_str().to_string_lossy();
    let member = name
        .rsplit_once('#')
        .map(|(_, m)| m.rsplit('/').next().unwrap_or(m));
    let member_stem = member.and_then(|m| Path::new(m).file_stem());
    for stem in [Some(stem), member_stem].into_iter().flatten() {
        for ext in ["png", "PNG", "jpg", "jpeg", "bmp"] {
            let p = masks.join(stem).with_extension(ext);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(Error::data(
        image,
        format!(
            "has no mask named {}.* in {}",
            member_stem.unwrap_or(stem).to_string_lossy(),
            masks.display()
        ),
    ))
}

impl Foreground {
    /// The pixels of `rgb` whose luma is above 0.
    pub fn non_black(rgb: &image::RgbImage) -> Self {
        Self {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            inside: rgb.pixels().map(|p| p.0.iter().any(|&c| c > 0)).collect(),
        }
    }
}

/// Counts of object pixels in any box in O(1): the summed-area table of a mask.
pub struct ObjectCounts {
    width: usize,
    height: usize,
    /// (height + 1) x (width + 1); entry (y, x) counts the object in [0, x) x [0, y).
    sums: Vec<u32>,
}

impl ObjectCounts {
    pub fn of(fg: &Foreground) -> Self {
        let (w, h) = (fg.width, fg.height);
        let mut sums = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += fg.inside[y * w + x] as u32;
                sums[(y + 1) * (w + 1) + x + 1] = sums[y * (w + 1) + x + 1] + row;
            }
        }
        Self {
            width: w,
            height: h,
            sums,
        }
    }

    pub fn total(&self) -> u32 {
        self.sums[self.sums.len() - 1]
    }

    /// Object pixels in `[x0, x1) x [y0, y1)`, clipped to the image.
    pub fn count(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> u32 {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        if x0 >= x1 || y0 >= y1 {
            return 0;
        }
        let at = |x: usize, y: usize| self.sums[y * (self.width + 1) + x];
        at(x1, y1) + at(x0, y0) - at(x0, y1) - at(x1, y0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_counts_equal_counting_pixel_by_pixel() {
        let (w, h) = (13, 7);
        let fg = Foreground {
            width: w,
            height: h,
            inside: (0..w * h).map(|i| (i * 7919) % 5 < 2).collect(),
        };
        let c = ObjectCounts::of(&fg);
        assert_eq!(c.total() as usize, fg.area());
        for (x0, y0, x1, y1) in [(0, 0, 13, 7), (2, 1, 9, 6), (5, 5, 5, 7), (12, 0, 20, 9)] {
            let mut want = 0;
            for y in y0..y1.min(h) {
                for x in x0..x1.min(w) {
                    want += fg.inside[y * w + x] as u32;
                }
            }
            assert_eq!(c.count(x0, y0, x1, y1), want, "({x0}, {y0}, {x1}, {y1})");
        }
    }

    #[test]
    fn non_black_pixels_are_the_object() {
        let mut img = image::RgbImage::new(4, 2);
        img.put_pixel(1, 0, image::Rgb([0, 3, 0]));
        img.put_pixel(3, 1, image::Rgb([200, 200, 200]));
        let fg = Foreground::non_black(&img);
        assert_eq!(fg.area(), 2);
        assert!(fg.inside[1] && fg.inside[7]);
    }
}
