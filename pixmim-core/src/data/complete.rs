//! Is an image file whole? A partial download decodes "successfully": libjpeg-turbo
//! ([`super::jpeg`]) only warns and fills the missing scan data with grey (zune-jpeg, under the
//! `image` crate, does the same), a crop decoded in part never reaches the cut, and a PNG cut
//! after its last IDAT decodes too. PIL refuses both ("image file is truncated"), and training
//! on decoder fill silently corrupts a data set.
//! So before decoding we walk the file's own structure, which is cheap and needs no decoder
//! support:
//! * JPEG: every marker segment by its length, every scan's entropy-coded data up to the next
//!   marker, until the end-of-image marker (EOI) after at least one scan.
//! * PNG: every chunk by its length with its CRC-32, from IHDR to IEND, with at least one IDAT.
//!
//! Bytes after EOI / IEND are ignored, as every decoder does (cameras and editors append data).

/// Why a file is not a whole image, or `Ok` when its structure is complete.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => check_jpeg(bytes),
        Ok(image::ImageFormat::Png) => check_png(bytes),
        // Formats we do not read are refused by the decoder with its own message.
        _ => Ok(()),
    }
}

/// Markers that stand alone, without a length: TEM, RST0-7, SOI.
fn is_standalone(marker: u8) -> bool {
    marker == 0x01 || (0xD0..=0xD8).contains(&marker)
}

fn check_jpeg(b: &[u8]) -> Result<(), String> {
    let truncated = |what: &str| {
        Err(format!(
            "truncated JPEG: the file ends {what}, before the end-of-image marker ({} bytes)",
            b.len()
        ))
    };
    let mut pos = 2; // after SOI (checked by the format sniffing)
    let mut scans = 0usize;
    loop {
        // Skip to the next marker; stray bytes between segments are tolerated as libjpeg
        // does (with a warning there), fill bytes 0xFF before a marker are legal.
        while pos < b.len() && b[pos] != 0xFF {
            pos += 1;
        }
        while pos < b.len() && b[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = b.get(pos) else {
            return truncated(if scans == 0 {
                "in its header"
            } else {
                "after a scan"
            });
        };
        pos += 1;
        if marker == 0xD9 {
            if scans == 0 {
                return Err("incomplete JPEG: end-of-image marker before any image data".into());
            }
            return Ok(());
        }
        if is_standalone(marker) {
            continue;
        }
        let Some(len) = b.get(pos..pos + 2) else {
            return truncated("inside a segment header");
        };
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len < 2 {
            return Err(format!("corrupt JPEG: segment length {len} at byte {pos}"));
        }
        if pos + len > b.len() {
            return truncated("inside a segment");
        }
        pos += len;
        if marker == 0xDA {
            // Start of scan: entropy-coded data runs until a marker that is neither a stuffed
            // 0xFF00 nor a restart marker. A scan the file ends inside is the typical partial
            // download.
            scans += 1;
            loop {
                match b.get(pos) {
                    None => return truncated("inside a scan's image data"),
                    Some(0xFF) => match b.get(pos + 1) {
                        None => return truncated("inside a scan's image data"),
                        Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => pos += 1,
                        Some(_) => break,
                    },
                    Some(_) => pos += 1,
                }
            }
        }
    }
}

fn check_png(b: &[u8]) -> Result<(), String> {
    let truncated = |what: &str| {
        Err(format!(
            "truncated PNG: the file ends {what}, before the IEND chunk ({} bytes)",
            b.len()
        ))
    };
    let mut pos = 8; // after the signature (checked by the format sniffing)
    let mut first = true;
    let mut idat = false;
    loop {
        let Some(head) = b.get(pos..pos + 8) else {
            return truncated(if idat {
                "after its image data"
            } else {
                "before its image data is complete"
            });
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let name = String::from_utf8_lossy(kind).into_owned();
        if len > i32::MAX as usize {
            return Err(format!("corrupt PNG: chunk `{name}` claims {len} bytes"));
        }
        if first && kind != b"IHDR" {
            return Err(format!("corrupt PNG: first chunk is `{name}`, not IHDR"));
        }
        first = false;
        let end = pos + 8 + len + 4;
        if end > b.len() {
            return truncated(&format!("inside the `{name}` chunk"));
        }
        let stored = u32::from_be_bytes([b[end - 4], b[end - 3], b[end - 2], b[end - 1]]);
        let computed = crc32fast::hash(&b[pos + 4..end - 4]);
        if stored != computed {
            return Err(format!(
                "corrupt PNG: CRC mismatch in the `{name}` chunk at byte {pos}"
            ));
        }
        match kind {
            b"IDAT" => idat = true,
            b"IEND" if !idat => return Err("incomplete PNG: IEND before any IDAT chunk".into()),
            b"IEND" => return Ok(()),
            _ => {}
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb, RgbImage};

    fn photo() -> RgbImage {
        // Texture, so the scan data is most of the file as in a photo.
        RgbImage::from_fn(96, 64, |x, y| {
            let v = (x * 37 + y * 91 + (x * y) % 23) as u8;
            Rgb([v, v.wrapping_mul(3), 255 - v])
        })
    }

    fn jpeg() -> Vec<u8> {
        let img = photo();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(
                &img,
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    fn png() -> Vec<u8> {
        let img = photo();
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &img,
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn whole_files_pass_and_every_cut_is_refused() {
        for (name, full) in [("jpeg", jpeg()), ("png", png())] {
            assert_eq!(check(&full), Ok(()), "{name}");
            // Every possible cut point, from just after the signature to one byte short.
            for n in 8..full.len() {
                assert!(check(&full[..n]).is_err(), "{name} cut at {n} bytes passed");
            }
            let mut garbage = full.clone();
            garbage.extend_from_slice(b"\0\0trailing bytes\xFF\xD8");
            assert_eq!(check(&garbage), Ok(()), "{name} with trailing bytes");
        }
    }

    #[test]
    fn a_flipped_png_byte_fails_its_crc() {
        let mut p = png();
        let mid = p.len() / 2;
        p[mid] ^= 0x40;
        let e = check(&p).unwrap_err();
        assert!(e.contains("CRC"), "{e}");
    }
}
