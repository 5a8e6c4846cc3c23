//! Helpers shared by the workspace integration tests in `tests/tests/`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pixmim::checkpoint::{read_safetensors, HostTensor};
use pixmim::device::DeviceSpec;
use pixmim::registry::{build_target, component_names, Geometry};
use pixmim::traits::{ImageBatch, TargetGenerator};
use pixmim::RunBackend;

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

/// Every registered target generator on a batch: where it has a device path, that path on
/// `device` equals its host path (to 1e-4 of the target's scale: the device path may reduce in
/// another order or use DFT matrices instead of an FFT), and its target is not the input
/// unless it is the raw-pixel target, so no generator can silently train on pixels. Returns
/// the (name, has a device path, error) of each.
pub fn check_every_target_generator(device: &DeviceSpec) -> Vec<(&'static str, bool, f64)> {
    let dev = device.device().unwrap_or_else(|e| panic!("{e}"));
    let geometry = Geometry {
        image: (32, 48),
        mask_grid: (2, 3),
    };
    let (h, w) = geometry.image;
    let mut images = ImageBatch::zeros(2, 3, h, w);
    for (i, v) in images.data.iter_mut().enumerate() {
        // Smooth structure plus detail, so that every band of the spectrum carries energy.
        let (x, y) = ((i % w) as f32, ((i / w) % h) as f32);
        *v = (0.3 * x).sin() + (0.11 * y).cos() + 0.5 * ((i * 7919) % 97) as f32 / 97.0 - 0.25;
    }
    let mut seen = Vec::new();
    for (name, _) in component_names::<dyn TargetGenerator>() {
        let g = build_target(name, &toml::Table::new(), &geometry)
            .unwrap_or_else(|e| panic!("target `{name}` with its defaults: {e}"));
        let host = g.generate(&images);
        assert!(
            host.is_some() || name == "pixel",
            "target `{name}`: the host path says \"the input itself\"; only `pixel` may"
        );
        let host = host.map(|t| t.data).unwrap_or_else(|| images.data.clone());
        assert_eq!(host.len(), images.data.len(), "target `{name}`: shape");
        let from_input = max_abs_err(&host, &images.data);
        if name == "pixel" {
            assert_eq!(from_input, 0.0, "the pixel target is the input");
        } else {
            assert!(
                from_input > 1e-2,
                "target `{name}` equals the input (largest difference {from_input:.1e})"
            );
        }
        let mut err = 0.0;
        if let Some(path) = g.device_path() {
            let y = path.generate_on_device(images.to_tensor::<RunBackend>(&dev));
            assert_eq!(y.dims(), [2, 3, h, w], "target `{name}` on {device}");
            let y: Vec<f32> = y.into_data().convert::<f32>().to_vec().unwrap();
            err = rel_err(&y, &host);
            assert!(
                err < 1e-4,
                "target `{name}`: its path on {device} differs from its host path by {err:.1e} \
                 of the target's scale"
            );
        }
        seen.push((name, g.device_path().is_some(), err));
    }
    assert!(
        seen.iter().any(|s| s.0 == "pixel") && seen.len() >= 2,
        "registered targets: {seen:?}"
    );
    seen
}

pub mod corpus;
