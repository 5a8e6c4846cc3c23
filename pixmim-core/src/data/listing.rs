//! Listing an image folder: every image under it, recursively, in sorted order, and the class
//! of each (its top-level sub-folder) when every image has one.
//!
//! Fast on a million files: each folder is read once (`getdents`: an entry's type comes with
//! it, so plain files are never stat'ed), the top-level folders are read in parallel, and the
//! listing is cached (see [`super::cache_dir`]) keyed by the modification time of
//! every folder it read: adding, removing or renaming a file changes its folder's time, so a
//! cached listing is used only while it is still exact. Ranks and resumed runs start from it.
//!
//! Symbolic links to folders are followed, and a folder is listed once however many links
//! lead to it: a link to a folder already listed (`ln -s . loop`, a link to an ancestor, two
//! links to one folder) is skipped and counted, so no image is listed twice and a loop ends.
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::FileType;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::shards::IMAGE_EXTENSIONS;

/// What a folder holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    pub items: Vec<PathBuf>,
    /// Class index per item when every image lies in a sub-folder of the root.
    pub labels: Option<Vec<usize>>,
    /// The top-level sub-folders that hold images, sorted: class `i`'s name.
    pub classes: Vec<String>,
    /// Links to folders already listed (loops, duplicates) that were skipped.
    pub skipped_links: usize,
    /// Every folder read (relative to the root; `""` is the root) and its modification time:
    /// what the cached listing is checked against.
    folders: Vec<(PathBuf, i128)>,
}

pub fn is_image(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let ext = &name[dot + 1..];
    IMAGE_EXTENSIONS
        .iter()
        .any(|e| e.as_bytes().eq_ignore_ascii_case(ext))
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// A folder's entries sorted by name, with their types as the folder read gave them.
fn read_sorted(dir: &Path) -> Result<Vec<(OsString, FileType)>> {
    let mut entries: Vec<(OsString, FileType)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name(), e.file_type().ok()?)))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// One depth-first walk (in sorted order) from a folder.
#[derive(Default)]
struct Walk {
    /// (device, inode) of every folder read.
    seen: HashSet<(u64, u64)>,
    items: Vec<PathBuf>,
    folders: Vec<(PathBuf, i128)>,
    skipped_links: usize,
    /// Whether a link to a folder was met (the parallel walk then leaves the listing to one
    /// walk over everything, which alone sees every link in order).
    dir_links: bool,
    /// Follow links to folders (else only note that one was met).
    follow: bool,
}

impl Walk {
    fn dir(&mut self, root: &Path, dir: &Path) -> Result<()> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        self.seen.insert((meta.dev(), meta.ino()));
        let rel = dir.strip_prefix(root).unwrap_or(dir).to_path_buf();
        self.folders.push((rel, mtime_ns(&meta)));
        for (name, kind) in read_sorted(dir)? {
            let p = dir.join(&name);
            if kind.is_dir() {
                self.dir(root, &p)?;
            } else if kind.is_symlink() {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        self.dir_links = true;
                        if !self.follow {
                            continue;
                        }
                        if self.seen.contains(&(m.dev(), m.ino())) {
                            self.skipped_links += 1;
                        } else {
                            self.dir(root, &p)?;
                        }
                    }
                    // A dangling link: listed, so it is reported as unreadable like any file.
                    _ if is_image(&name) => self.items.push(p),
                    _ => {}
                }
            } else if is_image(&name) {
                self.items.push(p);
            }
        }
        Ok(())
    }
}

/// Labels from the first path component under the root, when every item has one (a sorted
/// listing keeps each class's items together; any order is handled).
pub fn first_component_labels(root: &Path, items: &[PathBuf]) -> (Option<Vec<usize>>, Vec<String>) {
    let firsts: Option<Vec<&std::ffi::OsStr>> = items
        .iter()
        .map(|p| {
            let mut comps = p.strip_prefix(root).ok()?.components();
            let first = comps.next()?;
            comps.next()?;
            Some(first.as_os_str())
        })
        .collect();
    let Some(firsts) = firsts else {
        return (None, Vec::new());
    };
    let mut classes: Vec<&std::ffi::OsStr> = firsts.clone();
    classes.dedup();
    if !classes.is_sorted_by(|a, b| a < b) {
        classes.sort_unstable();
        classes.dedup();
    }
    let mut last: Option<(&std::ffi::OsStr, usize)> = None;
    let labels = firsts
        .iter()
        .map(|f| match last {
            Some((name, label)) if name == *f => label,
            _ => {
                let label = classes.binary_search(f).expect("listed");
                last = Some((f, label));
                label
            }
        })
        .collect();
    let names = classes
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    (Some(labels), names)
}

