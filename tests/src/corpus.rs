//! The bad-data corpus of issue 8, written fresh by each test that needs it: every kind of
//! file a real image folder holds sooner or later.
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, Rgb, RgbImage};

pub struct Corpus {
    /// Files that must decode, with the (width, height) they must decode to.
    pub good: Vec<(PathBuf, (u32, u32))>,
    /// Files that must be refused (or skipped).
    pub bad: Vec<PathBuf>,
}

/// A 40x20 image: left half red, right half blue.
pub fn halves() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([230, 20, 20])
        } else {
            Rgb([20, 20, 230])
        }
    })
}

/// A 96x64 image with texture, so the compressed pixels are most of the file, as in a photo.
pub fn textured() -> RgbImage {
    RgbImage::from_fn(96, 64, |x, y| {
        let v = (x * 37 + y * 91 + (x * y) % 23) as u8;
        Rgb([v, v.wrapping_mul(3), 255 - v])
    })
}

/// A progressive JPEG (several scans), which `image`'s encoder cannot write.
pub fn progressive_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 90);
    enc.set_progressive(true);
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("encode");
    bytes
}

fn jpeg(img: &RgbImage, exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut bytes, 95);
    if let Some(e) = exif {
        enc.set_exif_metadata(e).expect("exif");
    }
    enc.write_image(
        img,
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .expect("encode");
    bytes
}

/// Raw little-endian TIFF block with one IFD entry: Orientation (0x0112) = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut b = b"II*\0".to_vec();
    b.extend(8u32.to_le_bytes()); // first IFD right after the header
    b.extend(1u16.to_le_bytes()); // one entry
    b.extend(0x0112u16.to_le_bytes());
    b.extend(3u16.to_le_bytes()); // SHORT
    b.extend(1u32.to_le_bytes());
    b.extend(value.to_le_bytes());
    b.extend(0u16.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // no next IFD
    b
}

pub fn write_corpus(dir: &Path) -> Corpus {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n);
    let mut good = Vec::new();
    let mut bad = Vec::new();

    let photo = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    std::fs::write(p("plain.jpg"), jpeg(&photo, None)).unwrap();
    good.push((p("plain.jpg"), (64, 48)));

    // EXIF orientation 6: stored landscape, shown rotated 90 degrees clockwise.
    std::fs::write(
        p("exif_rotated.jpg"),
        jpeg(&halves(), Some(exif_orientation(6))),
    )
    .unwrap();
    good.push((p("exif_rotated.jpg"), (20, 40)));

    // CMYK JPEG (print workflows; a few are in ImageNet).
    let cmyk: Vec<u8> = (0..32 * 24).flat_map(|_| [0u8, 200, 200, 0]).collect();
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 95)
        .encode(&cmyk, 32, 24, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    std::fs::write(p("cmyk.jpg"), bytes).unwrap();
    good.push((p("cmyk.jpg"), (32, 24)));

    let gray16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(30, 30, |x, _| {
        image::Luma([(x as u16) * 2000])
    });
    gray16.save(p("gray16.png")).unwrap();
    good.push((p("gray16.png"), (30, 30)));

    image::GrayImage::from_fn(30, 20, |x, _| image::Luma([x as u8 * 8]))
        .save(p("gray8.png"))
        .unwrap();
    good.push((p("gray8.png"), (30, 20)));

    image::RgbaImage::from_fn(24, 24, |x, _| image::Rgba([200, 100, 50, (x * 10) as u8]))
        .save(p("alpha.png"))
        .unwrap();
    good.push((p("alpha.png"), (24, 24)));

    // Smaller than any crop, and degenerate aspect ratios.
    RgbImage::from_pixel(1, 1, Rgb([9, 99, 199]))
        .save(p("one_pixel.png"))
        .unwrap();
    good.push((p("one_pixel.png"), (1, 1)));
    RgbImage::from_pixel(1, 300, Rgb([50, 60, 70]))
        .save(p("thin.png"))
        .unwrap();
    good.push((p("thin.png"), (1, 300)));

    // A PNG with a .jpg name: the format comes from the bytes.
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&photo, 64, 48, image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(p("png_named.jpg"), png).unwrap();
    good.push((p("png_named.jpg"), (64, 48)));

    // Partial downloads: the first third of a photo's bytes ends inside the scan data, which
    // the decoder would fill with grey; a PNG cut late still holds all its pixels but no IEND.
    let full = jpeg(&textured(), None);
    std::fs::write(p("truncated.jpg"), &full[..full.len() / 3]).unwrap();
    bad.push(p("truncated.jpg"));
    let full = progressive_jpeg(&textured());
    std::fs::write(p("truncated_progressive.jpg"), &full[..full.len() / 2]).unwrap();
    bad.push(p("truncated_progressive.jpg"));
    let mut full = Vec::new();
    image::codecs::png::PngEncoder::new(&mut full)
        .write_image(&textured(), 96, 64, image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(p("truncated.png"), &full[..full.len() * 9 / 10]).unwrap();
    bad.push(p("truncated.png"));
    std::fs::write(p("zero_bytes.jpg"), b"").unwrap();
    bad.push(p("zero_bytes.jpg"));
    std::fs::write(p("not_an_image.png"), b"<html>404 not found</html>").unwrap();
    bad.push(p("not_an_image.png"));

    Corpus { good, bad }
}
