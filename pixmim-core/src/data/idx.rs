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

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("cannot gunzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX header: magic 0x0000 08 NDIM (u8 data), then NDIM big-endian u32 sizes.
fn parse(path: &Path, bytes: &[u8], want_dims: usize) -> Result<(Vec<usize>, usize)> {
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
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(bad(format!(
            "header says {dims:?} ({n} bytes) but the file holds {} bytes of data",
            bytes.len() - header
        )));
    }
    Ok((dims, header))
}

impl IdxImages {
    /// Read an images file and, when present, its labels file (same count required).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_maybe_gz(path)?;
        let (dims, header) = parse(path, &bytes, 3)?;
        let (count, rows, cols) = (dims[0], dims[1], dims[2]);
        if count == 0 || rows == 0 || cols == 0 {
            return Err(Error::data(path, format!("holds no images ({dims:?})")));
        }
        let pixels = bytes[header..].to_vec();
        let labels = match labels_path(path).filter(|p| p.exists()) {
            Some(lp) => {
                let lb = read_maybe_gz(&lp)?;
                let (ldims, lh) = parse(&lp, &lb, 1)?;
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
                Some(lb[lh..].to_vec())
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
}
