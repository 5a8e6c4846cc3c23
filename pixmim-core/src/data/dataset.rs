//! A dataset is an image folder (recursive; class sub-folders give labels), a text file
//! listing image paths (relative paths are taken from the list's folder), an IDX images
//! file (MNIST / Fashion-MNIST; labels from the labels file beside it), or tar shards
//! (WebDataset layout; labels from `.cls` members; [`super::shards`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decode::Encoded;
use super::idx::{is_idx_images, IdxImages};
use super::listing::first_component_labels;
use super::retry::{retry_io, RETRY_DELAYS};
use super::shards::{is_shard_spec, ShardSet};

use crate::error::{Error, Result};

const EXTENSIONS: &[&str] = super::shards::IMAGE_EXTENSIONS;

/// Where a dataset's images are.
#[derive(Clone, Debug)]
pub enum Storage {
    /// One image file per item, at the item's path.
    Files,
    /// An IDX file's array.
    Idx(Arc<IdxImages>),
    /// Members of tar shards.
    Shards(Arc<ShardSet>),
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    /// One path per item; for an IDX file `file#index`, for shards `shard#member` (both used
    /// in messages only).
    pub items: Vec<PathBuf>,
    /// Class index per item when the folder has class sub-folders.
    pub labels: Option<Vec<usize>>,
    pub classes: Vec<String>,
    pub storage: Storage,
    /// Links to folders already listed (loops, duplicates) that the listing skipped.
    pub skipped_links: usize,
}

impl Dataset {
    pub fn open(path: &Path) -> Result<Self> {
        if is_shard_spec(path) && !path.is_dir() {
            return Self::open_shards(path);
        }
        if !path.exists() {
            return Err(Error::data(path, "does not exist"));
        }
        if path.is_file() && is_idx_images(path) {
            return Self::open_idx(path);
        }
        if path.is_dir() {
            let listing = super::listing::list(path, super::cache_dir().as_deref())?;
            if listing.skipped_links > 0 {
                eprintln!(
                    "note: {}: skipped {} link(s) to folders already listed (a loop or a duplicate)",
                    path.display(),
                    listing.skipped_links
                );
            }
            return Self::files(
                path,
                path.to_path_buf(),
                listing.items,
                listing.skipped_links,
            );
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let items: Vec<PathBuf> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| base.join(l))
            .collect();
        Self::files(path, base, items, 0)
    }

    /// Image files under `root`, labelled by their first folder under it when all have one;
    /// `path` (the folder or list file) is named when there are none.
    fn files(
        path: &Path,
        root: PathBuf,
        items: Vec<PathBuf>,
        skipped_links: usize,
    ) -> Result<Self> {
        if items.is_empty() {
            return Err(Error::data(
                path,
                format!("no images found (looked for {})", EXTENSIONS.join(", ")),
            ));
        }
        let (labels, classes) = first_component_labels(&root, &items);
        Ok(Self {
            root,
            items,
            labels,
            classes,
            storage: Storage::Files,
            skipped_links,
        })
    }

    /// Class names of a set labelled by class number (IDX files, shards): "0", "1", ...
    fn numbered_classes(labels: &[usize]) -> Vec<String> {
        let n = labels.iter().copied().max().map_or(0, |m| m + 1);
        (0..n).map(|c| c.to_string()).collect()
    }

    fn open_shards(spec: &Path) -> Result<Self> {
        let listing = ShardSet::open(spec, super::cache_dir().as_deref())?;
        if listing.names.is_empty() {
            return Err(Error::data(
                spec,
                format!(
                    "no images found in the shards (members KEY.{})",
                    EXTENSIONS.join(", KEY.")
                ),
            ));
        }
        let first = &listing.set.shards[0];
        let classes = listing
            .labels
            .as_deref()
            .map_or_else(Vec::new, Self::numbered_classes);
        Ok(Self {
            root: first.parent().unwrap_or(Path::new(".")).to_path_buf(),
            items: listing.names,
            labels: listing.labels,
            classes,
            storage: Storage::Shards(Arc::new(listing.set)),
            skipped_links: 0,
        })
    }

