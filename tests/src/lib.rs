//! Helpers shared by the workspace integration tests in `tests/tests/`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pixmim::checkpoint::{read_safetensors, HostTensor};

/// The sample images shipped in the repo (`data/samples`), the tests' training data.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples")
}

/// A fresh run folder for test `name` in the temp dir (this process's own).
pub fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pixmim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The tensors of the newest checkpoint of the run in `out`.
pub fn final_weights(out: &Path) -> HashMap<String, HostTensor> {
    let last = pixmim::checkpoint::run::list_checkpoints(out)
        .unwrap()
        .pop()
        .unwrap()
        .1;
    load(&last)
}

/// The final checkpoints of two runs hold the same tensors (parameters and AdamW moments), each
/// within `rtol` of its largest magnitude; returns the largest relative difference and its
/// tensor. `attn.qkv.bias` is skipped: its key part has an exactly zero gradient (softmax
/// ignores a shift of all keys), float noise that Adam normalises into +-lr steps in any
/// summation order; its moments are still compared (`optim.*`).
pub fn assert_same_final_weights(a: &Path, b: &Path, rtol: f32, what: &str) -> (f32, String) {
    let (wa, wb) = (final_weights(a), final_weights(b));
    assert_eq!(wa.len(), wb.len(), "{what}: tensor counts");
    assert!(wa.keys().any(|k| k.starts_with("optim.exp_avg.")));
    let mut worst = (0f32, String::new());
    for (k, ta) in &wa {
        if k.ends_with("attn.qkv.bias") {
            continue;
        }
        let tb = &wb[k];
        assert_eq!(ta.shape, tb.shape, "{what} {k}");
        let scale = ta.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = ta
            .data
            .iter()
            .zip(&tb.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let rel = diff / scale.max(1e-30);
        if rel > worst.0 {
            worst = (rel, k.clone());
        }
        assert!(
            diff <= rtol * scale + 1e-9,
            "{what} {k}: differs by {diff} (scale {scale})"
        );
    }
    worst
}

/// Folder of vectors copied from the reference implementations (see their READMEs).
pub fn vectors(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name)
}

pub fn load(path: &Path) -> HashMap<String, HostTensor> {
    read_safetensors(path).unwrap_or_else(|e| panic!("{e}")).0
}

/// max |a - b| / max |b|: the vectors' README tolerance measure.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let den = b
        .iter()
        .map(|y| y.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-30);
    num / den
}

pub fn max_abs_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

pub mod corpus;
