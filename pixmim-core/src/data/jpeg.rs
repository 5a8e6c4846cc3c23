//! JPEG decoding with libjpeg-turbo (built from source by `mozjpeg-sys`, whose decoder is
//! libjpeg-turbo's): the library Pillow decodes with, so with the same defaults (accurate
//! integer IDCT, fancy upsampling) a full decode gives Pillow's pixels bit for bit. It can also
//! decode only part of an image (the rows from the first one asked for, cut to the columns
//! asked for, stopping after the last) and decode at 1/2, 1/4 or 1/8 scale in the DCT domain,
//! which is what a crop that the augmentation shrinks 2x or more needs
//! ([`crate::data::decode::Encoded`]).
//!
//! Errors: libjpeg reports a fatal error through `error_exit`, which here panics (the C is
//! built with unwind tables, `mozjpeg-sys`'s `unwinding` feature) and is caught in
//! [`decode`]; warnings (corrupt entropy data that decodes anyway, as Pillow accepts it) are
//! counted, not printed. A file that ends early is refused before decoding
//! ([`crate::data::complete`]).
use mozjpeg_sys as ffi;
use std::os::raw::c_int;

/// The marker EXIF lives in.
const APP1: u8 = 0xe1;

/// What libjpeg reads from the headers alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// The EXIF orientation (1 = as stored; 2-8 are mirrorings and rotations).
    pub orientation: Option<image::metadata::Orientation>,
    /// libjpeg converts the colour space to RGB (YCbCr, grey, RGB); CMYK and YCCK it cannot.
    pub to_rgb: bool,
}

/// Pixels of part of an image, decoded at 1/`reduction` scale: they cover the columns from
/// `left` and the rows from `top` of the scaled image (`width` x `height`, RGB).
#[derive(Debug)]
pub struct Part {
    pub pixels: image::RgbImage,
    pub left: u32,
    pub top: u32,
    pub reduction: u32,
    /// Size of the whole image at this scale.
    pub scaled_size: (u32, u32),
}

/// Pixel rows `top..top + height` and columns `left..left + width` of the image scaled by
/// 1/`reduction` (1, 2, 4 or 8); `None` decodes all of it. The columns decoded may start
/// earlier and end later (libjpeg cuts at block boundaries): [`Part::left`] says where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub reduction: u32,
    pub region: Option<[u32; 4]>,
}

impl Request {
    pub const WHOLE: Request = Request {
        reduction: 1,
        region: None,
    };
}

/// Only the headers: size, orientation, colour space.
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    with_decompressor(bytes, |d| {
        // SAFETY: `d` was set up by `with_decompressor` over `bytes`.
        unsafe { read_header(d) }
    })
}

/// Decode `request` of `bytes` (see [`Request`]) to RGB.
pub fn decode(bytes: &[u8], request: Request) -> Result<Part, String> {
    if ![1, 2, 4, 8].contains(&request.reduction) {
        return Err(format!(
            "reduction {} is not 1, 2, 4 or 8",
            request.reduction
        ));
    }
    with_decompressor(bytes, |d| unsafe {
        // SAFETY: as in `header`; every pointer handed to libjpeg points into buffers that
        // outlive the call.
        let h = read_header(d)?;
        if !h.to_rgb {
            return Err("a CMYK or YCCK JPEG (libjpeg does not convert it to RGB)".into());
        }
        d.out_color_space = ffi::J_COLOR_SPACE::JCS_RGB;
        d.scale_num = 1;
        d.scale_denom = request.reduction;
        ffi::jpeg_start_decompress(d);
        let (sw, sh) = (d.output_width, d.output_height);
        let [mut left, top, mut width, height] = match request.region {
            Some([l, t, w, h]) => {
                let (l, t) = (l.min(sw.saturating_sub(1)), t.min(sh.saturating_sub(1)));
                [l, t, w.clamp(1, sw - l), h.clamp(1, sh - t)]
            }
            None => [0, 0, sw, sh],
        };
        if width < sw {
            ffi::jpeg_crop_scanline(d, &mut left, &mut width);
        }
        if top > 0 && ffi::jpeg_skip_scanlines(d, top) != top {
            return Err("the image ends before the rows asked for".into());
        }
        let stride = 3 * d.output_width as usize;
        let mut pixels = vec![0u8; stride * height as usize];
        let mut row = 0;
        while row < height as usize {
            let mut at = pixels[row * stride..].as_mut_ptr();
            let got = ffi::jpeg_read_scanlines(d, &mut at, 1) as usize;
            if got == 0 {
                return Err("the image ends before its last row".into());
            }
            row += got;
        }
        let pixels = image::RgbImage::from_raw(d.output_width, height, pixels)
            .expect("rows of the decoded width");
        // The rows below the region are not needed: stop here (`with_decompressor` frees).
        Ok(Part {
            pixels,
            left,
            top,
            reduction: request.reduction,
            scaled_size: (sw, sh),
        })
    })
}

