//! From an item's bytes to RGB8 pixels: [`decode_bytes`] decodes all of an image;
//! [`Encoded`] holds an image read but not yet decoded, so that an augmentation which crops
//! decodes only the part its view reads ([`EncodedImage::pixels_for`]).
//!
//! JPEGs go through libjpeg-turbo ([`super::jpeg`]), Pillow's decoder, so a whole decode gives
//! Pillow's pixels; other formats, and JPEGs libjpeg cannot turn into RGB (CMYK), through the
//! `image` crate. Whatever the format, EXIF orientation is applied as PIL's `exif_transpose`
//! would, grey, 16-bit, CMYK and alpha images become 8-bit RGB (alpha dropped, as PIL's
//! `convert("RGB")`), a file that ends before its image does is refused
//! ([`super::complete`]), and a decoder failure is an error naming the file.
use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::jpeg::{self, Request};
use super::retry::{retry_io, RETRY_DELAYS};
use crate::error::{Error, Result};
use crate::traits::EncodedImage;
use image::metadata::Orientation;

/// The most pixels a JPEG may declare: Pillow's `DecompressionBombError` threshold (twice its
/// `MAX_IMAGE_PIXELS`). A crafted header of 65,500 x 65,500 would otherwise ask for 12 GB. PNGs
/// are held to the `image` crate's memory limit (512 MiB).
pub const MAX_PIXELS: u64 = 178_956_970;

/// Decode an image file to RGB8, naming the file on failure.
pub fn decode(path: &Path) -> Result<image::RgbImage> {
    let bytes = retry_io(RETRY_DELAYS, || std::fs::read(path)).map_err(|e| Error::io(path, e))?;
    Encoded::new(path, bytes, false)?.into_image()
}

/// [`decode`] of bytes already read; `path` names them in errors.
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<image::RgbImage> {
    Encoded::new(path, bytes.to_vec(), false)?.into_image()
}

fn cannot_decode(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::data(path, format!("cannot decode image: {why}"))
}

/// An image whose size is known and whose pixels are decoded when asked for, as much of them
/// as asked for. A JPEG stays encoded; anything else is decoded whole at once.
pub struct Encoded {
    path: PathBuf,
    form: Form,
    /// May [`Self::pixels_for`] decode at 1/2, 1/4 or 1/8 scale (`data.scaled_decode`)?
    scaled: bool,
}

enum Form {
    /// A JPEG stored as is (no EXIF rotation or mirroring, a colour space libjpeg converts).
    Jpeg {
        bytes: Vec<u8>,
        size: (u32, u32),
    },
    Decoded(image::RgbImage),
}

impl Encoded {
    /// `bytes` of the image at `path` (which names it in errors). The file's structure and a
    /// JPEG's headers are checked here, so a damaged file fails before any augmentation draws.
    pub fn new(path: &Path, bytes: Vec<u8>, scaled: bool) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::data(path, "empty file (0 bytes)"));
        }
        super::complete::check(&bytes).map_err(|why| Error::data(path, why))?;
        let is_jpeg = bytes.starts_with(&[0xff, 0xd8]);
        let header = is_jpeg.then(|| jpeg::header(&bytes));
        if let Some(Ok(h)) = &header {
            let pixels = h.width as u64 * h.height as u64;
            if pixels > MAX_PIXELS {
                return Err(Error::data(
                    path,
                    format!(
                        "{} x {} = {pixels} pixels, more than {MAX_PIXELS}: refused as a \
                         decompression bomb (Pillow's limit)",
                        h.width, h.height
                    ),
                ));
            }
        }
        let form = match header {
            Some(Err(why)) => return Err(cannot_decode(path, why)),
            Some(Ok(h))
                if h.to_rgb
                    && h.orientation.unwrap_or(Orientation::NoTransforms)
                        == Orientation::NoTransforms =>
            {
                Form::Jpeg {
                    bytes,
                    size: (h.width, h.height),
                }
            }
            Some(Ok(h)) if h.to_rgb => {
                let part =
                    jpeg::decode(&bytes, Request::WHOLE).map_err(|why| cannot_decode(path, why))?;
                let mut img = image::DynamicImage::ImageRgb8(part.pixels);
                img.apply_orientation(h.orientation.expect("a transform"));
                Form::Decoded(img.into_rgb8())
            }
            _ => Form::Decoded(decode_with_image_crate(path, &bytes)?),
        };
        Ok(Self {
            path: path.to_path_buf(),
            form,
            scaled,
        })
    }

    /// All of the image, taking it (no copy of pixels already decoded).
    pub fn into_image(self) -> Result<image::RgbImage> {
        match self.form {
            Form::Decoded(img) => Ok(img),
            Form::Jpeg { .. } => self.image().map(Cow::into_owned),
        }
    }

    /// An image already decoded (an IDX array's).
    pub fn decoded(path: &Path, img: image::RgbImage) -> Self {
        Self {
            path: path.to_path_buf(),
            form: Form::Decoded(img),
            scaled: false,
        }
    }
}

