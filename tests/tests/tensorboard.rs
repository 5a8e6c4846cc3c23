//! A run folder opens in TensorBoard: its event files, read by TensorBoard's own reader
//! (Python's `tensorboard` package, test-only), hold every scalar of `metrics.jsonl` at its
//! step and the reconstruction grids every `train.image_every` steps, and an image event
//! decodes with its size. Ignored by default (it needs `pip install
//! tensorboard`); `.ci/run` installs the package and runs it.
use std::path::Path;
use std::process::Command;

use pixmim::device::DeviceSpec;
use pixmim::job::TrainOptions;
use pixmim::registry::{compose, Request};
use pixmim::tensorboard::EventWriter;

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
print(json.dumps({
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)]
               for t in tags["images"]},
}))
"#;

fn read_with_tensorboard(dir: &Path) -> serde_json::Value {
    let o = Command::new("python3")
        .args(["-c", READER, dir.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "TensorBoard's reader failed (pip install tensorboard): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The tiny MAE on the sample images, with `sets`.
fn tiny_mae(sets: &[&str]) -> pixmim::registry::Composed {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sets.push(format!("data.path={:?}", samples.display().to_string()));
    compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        sets,
        ..Default::default()
    })
    .unwrap()
}

#[test]
#[ignore = "needs Python's tensorboard package; .ci/run installs it and runs this"]
fn tensorboard_reads_a_training_run_and_an_image() {
    let out = std::env::temp_dir().join(format!("pixmim-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let c = tiny_mae(&[
        "train.steps=6",
        "train.log_every=2",
        "train.batch_size=4",
        "train.image_every=3",
    ]);
    c.train(&TrainOptions::new(&out, DeviceSpec::Flex)).unwrap();
    let tb = read_with_tensorboard(&out);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for key in ["loss", "lr", "img_s", "data_wait_s", "epoch"] {
        let got = tb["scalars"][key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}`: {tb}"));
        assert_eq!(got.len(), lines.len(), "{key}: {got:?}");
        for (g, l) in got.iter().zip(&lines) {
            assert_eq!(g[0].as_i64(), l["step"].as_i64(), "{key}");
            let (a, b) = (g[1].as_f64().unwrap(), l[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{key}: {a} vs {b}"
            );
        }
    }
    // The reconstruction grid every 3 steps: 4 images x 4 panels of the 32 px tiny model,
    // enlarged 4x to 128 px, 4 px apart.
    let side = 4 * (128 + 4) + 4;
    let grids = tb["images"]["reconstruction"].as_array().expect("grids");
    let steps: Vec<i64> = grids.iter().map(|g| g[0].as_i64().unwrap()).collect();
    assert_eq!(steps, [2, 5], "{grids:?}");
    assert!(
        grids.iter().all(|g| g[1] == side && g[2] == side),
        "{grids:?}"
    );
    // An image event (a PNG of 3 x 2 pixels).
    let img_dir = out.join("images");
    std::fs::create_dir_all(&img_dir).unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(2, 3, image::Rgb([200, 10, 10]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut w = EventWriter::create(&img_dir).unwrap();
    w.image("reconstruction", 7, (3, 2, 3), &png).unwrap();
    w.scalar("x", 7, 1.25).unwrap();
    drop(w);
    let tb = read_with_tensorboard(&img_dir);
    assert_eq!(
        tb["images"]["reconstruction"],
        serde_json::json!([[7, 2, 3, png.len()]])
    );
    assert_eq!(tb["scalars"]["x"], serde_json::json!([[7, 1.25]]));
    let _ = std::fs::remove_dir_all(&out);
}

/// A run killed after its checkpoint and resumed logs the steps after the checkpoint again;
/// TensorBoard shows each step once (the resume's SessionLog START purges the first file's
/// later events), as metrics.jsonl does.
#[test]
#[ignore = "needs Python's tensorboard package; .ci/run installs it and runs this"]
fn tensorboard_shows_each_step_once_after_a_resume() {
    let out = std::env::temp_dir().join(format!("pixmim-tb-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let c = tiny_mae(&[
        "train.steps=8",
        "train.log_every=2",
        "train.batch_size=4",
        "train.checkpoint_every=4",
        "train.image_every=0",
    ]);
    let mut opts = TrainOptions::new(&out, DeviceSpec::Flex);
    opts.stop_after = Some(6); // killed after logging step 5, past the checkpoint at 4
    c.train(&opts).unwrap();
    opts.stop_after = None;
    opts.resume = true;
    // The second event file must sort after the first (names carry the second).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.train(&opts).unwrap();
    let tb = read_with_tensorboard(&out);
    let steps: Vec<i64> = tb["scalars"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 3, 5, 7], "{tb}");
    let _ = std::fs::remove_dir_all(&out);
}