/// A decompressor over `bytes`, `f` run on it, everything freed after (on error too).
fn with_decompressor<T>(
    bytes: &[u8],
    f: impl FnOnce(&mut ffi::jpeg_decompress_struct) -> Result<T, String>,
) -> Result<T, String> {
    struct Decompressor {
        cinfo: ffi::jpeg_decompress_struct,
        err: ffi::jpeg_error_mgr,
        created: bool,
    }
    impl Drop for Decompressor {
        fn drop(&mut self) {
            if self.created {
                // SAFETY: created by jpeg_create_decompress; destroying frees its pools.
                unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) }
            }
        }
    }
    if bytes.is_empty() {
        return Err("no data".into());
    }
    let run = std::panic::AssertUnwindSafe(|| {
        // SAFETY: zeroed C structs are what libjpeg's examples start from; the box keeps
        // `err` at one address, which `cinfo` points to.
        let mut d: Box<Decompressor> = Box::new(unsafe { std::mem::zeroed() });
        unsafe {
            d.cinfo.common.err = ffi::jpeg_std_error(&mut d.err);
            d.err.error_exit = Some(error_exit);
            d.err.emit_message = Some(emit_message);
            ffi::jpeg_create_decompress(&mut d.cinfo);
            d.created = true;
            ffi::jpeg_mem_src(&mut d.cinfo, bytes.as_ptr(), bytes.len() as _);
            ffi::jpeg_save_markers(&mut d.cinfo, APP1 as c_int, 0xffff);
        }
        f(&mut d.cinfo)
    });
    match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(payload) => Err(payload
            .downcast_ref::<LibjpegError>()
            .map(|e| e.0.clone())
            .unwrap_or_else(|| "the decoder crashed on it".into())),
    }
}

/// # Safety
/// `d` is a decompressor whose source is set.
unsafe fn read_header(d: &mut ffi::jpeg_decompress_struct) -> Result<Header, String> {
    ffi::jpeg_read_header(d, 1);
    let mut orientation = None;
    let mut marker = d.marker_list;
    while !marker.is_null() {
        let m = &*marker;
        let data = std::slice::from_raw_parts(m.data, m.data_length as usize);
        if m.marker == APP1 {
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                orientation = orientation.or(image::metadata::Orientation::from_exif_chunk(tiff));
            }
        }
        marker = m.next;
    }
    use ffi::J_COLOR_SPACE::*;
    Ok(Header {
        width: d.image_width,
        height: d.image_height,
        orientation,
        to_rgb: !matches!(d.jpeg_color_space, JCS_CMYK | JCS_YCCK),
    })
}

/// The payload of a panic raised by [`error_exit`]: libjpeg's message.
struct LibjpegError(String);

unsafe extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let buffer = [0u8; 80];
    if let Some(format) = (*cinfo.err).format_message {
        format(cinfo, &buffer);
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let msg = String::from_utf8_lossy(&buffer[..end]).into_owned();
    // Not `panic!`: the payload is caught by `with_decompressor`, and the panic hook would
    // print a backtrace note for what is a bad file, not a bug.
    std::panic::resume_unwind(Box::new(LibjpegError(msg)))
}

/// Warnings (level -1) are counted as libjpeg does, not printed; trace messages ignored.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level < 0 {
        (*cinfo.err).num_warnings += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = |a: u32, b: u32| ((x * a + y * b + (x * y) % 7) % 256) as u8;
            image::Rgb([v(3, 1), v(1, 2), v(5, 3)])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .unwrap();
        bytes
    }

    /// A region decodes to the same pixels as the same rows and columns of the whole image,
    /// at every scale, for regions at odd offsets and at the edges.
    #[test]
    fn a_region_is_the_same_pixels_as_in_the_whole_image() {
        let bytes = photo(203, 157);
        for reduction in [1, 2, 4, 8] {
            let whole = decode(
                &bytes,
                Request {
                    reduction,
                    region: None,
                },
            )
            .unwrap();
            let (sw, sh) = whole.scaled_size;
            assert_eq!(
                (sw, sh),
                (203u32.div_ceil(reduction), 157u32.div_ceil(reduction))
            );
            assert_eq!(whole.pixels.dimensions(), (sw, sh));
            for (i, [l, t, w, h]) in [
                [0, 0, sw, sh],
                [sw / 3, sh / 5, sw / 2, sh / 3],
                [1, sh - 2, sw - 1, 2],
                [sw - 1, 0, 1, sh],
                [sw / 2 + 3, 7.min(sh - 1), 5.min(sw / 2 - 3), 1],
            ]
            .into_iter()
            .enumerate()
            {
                let part = decode(
                    &bytes,
                    Request {
                        reduction,
                        region: Some([l, t, w, h]),
                    },
                )
                .unwrap();
                assert!(part.left <= l && part.top == t, "case {i} at 1/{reduction}");
                let pw = part.pixels.width();
                assert!(part.left + pw >= l + w && part.pixels.height() == h);
                for y in 0..h {
                    for x in 0..pw {
                        assert_eq!(
                            part.pixels.get_pixel(x, y),
                            whole.pixels.get_pixel(part.left + x, t + y),
                            "case {i} at 1/{reduction}, ({x}, {y})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn damaged_data_is_an_error_with_libjpegs_message_not_a_crash() {
        let mut bytes = photo(64, 48);
        // Corrupt the frame header's precision byte (SOF0 is FF C0, length, then precision).
        let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        bytes[sof + 4] = 3;
        let err = decode(&bytes, Request::WHOLE).unwrap_err();
        assert!(err.contains("precision"), "{err}");
        assert!(header(b"not a jpeg").is_err());
        assert!(decode(&[], Request::WHOLE).is_err());
        let err = decode(
            &photo(8, 8),
            Request {
                reduction: 3,
                region: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("reduction 3"), "{err}");
    }
}
