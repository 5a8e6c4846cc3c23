//! IDX files, the MNIST / Fashion-MNIST format: `*-images-idx3-ubyte[.gz]` (u8 images) with
//! its `*-labels-idx1-ubyte[.gz]`. Grey images are replicated to RGB on read, so the rest of
//! the pipeline (augmentations, eval transforms) sees ordinary images.
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A decoded IDX image file (and its labels when the labels file is beside it).
#[derive(Clone, Debug)]
pub struct IdxImages {
    pub path: PathBuf,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pixels: Vec<u8>,
    pub labels: Option<Vec<u8>>,
}

/// Does this file name look like an IDX image file?
pub fn is_idx_images(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.contains("-images-idx3-ubyte"))
        .unwrap_or(false)
}

/// The labels file that belongs to an images file: `images-idx3` -> `labels-idx1`.
pub fn labels_path(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    Some(images.with_file_name(name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte")))
}

/// Read an IDX file, gzipped or not, checking its header's sizes before the data: a gzip
/// stream is inflated only up to the size the header declares (plus a byte, to see excess),
/// so a small file that inflates to gigabytes is refused without taking them.
fn read(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 2];
    let mut probe = std::io::BufReader::new(file);
    let gz = {
        use std::io::BufRead;
        let buf = probe.fill_buf().map_err(|e| Error::io(path, e))?;
        head[..buf.len().min(2)].copy_from_slice(&buf[..buf.len().min(2)]);
        head == [0x1f, 0x8b]
    };
    let mut stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(probe))
    } else {
        Box::new(probe)
    };
    let io = |e: std::io::Error| {
        if gz {
            Error::data(path, format!("cannot gunzip: {e}"))
        } else {
            Error::io(path, e)
        }
    };
    let mut header = vec![0u8; 4];
    read_up_to(&mut stream, &mut header).map_err(io)?;
    let ndim = check_magic(path, &header, want_dims)?;
    header.resize(4 + 4 * ndim, 0);
    if read_up_to(&mut stream, &mut header[4..]).map_err(io)? < 4 * ndim {
        return Err(Error::data(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 2)
        .ok_or_else(|| Error::data(path, format!("header's sizes {dims:?} overflow")))?;
    if !gz {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let have = len.saturating_sub(header.len() as u64);
        if have != n as u64 {
            return Err(Error::data(
                path,
                format!("header says {dims:?} ({n} bytes) but the file holds {have} bytes of data"),
            ));
        }
    }
    let mut data = Vec::new();
    stream
        .take(n as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() != n {
        let have = if data.len() > n {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(Error::data(
            path,
            format!("header says {dims:?} ({n} bytes) but the file holds {have} bytes of data"),
        ));
    }
    Ok((dims, data))
}

/// Fill `buf` as far as the stream goes; how many bytes came.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got)
}

/// The magic: 0x0000 08 NDIM (u8 data); returns NDIM.
fn check_magic(path: &Path, bytes: &[u8], want_dims: usize) -> Result<usize> {
    let bad = |m: String| Error::data(path, m);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX data type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    if ndim != want_dims {
        return Err(bad(format!("has {ndim} dimensions, expected {want_dims}")));
    }
    Ok(ndim)
}

impl IdxImages {
    /// Read an images file and, when present, its labels file (same count required).
    pub fn open(path: &Path) -> Result<Self> {
        let (dims, pixels) = read(path, 3)?;
        let (count, rows, cols) = (dims[0], dims[1], dims[2]);
        if count == 0 || rows == 0 || cols == 0 {
            return Err(Error::data(path, format!("holds no images ({dims:?})")));
        }
        let labels = match labels_path(path).filter(|p| p.exists()) {
            Some(lp) => {
                let (ldims, lb) = read(&lp, 1)?;
                if ldims[0] != count {
                    return Err(Error::data(
                        &lp,
                        format!(
                            "has {} labels for {count} images in {}",
                            ldims[0],
                            path.display()
                        ),
                    ));
                }
                Some(lb)
            }
            None => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            count,
            rows,
            cols,
            pixels,
            labels,
        })
    }

    /// Every image's pixels, row-major, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Image `i`, grey replicated to RGB.
    pub fn image(&self, i: usize) -> image::RgbImage {
        let n = self.rows * self.cols;
        let grey = &self.pixels[i * n..(i + 1) * n];
        image::RgbImage::from_fn(self.cols as u32, self.rows as u32, |x, y| {
            let v = grey[y as usize * self.cols + x as usize];
            image::Rgb([v, v, v])
        })
    }

    /// Write images and labels as IDX files (for tests and small exports).
    pub fn write(images: &Path, pictures: &[image::GrayImage], labels: &[u8]) -> Result<()> {
        assert_eq!(pictures.len(), labels.len());
        let (w, h) = pictures.first().map(|p| p.dimensions()).unwrap_or((0, 0));
        let mut b = vec![0, 0, 8, 3];
        for d in [pictures.len() as u32, h, w] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        for p in pictures {
            b.extend_from_slice(p.as_raw());
        }
        std::fs::write(images, b).map_err(|e| Error::io(images, e))?;
        let lp = labels_path(images).expect("an IDX images name");
        let mut l = vec![0, 0, 8, 1];
        l.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        l.extend_from_slice(labels);
        std::fs::write(&lp, l).map_err(|e| Error::io(&lp, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzipped_files_with_labels_and_refuses_bad_ones() {
        let dir = std::env::temp_dir().join(format!("pixmim-idx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pics: Vec<_> = (0..3u8)
            .map(|k| image::GrayImage::from_fn(4, 2, |x, y| image::Luma([k * 50 + (x + y) as u8])))
            .collect();
        let p = dir.join("train-images-idx3-ubyte");
        IdxImages::write(&p, &pics, &[7, 1, 9]).unwrap();
        let idx = IdxImages::open(&p).unwrap();
        assert_eq!((idx.count, idx.rows, idx.cols), (3, 2, 4));
        assert_eq!(idx.labels.as_deref(), Some(&[7u8, 1, 9][..]));
        let img = idx.image(2);
        assert_eq!(img.dimensions(), (4, 2));
        assert_eq!(img.get_pixel(3, 1).0, [104, 104, 104]);

        // The same bytes gzipped (as Debian ships Fashion-MNIST).
        let gz = dir.join("t10k-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(&p).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let z = IdxImages::open(&gz).unwrap();
        assert_eq!(z.image(1), idx.image(1));
        assert!(z.labels.is_none(), "no t10k labels file was written");

        // Truncated data and a count mismatch are refused, naming the file.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = IdxImages::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains("bytes"),
            "{e}"
        );
        IdxImages::write(&p, &pics[..2], &[1, 2]).unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 1, 5],
        )
        .unwrap();
        let e = IdxImages::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("1 labels"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Headers whose sizes overflow or are zero, and a gzip stream that inflates far past
    /// what its header declares: refused, naming the file, without allocating what they claim.
    #[test]
    fn hostile_headers_and_gzip_bombs_are_refused() {
        let dir = std::env::temp_dir().join(format!("pixmim-idx-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let header = |dims: [u32; 3]| {
            let mut b = vec![0, 0, 8, 3];
            for d in dims {
                b.extend(d.to_be_bytes());
            }
            b
        };
        let gzip = |bytes: &[u8], extra_zeros: usize| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(bytes).unwrap();
            let zeros = vec![0u8; 1 << 20];
            let mut left = extra_zeros;
            while left > 0 {
                let k = left.min(zeros.len());
                enc.write_all(&zeros[..k]).unwrap();
                left -= k;
            }
            enc.finish().unwrap()
        };
        let p = dir.join("x-images-idx3-ubyte");
        let gz = dir.join("x-images-idx3-ubyte.gz");
        for (bytes, why) in [
            (header([4, 1 << 31, 1 << 31]), "overflow"),
            (header([u32::MAX, u32::MAX, u32::MAX]), "overflow"),
            (header([0, 28, 28]), "holds no images"),
            (header([2, 28, 28]), "holds 0 bytes"),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = IdxImages::open(&p).unwrap_err().to_string();
            assert!(
                e.contains("x-images-idx3-ubyte") && e.contains(why),
                "{why}: {e}"
            );
            std::fs::write(&gz, gzip(&bytes, 0)).unwrap();
            let e = IdxImages::open(&gz).unwrap_err().to_string();
            assert!(
                e.contains("idx3-ubyte.gz") && e.contains(why),
                "gz {why}: {e}"
            );
        }
        // 64 MiB of zeros behind a header declaring one 2x2 image: about 64 KiB gzipped.
        // Reading stops a byte past the declared 4.
        let mut one = header([1, 2, 2]);
        one.extend([1, 2, 3, 4]);
        std::fs::write(&gz, gzip(&one, 64 << 20)).unwrap();
        assert!(std::fs::metadata(&gz).unwrap().len() < 1 << 20);
        let e = IdxImages::open(&gz).unwrap_err().to_string();
        assert!(e.contains("holds more bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
