//! How pixmim sets up cubecl, the runtime under burn's GPU backends (cuda, wgpu): one stream
//! per device, and where autotune results are kept. Set once, before the first GPU device is
//! made ([`configure`], called by [`crate::device`]); a `cubecl.toml` (cubecl's own file,
//! looked for from the current folder up) is read first and its explicit settings kept.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// burn's kernel fusion is compiled in (`fusion` feature): on cuda and wgpu, chains of
/// elementwise ops run as one generated kernel.
pub const FUSION: bool = cfg!(feature = "fusion");

/// cubecl's autotuning is compiled in (`autotune` feature): each new matmul, convolution (and,
/// with fusion, fused-kernel) shape times its candidate kernels on first use.
pub const AUTOTUNE: bool = cfg!(feature = "autotune");

/// The folder given to [`use_autotune_cache`].
static AUTOTUNE_CACHE: OnceLock<PathBuf> = OnceLock::new();
/// Its subfolder for the card [`configure`] was called for.
static CARD_FOLDER: OnceLock<PathBuf> = OnceLock::new();

/// Keep autotune results under `dir`, in a subfolder per card (`dir/NVIDIA-H200/`): cubecl
/// keys its results by runtime and device index only (`device-<type>-0-cuda`), so an H200's
/// choices would otherwise be taken for an A100's. Read at the first GPU device and appended
/// to as new shapes are tuned. Without it cubecl uses `target/autotune` of the enclosing cargo
/// project, else the user's cache folder. Refused in a build without the `autotune` feature
/// (nothing would be read or written), and after a GPU device was made (cubecl is configured
/// once per process, for its first GPU's card).
pub fn use_autotune_cache(dir: &Path) -> Result<()> {
    if !AUTOTUNE {
        return Err(Error::Usage(format!(
            "--autotune-cache {}: this binary was built without the `autotune` feature \
             (cargo build --release -p pixmim-cli --features autotune)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Usage(format!(
            "--autotune-cache {}: cannot create the folder: {e}",
            dir.display()
        ))
    })?;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if configured() {
        return Err(Error::Usage(format!(
            "--autotune-cache {}: given after a GPU device was set up",
            dir.display()
        )));
    }
    AUTOTUNE_CACHE
        .set(dir.clone())
        .map_err(|_| Error::Usage(format!("--autotune-cache {} given twice", dir.display())))
}

/// The autotune cache in use: the card's folder once a GPU device was made, before that the
/// folder given to [`use_autotune_cache`]; `None` without one (cubecl's default).
pub fn autotune_cache() -> Option<&'static Path> {
    CARD_FOLDER
        .get()
        .or_else(|| AUTOTUNE_CACHE.get())
        .map(PathBuf::as_path)
}

/// A card's name as a folder name: `NVIDIA H200` -> `NVIDIA-H200`.
fn card_folder(card: &str) -> String {
    let name: String = card
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if name.is_empty() {
        "unnamed-gpu".into()
    } else {
        name
    }
}

/// Has [`configure`] run (a GPU device was made)?
fn configured() -> bool {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
        CubeClRuntimeConfig::storage().lock().is_some()
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    false
}

/// cubecl's configuration for this process, set once before the first GPU client exists.
///
/// One stream per device: cubecl gives every host thread its own stream on a device, and
/// every stream its own memory pools, which keep what they once held (upstream
/// tracel-ai/burn#4971). pixmim's step runs on whichever thread of its pool is free, so over a
/// run every thread's stream would come to hold a step's peak; a step's ops come from one
/// thread at a time anyway. A `cubecl.toml` that sets another `[streaming] max_streams` keeps it.
///
/// The autotune cache: `card`'s folder under [`use_autotune_cache`]'s, if one was given.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn configure(card: &str) {
    use burn::cubecl::config::streaming::StreamingConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut slot = CubeClRuntimeConfig::storage().lock();
        if slot.is_none() {
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            if config.streaming.max_streams == StreamingConfig::default().max_streams {
                config.streaming.max_streams = 1;
            }
            if let Some(dir) = AUTOTUNE_CACHE.get() {
                let folder = CARD_FOLDER.get_or_init(|| dir.join(card_folder(card)));
                config.autotune.cache =
                    burn::cubecl::config::cache::CacheConfig::File(folder.clone());
            }
            *slot = Some(std::sync::Arc::new(config));
        }
    });
}

/// The streams per device cubecl was configured with (1 unless a `cubecl.toml` says otherwise);
/// `None` before any GPU device was made.
pub fn streams_per_device() -> Option<u8> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
        let slot = CubeClRuntimeConfig::storage().lock();
        slot.as_ref().map(|c| c.streaming.max_streams)
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    None
}

/// The tuning results in an autotune cache folder: one per line of cubecl's `*.json.log`
/// files (a tuned shape and its fastest kernel). What `pixmim bench --tune` reports before and
/// after.
pub fn autotune_cache_entries(dir: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.to_string_lossy().ends_with(".json.log") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    *n += text.lines().filter(|l| !l.trim().is_empty()).count();
                }
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_count_the_lines_of_cubecls_logs_only() {
        let dir = std::env::temp_dir().join(format!("pixmim-tune-count-{}", std::process::id()));
        let deep = dir.join("autotune/0.10.0/cuda-0");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("matmul.json.log"), "{\"a\":1}\n{\"b\":2}\n\n").unwrap();
        std::fs::write(deep.join("reduce.json.log"), "{\"c\":3}\n").unwrap();
        std::fs::write(deep.join("notes.txt"), "x\ny\n").unwrap();
        assert_eq!(autotune_cache_entries(&dir), 3);
        assert_eq!(autotune_cache_entries(&dir.join("missing")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn card_names_become_plain_folder_names() {
        assert_eq!(card_folder("NVIDIA H200"), "NVIDIA-H200");
        assert_eq!(
            card_folder("llvmpipe (LLVM 15.0.6, 256 bits)"),
            "llvmpipe-LLVM-15-0-6-256-bits"
        );
        assert_eq!(card_folder("../.."), "unnamed-gpu");
    }

    #[test]
    fn a_cache_folder_needs_the_autotune_build() {
        let dir = std::env::temp_dir().join(format!("pixmim-tune-use-{}", std::process::id()));
        let got = use_autotune_cache(&dir);
        if AUTOTUNE {
            // Set once per process: a second folder is refused by name.
            assert!(got.is_ok(), "{got:?}");
            let again = use_autotune_cache(&dir).unwrap_err().to_string();
            assert!(again.contains("given twice"), "{again}");
            assert_eq!(
                autotune_cache(),
                Some(dir.canonicalize().unwrap().as_path())
            );
        } else {
            let msg = got.unwrap_err().to_string();
            assert!(msg.contains("`autotune` feature"), "{msg}");
            assert!(msg.contains(&dir.display().to_string()), "{msg}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
