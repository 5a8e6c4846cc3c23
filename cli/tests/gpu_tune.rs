//! The GPU autotune cache (`bench --tune`, `--autotune-cache`). In a build with the `autotune`
//! feature (docs/performance.md's command, "Fusion and autotune are builds"), on `--device
//! wgpu` (Mesa's lavapipe without a GPU): tuning fills the card's folder, and a second run
//! pointed at it tunes nothing more. In the default build both flags are refused by name, so
//! nobody believes they tuned.
mod common;

use std::path::{Path, PathBuf};

#[cfg(feature = "autotune")]
use common::train_tiny;
use common::{pixmim, text, tmp};

/// Every file under `dir` with its bytes, sorted by path.
#[cfg_attr(not(feature = "autotune"), allow(dead_code))]
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(feature = "autotune")]
#[test]
fn tuning_fills_the_cards_folder_once() {
    let cache = tmp("tune-cache");
    let c = cache.to_str().unwrap();
    let tune = [
        "bench",
        "--tune",
        "--device",
        "wgpu",
        "--methods",
        "mae",
        "--presets",
        "tiny",
        "--batch",
        "4",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--autotune-cache",
        c,
        "--json",
    ];
    let report = |o: &std::process::Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", text(o));
        let line = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(line.lines().last().unwrap()).unwrap()
    };
    // Another card's results in the same cache are neither counted nor used.
    let other = cache.join("Another-Card");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("matmul.json.log"), "{\"a\":1}\n{\"b\":2}\n").unwrap();
    let first = report(&pixmim(&tune));
    assert_eq!(first["gpu_autotune"], true);
    assert_eq!(first["autotune_entries_before"], 0);
    let tuned = first["autotune_entries_after"].as_u64().unwrap();
    assert!(tuned > 0, "nothing was tuned: {first}");
    // One folder per card, named from the adapter (llvmpipe on lavapipe).
    let folder = PathBuf::from(first["autotune_cache"].as_str().unwrap());
    assert_eq!(folder.parent().unwrap(), cache.canonicalize().unwrap());
    assert!(folder.is_dir(), "{}", folder.display());
    let files = snapshot(&cache);

    // The same shapes again: every choice comes from the cache, nothing is added or rewritten.
    let second = report(&pixmim(&tune));
    assert_eq!(second["autotune_entries_before"].as_u64(), Some(tuned));
    assert_eq!(second["autotune_entries_after"].as_u64(), Some(tuned));
    assert!(
        snapshot(&cache) == files,
        "the second run changed the cache"
    );

    // `train` reads the same folder and says so.
    let out = tmp("tune-train");
    let o = train_tiny(
        &out,
        1,
        &[
            "--device",
            "wgpu",
            "--set",
            "train.batch_size=4",
            "--autotune-cache",
            c,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("autotune cache: {}", folder.display())),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&cache);
}

#[cfg(feature = "autotune")]
#[test]
fn tuning_refuses_a_cpu_device() {
    let o = pixmim(&["bench", "--tune", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--tune tunes GPU kernels"),
        "{}",
        text(&o)
    );
}

#[cfg(not(feature = "autotune"))]
#[test]
fn without_the_autotune_build_the_flags_are_refused() {
    let cache = tmp("tune-refused");
    let c = cache.to_str().unwrap();
    for args in [
        &["bench", "--tune", "--device", "wgpu"][..],
        &[
            "bench",
            "--only",
            "steps",
            "--device",
            "wgpu",
            "--autotune-cache",
            c,
        ],
        &[
            "train",
            "--method",
            "mae",
            "--preset",
            "tiny",
            "--autotune-cache",
            c,
        ],
    ] {
        let o = pixmim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("`autotune` feature"),
            "{args:?}: {}",
            text(&o)
        );
        assert!(!cache.exists(), "{args:?} created {}", cache.display());
    }
}