    fn open_idx(path: &Path) -> Result<Self> {
        let idx = IdxImages::open(path)?;
        let items = (0..idx.count)
            .map(|i| PathBuf::from(format!("{}#{i}", path.display())))
            .collect();
        let labels: Option<Vec<usize>> = idx
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&v| v as usize).collect());
        let classes = labels
            .as_deref()
            .map_or_else(Vec::new, Self::numbered_classes);
        Ok(Self {
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            items,
            labels,
            classes,
            storage: Storage::Idx(Arc::new(idx)),
            skipped_links: 0,
        })
    }

    /// A labelled dataset's first `limit` items (all without one): what every evaluation
    /// reads; a dataset without labels is an error naming it.
    pub fn open_labelled(path: &Path, limit: Option<usize>) -> Result<Self> {
        let mut ds = Self::open(path)?;
        ds.class_labels()?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        Ok(ds)
    }

    /// The class of each item; an error naming the dataset (the IDX file, or the folder)
    /// when it has none.
    pub fn class_labels(&self) -> Result<&[usize]> {
        self.labels.as_deref().ok_or_else(|| {
            let named = match &self.storage {
                Storage::Idx(idx) => &idx.path,
                _ => &self.root,
            };
            Error::data(
                named,
                "has no labels: use class sub-folders, an IDX images file with its labels file beside it, or shards with a KEY.cls member beside every image",
            )
        })
    }

    /// Keep the first `n` items (a quick evaluation on part of a split).
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
        if let Some(l) = self.labels.as_mut() {
            l.truncate(n);
        }
    }

    /// Item `i` as RGB8: decoded from its file or shard member, or taken from the IDX array.
    pub fn read(&self, i: usize) -> Result<image::RgbImage> {
        self.read_encoded(i, false)?.into_image()
    }

    /// Item `i` read but not decoded, so a crop can decode only its part (`scaled`: and at a
    /// reduced scale where the crop shrinks 2x or more, `data.scaled_decode`).
    pub fn read_encoded(&self, i: usize, scaled: bool) -> Result<Encoded> {
        let name = &self.items[i];
        match &self.storage {
            Storage::Files => {
                let bytes = retry_io(RETRY_DELAYS, || std::fs::read(name))
                    .map_err(|e| Error::io(name, e))?;
                Encoded::new(name, bytes, scaled)
            }
            Storage::Idx(idx) => Ok(Encoded::decoded(name, idx.image(i))),
            Storage::Shards(set) => Encoded::new(name, set.bytes(i, name)?, scaled),
        }
    }

    /// Item `i`'s encoded bytes and their format's extension (`jpg`, `png`, ...), without
    /// decoding: an IDX image is encoded as PNG. What packing shards copies.
    pub fn encoded(&self, i: usize) -> Result<(Vec<u8>, String)> {
        let name = &self.items[i];
        let ext = || {
            let file = name.to_string_lossy();
            let file = file.rsplit(['/', '#']).next().unwrap_or_default();
            file.rsplit_once('.')
                .map_or_else(String::new, |(_, e)| e.to_ascii_lowercase())
        };
        match &self.storage {
            Storage::Files => {
                let bytes = retry_io(RETRY_DELAYS, || std::fs::read(name))
                    .map_err(|e| Error::io(name, e))?;
                Ok((bytes, ext()))
            }
            Storage::Shards(set) => Ok((set.bytes(i, name)?, ext())),
            Storage::Idx(idx) => {
                let mut png = Vec::new();
                image::DynamicImage::ImageRgb8(idx.image(i))
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .map_err(|e| Error::data(name, format!("cannot encode as PNG: {e}")))?;
                Ok((png, "png".into()))
            }
        }
    }

    /// A hash of the item list (paths relative to the root, in order): ranks of a distributed
    /// run compare it to be sure they list the same data, wherever each node mounts it.
    pub fn fingerprint(&self) -> u64 {
        use crate::distributed::{fnv1a, FNV_OFFSET};
        self.items.iter().fold(FNV_OFFSET, |h, p| {
            let rel = p.strip_prefix(&self.root).unwrap_or(p);
            let bytes = rel.as_os_str().as_encoded_bytes();
            fnv1a(bytes.iter().copied().chain([0]), h)
        })
    }

    /// Files whose bytes [`Self::content_fingerprint`] reads.
    pub const CONTENT_SAMPLE: usize = 64;

    /// A hash of the data's content: the bytes of [`Self::CONTENT_SAMPLE`] files spread evenly
    /// over the list (all of them in a smaller dataset; for shards, their members' bytes), or
    /// an IDX file's pixels and labels.
    /// Ranks compare it, so nodes whose copies of a dataset hold other pixels under the same
    /// names are refused; files outside the sample are not read (a whole-dataset hash would
    /// read every byte on every start). A file that cannot be read hashes as its error.
    pub fn content_fingerprint(&self) -> u64 {
        use crate::distributed::{fnv1a, FNV_OFFSET};
        if let Storage::Idx(idx) = &self.storage {
            let h = fnv1a(idx.pixels().iter().copied(), FNV_OFFSET);
            return fnv1a(idx.labels.iter().flatten().copied(), h);
        }
        let n = self.items.len();
        let k = n.min(Self::CONTENT_SAMPLE);
        (0..k)
            .map(|i| i * n / k)
            .fold(FNV_OFFSET, |h, i| match self.encoded(i) {
                Ok((bytes, _)) => fnv1a(bytes.len().to_le_bytes().into_iter().chain(bytes), h),
                // The kind of error, not its message: messages name paths, which differ
                // between nodes that mount the data in different places.
                Err(Error::Io { source, .. }) => fnv1a(source.kind().to_string().into_bytes(), h),
                Err(_) => fnv1a(*b"unreadable", h),
            })
    }

    /// A hash of every file's path, size and modification time (for an IDX dataset, its
    /// file's; for shards, each shard's): what a cache of results computed from the data is
    /// keyed by.
    pub fn files_stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let stamp = |p: &Path, h: &mut std::collections::hash_map::DefaultHasher| {
            p.hash(h);
            if let Ok(m) = std::fs::metadata(p) {
                m.len().hash(h);
                m.modified().ok().hash(h);
            }
        };
        match &self.storage {
            Storage::Idx(idx) => stamp(&idx.path, &mut h),
            Storage::Shards(set) => set.shards.iter().for_each(|p| stamp(p, &mut h)),
            Storage::Files => self.items.iter().for_each(|p| stamp(p, &mut h)),
        }
        self.items.len().hash(&mut h);
        h.finish()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::decode::decode;

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

    /// An I/O error is retried (a file back in place on the third try reads), as many times
    /// as there are delays; a decode error is not an I/O error and is not retried.
    #[test]
    fn io_errors_are_retried_before_they_count() {
        let delays = [std::time::Duration::ZERO; 3];
        let mut tries = 0;
        let r = retry_io(&delays, || {
            tries += 1;
            match tries {
                1 | 2 => Err(std::io::Error::other("EIO")),
                _ => Ok(7),
            }
        });
        assert_eq!((r.unwrap(), tries), (7, 3));
        let mut tries = 0;
        let r: std::io::Result<()> = retry_io(&delays, || {
            tries += 1;
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        });
        assert!(r.is_err());
        assert_eq!(tries, 4, "one try and one per delay");
        // decode retries a read that fails: a missing file is reported only after every
        // wait (a lower bound on the time, which a slow machine only lengthens).
        let dir = std::env::temp_dir().join(format!("pixmim-ds-retry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.png");
        let t0 = std::time::Instant::now();
        let e = decode(&p).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(t0.elapsed() >= RETRY_DELAYS.iter().sum::<std::time::Duration>());
        std::fs::write(&p, b"not an image").unwrap();
        let e = decode(&p).unwrap_err();
        assert!(matches!(e, Error::Data { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file rewritten in place (same size, same folder) changes the stamp; the folder's
    /// own modification time does not move.
    #[test]
    fn the_files_stamp_sees_a_file_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("pixmim-ds-stamp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::new(4, 4).save(dir.join("a.png")).unwrap();
        let ds = Dataset::open(&dir).unwrap();
        let before = (
            ds.files_stamp(),
            std::fs::metadata(&dir).unwrap().modified().unwrap(),
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]))
            .save(dir.join("a.png"))
            .unwrap();
        let after = (
            ds.files_stamp(),
            std::fs::metadata(&dir).unwrap().modified().unwrap(),
        );
        assert_eq!(after.1, before.1, "the folder's time is unchanged");
        assert_ne!(after.0, before.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `ln -s . loop` and two links into one folder: every image once, the links counted;
    /// a link to a folder outside the tree is followed (a dataset assembled from links).
    #[test]
    fn symlink_loops_list_each_image_once_and_end() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("pixmim-ds-loop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let outside = dir.with_extension("outside");
        let _ = std::fs::remove_dir_all(&outside);
        let root = dir.join("root");
        for sub in ["a", "b"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
            image::RgbImage::new(2, 2)
                .save(root.join(sub).join("x.png"))
                .unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        image::RgbImage::new(2, 2)
            .save(outside.join("y.png"))
            .unwrap();
        symlink(".", root.join("a").join("loop")).unwrap(); // a -> a
        symlink("..", root.join("b").join("up")).unwrap(); // b -> root
        symlink(root.join("a"), root.join("b").join("again")).unwrap(); // b -> a, listed
        symlink(&outside, root.join("c")).unwrap();
        let ds = Dataset::open(&root).unwrap();
        let names: Vec<String> = ds
            .items
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a/x.png", "b/x.png", "c/y.png"]);
        assert_eq!(ds.skipped_links, 3);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
