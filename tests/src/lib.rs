//! Helpers shared by the workspace integration tests in `tests/tests/`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pixmim::checkpoint::{read_safetensors, HostTensor};

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
