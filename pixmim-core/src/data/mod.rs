//! Datasets and the batch pipeline.
pub mod bad_files;
pub mod complete;
pub mod dataset;
pub mod decode;
pub mod idx;
pub mod jpeg;
pub mod listing;
pub mod loader;
pub mod pack;
pub mod retry;
pub mod seed;
pub mod shards;

pub use bad_files::BadFiles;
pub use dataset::Dataset;
pub use loader::{Batch, Loader};

/// Where shard indexes and folder listings are cached: `$PIXMIM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/pixmim`, else `~/.cache/pixmim` (`None` when none is set).
pub fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("PIXMIM_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("pixmim")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/pixmim")))
}

/// The file in `cache/kind/` that caches what was computed from `path`: named by a hash of the
/// path's real location.
fn cache_file(
    cache: &std::path::Path,
    kind: &str,
    path: &std::path::Path,
    ext: &str,
) -> std::path::PathBuf {
    use crate::distributed::{fnv1a, FNV_OFFSET};
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let h = fnv1a(
        abs.as_os_str().as_encoded_bytes().iter().copied(),
        FNV_OFFSET,
    );
    cache.join(kind).join(format!("{h:016x}.{ext}"))
}

/// Write a cache file whole (a temporary name, then a rename, so a reader never sees half of
/// it); a cache that cannot be written only costs the next start, so a failure is a note.
fn write_cache(file: &std::path::Path, bytes: &[u8], what: &str) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(file.parent().expect("a cache kind folder"))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, file)
    };
    if let Err(e) = write() {
        eprintln!("note: cannot cache {what} in {}: {e}", file.display());
    }
}
