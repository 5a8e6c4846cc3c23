//! A dataset is an image folder (recursive; class sub-folders give labels), a text file
//! listing image paths (relative paths are taken from the list's folder), or an IDX images
//! file (MNIST / Fashion-MNIST; labels from the labels file beside it).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::idx::{is_idx_images, IdxImages};

use crate::error::{Error, Result};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    /// One path per item; for an IDX file, `file#index` (used in messages only).
    pub items: Vec<PathBuf>,
    /// Class index per item when the folder has class sub-folders.
    pub labels: Option<Vec<usize>>,
    pub classes: Vec<String>,
    /// The images, when the dataset is an IDX file rather than image files.
    pub idx: Option<Arc<IdxImages>>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl Dataset {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::data(path, "does not exist"));
        }
        if path.is_file() && is_idx_images(path) {
            return Self::open_idx(path);
        }
        let (items, root) = if path.is_dir() {
            let mut v = Vec::new();
            walk(path, &mut v)?;
            (v, path.to_path_buf())
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let v: Vec<PathBuf> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| base.join(l))
                .collect();
            (v, base)
        };
        if items.is_empty() {
            return Err(Error::data(
                path,
                format!("no images found (looked for {})", EXTENSIONS.join(", ")),
            ));
        }
        // Class labels: the first path component under the root, when every image has one.
        let firsts: Option<Vec<String>> = items
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(&root).ok()?;
                let mut comps = rel.components();
                let first = comps.next()?;
                comps.next()?;
                Some(first.as_os_str().to_string_lossy().into_owned())
            })
            .collect();
        let (labels, classes) = match firsts {
            Some(f) => {
                let mut classes = f.clone();
                classes.sort();
                classes.dedup();
                let labels = f
                    .iter()
                    .map(|c| classes.binary_search(c).unwrap())
                    .collect();
                (Some(labels), classes)
            }
            None => (None, Vec::new()),
        };
        Ok(Self {
            root,
            items,
            labels,
            classes,
            idx: None,
        })
    }

    fn open_idx(path: &Path) -> Result<Self> {
        let idx = IdxImages::open(path)?;
        let items = (0..idx.count)
            .map(|i| PathBuf::from(format!("{}#{i}", path.display())))
            .collect();
        let (labels, classes) = match &idx.labels {
            Some(l) => {
                let n = l.iter().copied().max().unwrap_or(0) as usize + 1;
                (
                    Some(l.iter().map(|&v| v as usize).collect()),
                    (0..n).map(|c| c.to_string()).collect(),
                )
            }
            None => (None, Vec::new()),
        };
        Ok(Self {
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            items,
            labels,
            classes,
            idx: Some(Arc::new(idx)),
        })
    }

    /// Keep the first `n` items (a quick evaluation on part of a split).
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
        if let Some(l) = self.labels.as_mut() {
            l.truncate(n);
        }
    }

    /// Item `i` as RGB8: decoded from its file, or taken from the IDX array.
    pub fn read(&self, i: usize) -> Result<image::RgbImage> {
        match &self.idx {
            Some(idx) => Ok(idx.image(i)),
            None => decode(&self.items[i]),
        }
    }

    /// A hash of the item list (paths, in order), the same in every process: ranks of a
    /// distributed run compare it to be sure they read the same data.
    pub fn fingerprint(&self) -> u64 {
        use crate::distributed::{fnv1a, FNV_OFFSET};
        self.items.iter().fold(FNV_OFFSET, |h, p| {
            let bytes = p.as_os_str().as_encoded_bytes();
            fnv1a(bytes.iter().copied().chain([0]), h)
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Decode an image file to RGB8, naming the file on failure.
///
/// The format is sniffed from the bytes (a PNG named `.jpg` still loads); EXIF orientation
/// is applied, as PIL's `exif_transpose` would, so rotated phone photos are upright; grey,
/// 16-bit, CMYK and alpha images are converted to 8-bit RGB (alpha dropped, as PIL's
/// `convert("RGB")` does). A decoder panic on a malformed file becomes an error here, and so
/// does a file that ends before its image does ([`super::complete`]), which the decoder would
/// fill in silently.
pub fn decode(path: &Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::data(path, "empty file (0 bytes)"));
    }
    super::complete::check(&bytes).map_err(|why| Error::data(path, why))?;
    let decoded = std::panic::catch_unwind(|| -> image::ImageResult<image::DynamicImage> {
        use image::ImageDecoder;
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format()?;
        let mut decoder = reader.into_decoder()?;
        let orientation = decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut img = image::DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    });
    match decoded {
        Ok(Ok(img)) => Ok(img.into_rgb8()),
        Ok(Err(e)) => Err(Error::data(path, format!("cannot decode image: {e}"))),
        Err(_) => Err(Error::data(
            path,
            "cannot decode image: the decoder crashed on it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_folders_give_labels_and_lists_resolve_relative_paths() {
        let dir = std::env::temp_dir().join(format!("pixmim-ds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (cls, name) in [("cat", "a.png"), ("dog", "b.png"), ("cat", "c.jpg")] {
            std::fs::create_dir_all(dir.join(cls)).unwrap();
            image::RgbImage::new(4, 4)
                .save(dir.join(cls).join(name))
                .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let ds = Dataset::open(&dir).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.classes, vec!["cat", "dog"]);
        assert_eq!(ds.labels.as_ref().unwrap(), &vec![0, 0, 1]);
        std::fs::write(dir.join("list.txt"), "cat/a.png\n\n# comment\ndog/b.png\n").unwrap();
        let ds = Dataset::open(&dir.join("list.txt")).unwrap();
        assert_eq!(ds.len(), 2);
        assert!(ds.items[1].ends_with("dog/b.png"));
        let err = Dataset::open(&dir.join("missing")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        std::fs::write(dir.join("bad.png"), b"not a png").unwrap();
        let err = decode(&dir.join("bad.png")).unwrap_err().to_string();
        assert!(err.contains("bad.png"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
