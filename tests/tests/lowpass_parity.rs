//! PixMIM's low-pass target against mmselfsup's `LowFreqTargetGenerator` outputs
//! (vectors/lowpass/README.md): every input and radius at 1e-5 absolute, and the mask counts
//! of its manifest.
use std::path::Path;

use pixmim::plugin_pixmim::{Band, FrequencyTarget};
use pixmim::traits::{ImageBatch, TargetGenerator};
use pixmim::{IMAGENET_MEAN, IMAGENET_STD};
use pixmim_tests::{max_abs_err, vectors};

/// Read a little-endian C-order `.npy` of f32 or u8 as f32 values and its shape.
fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"));
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &b[10 + hlen..];
    let values = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if header.contains("'|u1'") {
        // The README's conversion: x = (u8 / 255 - mean) / std, in f32, in this order.
        let n = shape[1] * shape[2];
        data.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = i / n;
                (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            })
            .collect()
    } else {
        panic!("unexpected dtype in {header}")
    };
    (shape, values)
}

#[test]
fn matches_mmselfsup_on_every_vector() {
    let dir = vectors("lowpass");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (input, file) in [
        ("rand224", "rand224_input.npy"),
        ("rand64", "rand64_input.npy"),
        ("astronaut224", "astronaut224_input_u8.npy"),
    ] {
        let (shape, x) = npy(&dir.join(file));
        let (h, w) = (shape[1], shape[2]);
        for r in [10, 40, 112] {
            let name = format!("{input}_r{r}_expected.npy");
            let (_, want) = npy(&dir.join(&name));
            let t = FrequencyTarget::new(h, w, Some(r as f64), Band::Low).unwrap();
            assert_eq!(
                t.filter.mask_ones() as u64,
                manifest["files"][&name]["mask_ones"].as_u64().unwrap(),
                "{name}: mask count"
            );
            let batch = ImageBatch {
                batch: 1,
                channels: 3,
                height: h,
                width: w,
                data: x.clone(),
            };
            let got = t.generate(&batch).unwrap();
            let err = max_abs_err(&got.data, &want);
            assert!(err < 1e-5, "{name}: max abs error {err:.2e}");
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

/// The device path (DFT as matrix products) agrees with the same vectors, on both CPU backends.
#[test]
fn device_path_matches_mmselfsup_too() {
    use burn::prelude::*;
    use pixmim::device::DeviceSpec;
    use pixmim::plugin_pixmim::{LowPassFilter, LowPassOnDevice};
    type B = pixmim::RunBackend;
    let dir = vectors("lowpass");
    for spec in [DeviceSpec::NdArray, DeviceSpec::Flex] {
        let device = spec.device().unwrap();
        for (input, file) in [
            ("rand64", "rand64_input.npy"),
            ("astronaut224", "astronaut224_input_u8.npy"),
            ("rand224", "rand224_input.npy"),
        ] {
            let (shape, x) = npy(&dir.join(file));
            let (h, w) = (shape[1], shape[2]);
            for r in [10, 40, 112] {
                let (_, want) = npy(&dir.join(format!("{input}_r{r}_expected.npy")));
                let f = LowPassOnDevice::<B>::new(&LowPassFilter::new(h, w, r as f64), &device);
                let xt =
                    Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [1, 3, h, w]), &device);
                let got: Vec<f32> = f.target(xt, Band::Low).into_data().to_vec().unwrap();
                let err = max_abs_err(&got, &want);
                assert!(
                    err < 1e-5,
                    "{spec:?} {input} r={r}: max abs error {err:.2e}"
                );
            }
        }
    }
}