impl EncodedImage for Encoded {
    /// (width, height) as shown, EXIF orientation applied.
    fn size(&self) -> (u32, u32) {
        match &self.form {
            Form::Jpeg { size, .. } => *size,
            Form::Decoded(img) => img.dimensions(),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// All of the image.
    fn image(&self) -> Result<Cow<'_, image::RgbImage>> {
        match &self.form {
            Form::Decoded(img) => Ok(Cow::Borrowed(img)),
            Form::Jpeg { bytes, .. } => jpeg::decode(bytes, Request::WHOLE)
                .map(|part| Cow::Owned(part.pixels))
                .map_err(|why| cannot_decode(&self.path, why)),
        }
    }

    /// Pixels that hold the sub-pixel `region` `[left, top, width, height]` and every pixel a
    /// resize of it to `size` (height, width) reads, with the region in their coordinates.
    /// A JPEG decodes only those rows and columns; where the region shrinks by 2x or more and
    /// scaled decoding is on, it decodes at 1/2, 1/4 or 1/8 scale in the DCT domain (each
    /// pixel the average of that many, a low-pass before the resize's own filter), and the
    /// region is scaled with it. Without scaling, resizing the region out of these pixels
    /// gives what resizing it out of the whole image does, bit for bit.
    fn pixels_for(
        &self,
        region: [f64; 4],
        size: (usize, usize),
    ) -> Result<(Cow<'_, image::RgbImage>, [f64; 4])> {
        let Form::Jpeg { bytes, size: full } = &self.form else {
            return Ok((self.image()?, region));
        };
        let [left, top, width, height] = region;
        let (out_h, out_w) = (size.0 as f64, size.1 as f64);
        let reduction = if self.scaled {
            [8u32, 4, 2]
                .into_iter()
                .find(|&r| width / r as f64 >= out_w && height / r as f64 >= out_h)
                .unwrap_or(1)
        } else {
            1
        };
        let r = reduction as f64;
        let [left, top, width, height] = [left / r, top / r, width / r, height / r];
        // The resize's filter reads up to its support (2 output pixels for bicubic, 1 for
        // bilinear), scaled by the shrink, beyond the region: decode that much more.
        let shrink = (width / out_w).max(height / out_h).max(1.0);
        let margin = (2.0 * shrink).ceil() + 1.0;
        let (sw, sh) = (full.0.div_ceil(reduction), full.1.div_ceil(reduction));
        let span = |from: f64, len: f64, end: u32| {
            let a = (from - margin).floor().clamp(0.0, end as f64) as u32;
            let b = (from + len + margin).ceil().clamp(0.0, end as f64) as u32;
            (a, b.max(a + 1).min(end))
        };
        let (x0, x1) = span(left, width, sw);
        let (y0, y1) = span(top, height, sh);
        let request = Request {
            reduction,
            region: ((x0, y0, x1, y1) != (0, 0, sw, sh)).then_some([x0, y0, x1 - x0, y1 - y0]),
        };
        let part = jpeg::decode(bytes, request).map_err(|why| cannot_decode(&self.path, why))?;
        let local = [
            left - part.left as f64,
            top - part.top as f64,
            width,
            height,
        ];
        Ok((Cow::Owned(part.pixels), local))
    }
}

/// The `image` crate's decoders: PNG, and JPEGs libjpeg cannot convert to RGB.
fn decode_with_image_crate(path: &Path, bytes: &[u8]) -> Result<image::RgbImage> {
    let decoded = std::panic::catch_unwind(|| -> image::ImageResult<image::DynamicImage> {
        use image::ImageDecoder;
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
        let mut decoder = reader.into_decoder()?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let mut img = image::DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    });
    match decoded {
        Ok(Ok(img)) => Ok(img.into_rgb8()),
        Ok(Err(e)) => Err(cannot_decode(path, e)),
        Err(_) => Err(cannot_decode(path, "the decoder crashed on it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::resize::{Resize, ResizeParams};
    use crate::augment::{
        CenterCrop, Interpolation, RandomResizedCrop, RandomResizedCropParams, SimpleResizedCrop,
        SrcParams,
    };
    use crate::traits::Augmentation;
    use rand::{RngCore, SeedableRng};

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/jpeg")
    }

    /// tests/vectors/jpeg: Pillow's pixels for baseline (4:2:0, 4:4:4), progressive and grey
    /// JPEGs of odd sizes.
    #[test]
    fn whole_decodes_are_pillows_pixels() {
        let mut cases = 0;
        for entry in std::fs::read_dir(vectors()).unwrap() {
            let jpg = entry.unwrap().path();
            let pil = jpg.with_extension("pil.png");
            if jpg.extension().is_none_or(|e| e != "jpg") || !pil.exists() {
                continue;
            }
            let pil = image::open(pil).unwrap().into_rgb8();
            let ours = decode(&jpg).unwrap();
            assert_eq!(ours.dimensions(), pil.dimensions(), "{}", jpg.display());
            let differ = ours.iter().zip(pil.iter()).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{}: values unlike Pillow's", jpg.display());
            cases += 1;
        }
        assert_eq!(cases, 4);
    }

    /// A header declaring 60,000 x 60,000 pixels is refused by name before anything is
    /// allocated for it.
    #[test]
    fn a_decompression_bomb_is_refused_naming_the_file() {
        let mut bytes = photo();
        let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        // SOF0: marker, length (2), precision (1), height (2), width (2).
        bytes[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
        let err = Encoded::new(Path::new("bomb.jpg"), bytes.clone(), true)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("bomb.jpg") && err.contains("decompression bomb"),
            "{err}"
        );
        assert!(decode_bytes(Path::new("bomb.jpg"), &bytes).is_err());
    }

    /// A 500 x 375 photo-like JPEG (ImageNet's typical size): smooth shading, edges and noise.
    fn photo() -> Vec<u8> {
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let n = ((x * 7919 + y * 104_729) ^ (x * y)) % 23;
            let edge = if (x / 37 + y / 29) % 2 == 0 { 60 } else { 0 };
            let v = |a: u32, b: u32| ((x * a / 4 + y * b / 3 + n + edge) % 256) as u8;
            image::Rgb([v(1, 2), v(2, 1), v(3, 3)])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .unwrap();
        bytes
    }

    fn augmentations(size: usize) -> Vec<Box<dyn Augmentation>> {
        let s = (size, size);
        vec![
            Box::new(RandomResizedCrop::new(s, RandomResizedCropParams::official()).unwrap()),
            Box::new(CenterCrop::eval(s, 0.875).unwrap()),
            Box::new(SimpleResizedCrop::new(s, SrcParams::pixmim()).unwrap()),
            Box::new(
                Resize::new(
                    s,
                    ResizeParams {
                        interpolation: Interpolation::Bicubic,
                        hflip: 0.5,
                    },
                )
                .unwrap(),
            ),
        ]
    }

    /// The view of an image decoded in part (its crop's rows and columns, plus the resize
    /// filter's reach) is the view of the whole image, bit for bit, for every crop drawn.
    #[test]
    fn a_view_decoded_in_part_is_the_view_of_the_whole_image() {
        let bytes = photo();
        let path = Path::new("photo.jpg");
        let whole = decode_bytes(path, &bytes).unwrap();
        let encoded = Encoded::new(path, bytes, false).unwrap();
        assert_eq!(encoded.size(), (500, 375));
        for size in [224, 96] {
            for aug in augmentations(size) {
                let n = 3 * size * size;
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                for seed in 0..24 {
                    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
                    aug.apply(&whole, &mut r, &mut a);
                    let next = r.next_u64();
                    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
                    aug.apply_encoded(&encoded, &mut r, &mut b).unwrap();
                    assert_eq!(r.next_u64(), next, "{}: other draws", aug.describe());
                    assert!(a == b, "{} at {size}, seed {seed}", aug.describe());
                }
            }
        }
    }

    /// Where the crop shrinks 2x or more, scaled decoding reads fewer pixels (the region comes
    /// back reduced); below 2x it decodes at full size.
    #[test]
    fn scaled_decoding_reduces_only_where_the_crop_shrinks_2x_or_more() {
        let scaled = Encoded::new(Path::new("photo.jpg"), photo(), true).unwrap();
        for (region, size, reduction) in [
            ([0.0, 0.0, 500.0, 375.0], 40, 8.0),
            ([0.0, 0.0, 500.0, 375.0], 160, 2.0),
            ([10.0, 0.0, 300.0, 375.0], 160, 1.0),
            ([10.0, 20.0, 400.0, 330.0], 80, 4.0),
        ] {
            let (pixels, local) = scaled.pixels_for(region, (size, size)).unwrap();
            assert_eq!(local[2], region[2] / reduction, "{region:?} to {size}");
            assert!(pixels.width() as f64 <= (500.0 / reduction).ceil());
        }
    }

    /// tests/vectors/jpeg/coffee_resized.json: Pillow's decode and bicubic resize of three
    /// crops of a real photo at four sizes (shrinks of 1.3x to 25x). pixmim's views, in levels
    /// of 255: decoded at full size (the same pixels as Pillow's; the resampling differs)
    /// within 0.25 on average, 1 at the 99th percentile and 10 at most (seen: 0.16, 1, 8);
    /// decoded at a reduced scale where the crop shrinks 2x or more, within 0.75 on average
    /// and 5 at the 99th percentile (seen: 0.48, 4; at most 33, on an edge: the DCT's
    /// reduction is a box-like low-pass where Pillow's bicubic filter is wider and smoother).
    #[test]
    fn views_stay_within_the_stated_tolerance_of_pillows_resize() {
        let dir = vectors();
        let cases: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(dir.join("coffee_resized.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(dir.join("coffee.jpg")).unwrap();
        for scaled in [false, true] {
            let img = Encoded::new(Path::new("coffee.jpg"), bytes.clone(), scaled).unwrap();
            let (mut diffs, mut reduced) = (Vec::new(), 0);
            for case in &cases {
                let b: Vec<f64> = serde_json::from_value(case["box"].clone()).unwrap();
                let size = case["size"].as_u64().unwrap() as usize;
                let region = [b[0], b[1], b[2], b[3]];
                let (pixels, local) = img.pixels_for(region, (size, size)).unwrap();
                reduced += usize::from(local[2] < region[2]);
                let ours = crate::augment::resize_region(
                    &pixels,
                    local,
                    (size, size),
                    Interpolation::Bicubic,
                );
                let file = dir.join(case["file"].as_str().unwrap());
                let pil = image::open(&file).unwrap().into_rgb8();
                assert_eq!(ours.dimensions(), pil.dimensions());
                diffs.extend(ours.iter().zip(pil.iter()).map(|(a, b)| a.abs_diff(*b)));
            }
            diffs.sort();
            let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
            let (p99, max) = (diffs[diffs.len() * 99 / 100], diffs[diffs.len() - 1]);
            if scaled {
                assert!(
                    reduced >= 8,
                    "{reduced} views reduced: the check would be vacuous"
                );
                assert!(mean < 0.75 && p99 <= 5, "mean {mean:.3}, p99 {p99}");
            } else {
                assert_eq!(reduced, 0);
                assert!(
                    mean < 0.25 && p99 <= 1 && max <= 10,
                    "mean {mean:.3}, max {max}"
                );
            }
        }
    }
}
