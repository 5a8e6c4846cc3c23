//! `bench/gpu/run.sh`, the one prepared script a GPU machine runs, dry-run on `--device wgpu`
//! (Mesa's lavapipe in CI) with the tiny preset, so that it cannot rot between the rare
//! sessions that have a GPU: its smoke, bench and train stages must run, write what they
//! promise, and the smoke's GPU losses must equal the CPU's.
use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_script_dry_runs_on_wgpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("pixmim-gpu-script-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new("bash")
        .arg(root.join("bench/gpu/run.sh"))
        .envs([
            ("PIXMIM_BIN", env!("CARGO_BIN_EXE_pixmim")),
            ("DEVICE", "wgpu"),
            ("PRESET", "tiny"),
            ("BATCH", "4"),
            ("SMOKE_BATCH", "4"),
            ("PRECISIONS", "f32"),
            ("TRAIN_PRECISION", "f32"),
            ("BENCH_STEPS", "2"),
            ("BENCH_WARMUP", "1"),
            ("TRAIN_STEPS", "3"),
            ("TRAIN_LOG_EVERY", "1"),
            // The stages' time limits are meant for a GPU; a busy 2-core machine may take
            // any time on lavapipe.
            ("LIMITS", "none"),
            (
                "STAGES",
                "smoke bench checkpointing fusion tune tuned train decide",
            ),
        ])
        .env("OUT", &out)
        .output()
        .expect("run bash");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{said}");

    // Smoke: five steps on wgpu and on the CPU from the same seed, the same losses.
    let smoke = std::fs::read_to_string(out.join("smoke-metrics.txt")).unwrap();
    let losses = |tag: &str| -> Vec<f64> {
        smoke
            .lines()
            .filter_map(|l| l.strip_prefix(tag))
            .map(|j| {
                serde_json::from_str::<serde_json::Value>(j).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (gpu, cpu) = (losses("gpu "), losses("cpu "));
    assert_eq!(gpu.len(), 5, "{smoke}\n{said}");
    assert_eq!(cpu.len(), 5, "{smoke}");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert!(
            (g - c).abs() <= 1e-4 * c.abs(),
            "wgpu {gpu:?} vs cpu {cpu:?}"
        );
    }

    // Bench: one JSON report, the tiny MAE step timed on wgpu.
    let bench = std::fs::read_to_string(out.join("pixmim-bench.json")).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(bench.trim()).unwrap_or_else(|e| panic!("{e}: {bench}"));
    assert_eq!(v["backends"], serde_json::json!(["wgpu"]), "{v}");
    assert!(
        v["steps"]["mae/tiny"]["step_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );

    // Train: MAE + PixMIM, every step logged.
    let train = std::fs::read_to_string(out.join("train-base-metrics.jsonl")).unwrap();
    assert_eq!(train.lines().count(), 3, "{train}");

    // Activation checkpointing: the same step timed with `balanced`, a row of its own.
    let ck = std::fs::read_to_string(out.join("pixmim-bench-checkpointing.json")).unwrap();
    let ck: serde_json::Value =
        serde_json::from_str(ck.trim()).unwrap_or_else(|e| panic!("{e}: {ck}"));
    let ck_img_s = ck["steps"]["mae/tiny"]["img_s"].as_f64().unwrap();

    // The fusion and autotune stages are skipped without their binaries, saying so; the
    // decision table has the default build's row, and no PyTorch to compare with.
    assert!(!out.join("pixmim-bench-fusion.json").exists());
    assert!(!out.join("tune.json").exists());
    let decision = std::fs::read_to_string(out.join("decision.md")).unwrap();
    let img_s = v["steps"]["mae/tiny"]["img_s"].as_f64().unwrap();
    assert!(
        decision.contains(&format!(
            "| pixmim default (no fusion, no autotune) | f32 | {img_s:.1} | - |"
        )),
        "{decision}"
    );
    assert!(
        decision.contains(&format!(
            "| pixmim default, activation checkpointing | f32 | {ck_img_s:.1} | - |"
        )),
        "{decision}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
