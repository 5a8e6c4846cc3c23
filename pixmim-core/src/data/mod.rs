//! Datasets and the batch pipeline.
pub mod bad_files;
pub mod complete;
pub mod dataset;
pub mod idx;
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