/// Walk `root`: its top-level folders in parallel when no link to a folder is met, else one
/// walk in order (so a link's skip decision is the same on every run).
fn walk(root: &Path) -> Result<Listing> {
    use rayon::prelude::*;
    let top = read_sorted(root)?;
    let subtrees: Vec<Result<Walk>> = top
        .par_iter()
        .filter(|(_, kind)| kind.is_dir())
        .map(|(name, _)| {
            let mut w = Walk::default();
            w.dir(root, &root.join(name))?;
            Ok(w)
        })
        .collect();
    let mut whole = Walk {
        follow: true,
        ..Walk::default()
    };
    let has_top_links = top.iter().any(|(_, kind)| kind.is_symlink());
    let mut subtrees = subtrees.into_iter().collect::<Result<Vec<Walk>>>()?;
    if has_top_links || subtrees.iter().any(|w| w.dir_links) {
        whole.dir(root, root)?;
    } else {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
        whole.folders.push((PathBuf::new(), mtime_ns(&meta)));
        let mut it = subtrees.iter_mut();
        for (name, kind) in &top {
            if kind.is_dir() {
                let w = it.next().expect("one walk per folder");
                whole.items.append(&mut w.items);
                whole.folders.append(&mut w.folders);
            } else if is_image(name) {
                whole.items.push(root.join(name));
            }
        }
    }
    let (labels, classes) = first_component_labels(root, &whole.items);
    Ok(Listing {
        items: whole.items,
        labels,
        classes,
        skipped_links: whole.skipped_links,
        folders: whole.folders,
    })
}

const MAGIC: &[u8] = b"pixmim-listing 1";

impl Listing {
    /// The listing as lines of bytes (names need not be UTF-8): the folders and their times,
    /// the skipped links, the items relative to the root. `None` when a name holds a newline.
    fn to_bytes(&self, root: &Path) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64 * self.items.len());
        let mut line = |tag: &[u8], rest: &[&[u8]]| -> Option<()> {
            out.extend_from_slice(tag);
            for r in rest {
                if r.contains(&b'\n') {
                    return None;
                }
                out.push(b'\t');
                out.extend_from_slice(r);
            }
            out.push(b'\n');
            Some(())
        };
        line(MAGIC, &[])?;
        line(b"root", &[root.as_os_str().as_bytes()])?;
        line(b"skipped", &[self.skipped_links.to_string().as_bytes()])?;
        for (dir, mtime) in &self.folders {
            line(
                b"d",
                &[mtime.to_string().as_bytes(), dir.as_os_str().as_bytes()],
            )?;
        }
        for item in &self.items {
            let rel = item.strip_prefix(root).ok()?;
            line(b"i", &[rel.as_os_str().as_bytes()])?;
        }
        Some(out)
    }

    /// The listing [`Self::to_bytes`] wrote for `root`, if every folder it read still has the
    /// time it had then.
    fn from_bytes(root: &Path, bytes: &[u8]) -> Option<Self> {
        let field = |line: &[u8], tag: &[u8]| -> Option<Vec<u8>> {
            let rest = line.strip_prefix(tag)?.strip_prefix(b"\t")?;
            Some(rest.to_vec())
        };
        let mut lines = bytes.split(|&b| b == b'\n');
        if lines.next()? != MAGIC {
            return None;
        }
        if field(lines.next()?, b"root")? != root.as_os_str().as_bytes() {
            return None;
        }
        let skipped = std::str::from_utf8(&field(lines.next()?, b"skipped")?)
            .ok()?
            .parse()
            .ok()?;
        let mut listing = Listing {
            skipped_links: skipped,
            ..Listing::default()
        };
        for line in lines {
            if let Some(rel) = line.strip_prefix(b"i\t") {
                listing
                    .items
                    .push(root.join(std::ffi::OsStr::from_bytes(rel)));
            } else if let Some(rest) = line.strip_prefix(b"d\t") {
                let tab = rest.iter().position(|&b| b == b'\t')?;
                let mtime: i128 = std::str::from_utf8(&rest[..tab]).ok()?.parse().ok()?;
                let dir = root.join(std::ffi::OsStr::from_bytes(&rest[tab + 1..]));
                let now = std::fs::metadata(&dir).ok()?;
                if mtime_ns(&now) != mtime {
                    return None;
                }
                listing
                    .folders
                    .push((dir.strip_prefix(root).ok()?.to_path_buf(), mtime));
            } else if !line.is_empty() {
                return None;
            }
        }
        let (labels, classes) = first_component_labels(root, &listing.items);
        listing.labels = labels;
        listing.classes = classes;
        Some(listing)
    }
}

