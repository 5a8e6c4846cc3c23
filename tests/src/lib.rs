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