/// The listing of `root`: from `cache` while it is exact, else walked (and cached; a cache
/// that cannot be written only costs the next start).
pub fn list(root: &Path, cache: Option<&Path>) -> Result<Listing> {
    let Some(cache) = cache else {
        return walk(root);
    };
    let file = super::cache_file(cache, "listings", root, "txt");
    if let Some(listing) = std::fs::read(&file)
        .ok()
        .and_then(|b| Listing::from_bytes(root, &b))
    {
        return Ok(listing);
    }
    let listing = walk(root)?;
    // A folder changed in the last seconds may change again within its time stamp's
    // granularity, unseen: such a listing is not cached.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let settled = listing.folders.iter().all(|(_, m)| now - m > 2_000_000_000);
    if let Some(bytes) = listing.to_bytes(root).filter(|_| settled) {
        super::write_cache(&file, &bytes, &format!("the listing of {}", root.display()));
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        for (class, names) in [
            ("b", &["2.png", "10.jpg"][..]),
            ("a", &["x.JPEG", "y.txt"][..]),
        ] {
            let d = root.join(class).join("deep");
            std::fs::create_dir_all(&d).unwrap();
            for n in names {
                std::fs::write(root.join(class).join(n), b"").unwrap();
            }
            std::fs::write(d.join("z.png"), b"").unwrap();
        }
    }

    /// The parallel walk lists what one walk in order lists; the cached listing is used while
    /// every folder keeps its time, and a file added anywhere is listed on the next call.
    #[test]
    fn parallel_and_cached_listings_equal_one_walk_in_order() {
        let dir = std::env::temp_dir().join(format!("pixmim-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("data");
        tree(&root);
        // Folders written a while ago (a listing of folders that just changed is not cached).
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for d in ["", "a", "a/deep", "b", "b/deep"] {
            std::fs::File::open(root.join(d))
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        }
        let parallel = walk(&root).unwrap();
        let mut whole = Walk {
            follow: true,
            ..Walk::default()
        };
        whole.dir(&root, &root).unwrap();
        assert_eq!(parallel.items, whole.items);
        let rel: Vec<String> = parallel
            .items
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "a/deep/z.png",
                "a/x.JPEG",
                "b/10.jpg",
                "b/2.png",
                "b/deep/z.png"
            ]
        );
        assert_eq!(parallel.labels, Some(vec![0, 0, 1, 1, 1]));
        assert_eq!(parallel.classes, ["a", "b"]);

        let cache = dir.join("cache");
        assert_eq!(list(&root, Some(&cache)).unwrap().items, parallel.items);
        // The cache is what the second call reads: an entry edited in it shows.
        let file = super::super::cache_file(&cache, "listings", &root, "txt");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("i\tb/2.png\n", "")).unwrap();
        let cached = list(&root, Some(&cache)).unwrap();
        assert_eq!(cached.items.len(), 4);
        assert_eq!(cached.labels, Some(vec![0, 0, 1, 1]));
        // A file added in a sub-folder changes that folder's time: walked again.
        std::fs::write(root.join("b/deep/new.png"), b"").unwrap();
        let fresh = list(&root, Some(&cache)).unwrap();
        assert_eq!(fresh.items.len(), 6);
        assert_eq!(fresh.items, walk(&root).unwrap().items);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
