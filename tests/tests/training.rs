//! Training end to end on CPU with the tiny preset and the shipped sample images.
use std::path::Path;

use pixmim::checkpoint::read_safetensors;
use pixmim::device::DeviceSpec;
use pixmim::job::{TrainOptions, TrainSummary};
use pixmim::registry::{compose, methods, plugins, Request};
use pixmim_tests::{assert_same_final_weights, final_weights, out_dir, samples};

fn run(sets: &[&str], out: &Path, resume: bool, stop_after: Option<usize>) -> TrainSummary {
    run_with(&[], sets, out, resume, stop_after)
}

fn run_with(
    plugins: &[&str],
    sets: &[&str],
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
) -> TrainSummary {
    run_method("mae", plugins, sets, out, resume, stop_after)
}

fn run_method(
    method: &str,
    plugins: &[&str],
    sets: &[&str],
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
) -> TrainSummary {
    run_on(method, plugins, sets, out, resume, stop_after, vec![])
}

fn run_on(
    method: &str,
    plugins: &[&str],
    sets: &[&str],
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    replicas: Vec<DeviceSpec>,
) -> TrainSummary {
    let mut s: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    if !sets.iter().any(|s| s.starts_with("data.path=")) {
        s.push(format!("data.path={:?}", samples().display().to_string()));
    }
    let c = compose(&Request {
        method: method.into(),
        preset: Some("tiny".into()),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
        sets: s,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let opts = TrainOptions {
        out: out.to_path_buf(),
        device: DeviceSpec::NdArray,
        replicas,
        resume,
        progress: false,
        stop_after,
        group: None,
    };
    c.train(&opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Data parallel over two devices (here the CPU twice, the code path a multi-GPU run takes):
/// each step's batch is split, each shard's gradient computed on its device, and burn's
/// `MultiGradientsParams` sums them; the run must match one device on the whole batch. The
/// AdamW moments are compared too: Adam's update is invariant to the gradient's scale, the
/// moments are not, so a wrong shard weighting shows there.
#[test]
fn data_parallel_on_two_devices_matches_one_device() {
    let sets = [
        "train.steps=4",
        "train.batch_size=8",
        "train.accum_iter=2",
        "train.checkpoint_every=4",
    ];
    let (one, two) = (out_dir("dp1"), out_dir("dp2"));
    let a = run_on("mae", &[], &sets, &one, false, None, vec![]);
    let b = run_on(
        "mae",
        &[],
        &sets,
        &two,
        false,
        None,
        vec![DeviceSpec::NdArray],
    );
    for (x, y) in a.losses.iter().zip(&b.losses) {
        assert!(
            (x - y).abs() < 1e-5 * x.abs(),
            "losses {:?} vs {:?}",
            a.losses,
            b.losses
        );
    }
    assert_same_final_weights(&one, &two, 1e-4, "two devices against one");
    // A batch that does not split evenly is refused before training.
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        sets: vec![
            "train.batch_size=5".into(),
            format!("data.path={:?}", samples().display().to_string()),
        ],
        ..Default::default()
    })
    .unwrap();
    let opts = TrainOptions {
        out: out_dir("dp3"),
        device: DeviceSpec::NdArray,
        replicas: vec![DeviceSpec::NdArray],
        resume: false,
        progress: false,
        stop_after: None,
        group: None,
    };
    let e = c.train(&opts).expect_err("refused");
    assert!(e.to_string().contains("train.batch_size"), "{e}");
    for d in [one, two, opts.out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_stopped_run_resumes_to_bit_identical_weights() {
    let sets = [
        "train.steps=12",
        "train.checkpoint_every=4",
        "train.accum_iter=2",
    ];
    let whole = out_dir("whole");
    run(&sets, &whole, false, None);
    let split = out_dir("split");
    let first = run(&sets, &split, false, Some(6)); // "killed" after step 6; last checkpoint at 4
    assert_eq!(first.losses.len(), 6);
    let second = run(&sets, &split, true, None);
    assert_eq!(
        second.start_iteration, 4,
        "resumes from the newest checkpoint"
    );
    let (a, b) = (final_weights(&whole), final_weights(&split));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(v.data, b[k].data, "{k} differs after resume");
    }
    // Starting again without --resume must not clobber the checkpoints.
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        ..Default::default()
    })
    .unwrap();
    let mut c = c;
    c.data.path = Some(samples());
    let opts = TrainOptions {
        out: split.clone(),
        device: DeviceSpec::NdArray,
        replicas: vec![],
        resume: false,
        progress: false,
        stop_after: None,
        group: None,
    };
    let err = c.train(&opts).expect_err("refused").to_string();
    assert!(err.contains("--resume"), "{err}");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// `train.init_seed` keys the initial weights: equal to `seed` it changes nothing (a run
/// without it is the same run), another value gives other weights.
/// Tar shards packed in the folder's order train exactly as the folder (the same images in
/// the same stream positions), and a shard run stopped and resumed ends on the same weights.
#[test]
fn shards_train_and_resume_exactly_as_the_folder_they_were_packed_from() {
    use pixmim::data::pack::{pack, PackOptions};
    let shards = out_dir("shards-data");
    let packed = pack(
        &pixmim::data::Dataset::open(&samples()).unwrap(),
        &PackOptions {
            out: shards.clone(),
            prefix: "samples".into(),
            per_shard: 5,
            shuffle_seed: None,
        },
    )
    .unwrap();
    assert_eq!(packed.shards.len(), 3);
    let sets = ["train.steps=8", "train.checkpoint_every=4"];
    let folder = out_dir("shards-folder");
    run(&sets, &folder, false, None);
    let data = format!("data.path={:?}", packed.spec);
    let sets = [sets[0], sets[1], &data];
    let split = out_dir("shards-split");
    run(&sets, &split, false, Some(6));
    let resumed = run(&sets, &split, true, None);
    assert_eq!(resumed.start_iteration, 4);
    let (a, b) = (final_weights(&folder), final_weights(&split));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(v.data, b[k].data, "{k}: shards differ from the folder");
    }
    for d in [shards, folder, split] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn init_seed_keys_the_initial_weights_and_nothing_else() {
    let one_step = |extra: &[&str], name: &str| {
        let out = out_dir(name);
        let mut sets = vec!["train.steps=1", "seed=3"];
        sets.extend_from_slice(extra);
        let summary = run(&sets, &out, false, None);
        (final_weights(&out), summary.losses, out)
    };
    let (plain, plain_loss, a) = one_step(&[], "init-plain");
    let (same, same_loss, b) = one_step(&["train.init_seed=3"], "init-same");
    let (other, other_loss, c) = one_step(&["train.init_seed=4"], "init-other");
    assert_eq!(plain_loss, same_loss);
    for (k, v) in &plain {
        assert_eq!(v.data, same[k].data, "{k}: init_seed = seed changed it");
    }
    assert_ne!(plain_loss, other_loss);
    let differs = |w: &std::collections::HashMap<String, pixmim::checkpoint::HostTensor>| {
        w.iter()
            .filter(|(k, _)| k.ends_with("patch_embed.proj.weight"))
            .any(|(k, v)| v.data != plain[k].data)
    };
    assert!(differs(&other), "another init_seed left the weights alone");
    for dir in [a, b, c] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `[train.monitor]`: kNN accuracy of the encoder's features every N steps and at the end, in
/// `metrics.jsonl`; a resumed run logs what the uninterrupted run logged; a monitor path that
/// does not exist stops the run before its first step, naming the key.
#[test]
fn the_monitor_logs_knn_accuracy_every_n_steps_and_resumes_exactly() {
    // Two classes that differ in brightness, 28 px grey with some texture.
    let data = out_dir("monitor-data");
    std::fs::create_dir_all(&data).unwrap();
    let pictures: Vec<image::GrayImage> = (0..24u32)
        .map(|i| {
            image::GrayImage::from_fn(28, 28, |x, y| {
                let base = if i % 2 == 0 { 20 } else { 170 };
                image::Luma([base + ((x * 7 + y * 3 + i * 5) % 50) as u8])
            })
        })
        .collect();
    let labels: Vec<u8> = (0..24).map(|i| (i % 2) as u8).collect();
    let images = data.join("train-images-idx3-ubyte");
    pixmim::data::idx::IdxImages::write(&images, &pictures, &labels).unwrap();
    let path = format!("{:?}", images.display().to_string());
    let monitor = [
        format!("train.monitor.data={path}"),
        format!("train.monitor.val_data={path}"),
        "train.monitor.every=3".to_string(),
        "train.monitor.crop_pct=1.0".to_string(),
    ];
    let mut sets: Vec<&str> = vec!["train.steps=8", "train.checkpoint_every=4"];
    sets.extend(monitor.iter().map(String::as_str));
    let monitored = |out: &Path| -> Vec<(u64, f64, f64)> {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("knn_top1").is_some())
            .map(|v| {
                assert!(v["monitor_s"].as_f64().unwrap() >= 0.0);
                (
                    v["step"].as_u64().unwrap(),
                    v["knn_top1"].as_f64().unwrap(),
                    v["knn_top5"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let whole = out_dir("monitor-whole");
    run(&sets, &whole, false, None);
    let lines = monitored(&whole);
    // After steps 3 and 6, and the last (8); `step` is the 0-based iteration, as the losses'.
    let steps: Vec<u64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(steps, [2, 5, 7]);
    assert!(lines
        .iter()
        .all(|l| (0.0..=1.0).contains(&l.1) && l.2 >= l.1));
    let split = out_dir("monitor-split");
    run(&sets, &split, false, Some(6)); // "killed" after step 6; last checkpoint at 4
    run(&sets, &split, true, None);
    assert_eq!(monitored(&split), lines, "the resumed run's monitor");

    let mut c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        sets: vec![
            "train.monitor.data=\"no/such/images\"".into(),
            monitor[1].clone(),
        ],
        ..Default::default()
    })
    .unwrap();
    c.data.path = Some(samples());
    let bad = out_dir("monitor-bad");
    let err = c
        .train(&TrainOptions::new(&bad, DeviceSpec::NdArray))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("train.monitor.data"), "{err}");
    assert!(!bad.exists(), "no run folder for a run that never started");
    for dir in [data, whole, split] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn host_and_device_low_pass_paths_train_identically_for_a_step() {
    let a = out_dir("lp-host");
    let b = out_dir("lp-device");
    let sa = run_with(
        &["pixmim"],
        &["train.steps=2", "target.on_device=false"],
        &a,
        false,
        None,
    );
    let sb = run_with(
        &["pixmim"],
        &["train.steps=2", "target.on_device=true"],
        &b,
        false,
        None,
    );
    // The flag reached the generator (its resolved parameters are written back)...
    let cfg = |d: &Path| -> toml::Table {
        std::fs::read_to_string(d.join("config.toml"))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(cfg(&a)["target"]["on_device"].as_bool(), Some(false));
    assert_eq!(cfg(&b)["target"]["on_device"].as_bool(), Some(true));
    // ...and the two paths give the same losses.
    assert_eq!(sa.losses.len(), 2);
    for (x, y) in sa.losses.iter().zip(&sb.losses) {
        assert!((x - y).abs() < 1e-4 * x.abs(), "{x} vs {y}");
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// Every registered method's tiny preset trains on the sample photos with a falling loss,
/// alone and with each registered plugin, and leaves the run folder the README promises.
#[test]
fn every_method_trains_with_a_falling_loss_alone_and_with_each_plugin() {
    for method in methods() {
        let method = method.name();
        for plugins in plugin_sets() {
            let plugins: Vec<&str> = plugins.iter().map(String::as_str).collect();
            let what = format!("{method} {plugins:?}");
            let out = out_dir(&format!("{method}-{}", plugins.join("+")));
            let sets = [
                "train.steps=40",
                "train.checkpoint_every=20",
                "train.log_every=10",
            ];
            let s = run_method(method, &plugins, &sets, &out, false, None);
            assert_eq!(s.losses.len(), 40, "{what}");
            let first: f64 = s.losses[..8].iter().sum::<f64>() / 8.0;
            let last: f64 = s.losses[32..].iter().sum::<f64>() / 8.0;
            assert!(
                last < 0.9 * first,
                "{what}: loss did not fall: {first:.4} -> {last:.4}"
            );
            // The run folder: resolved config, a metrics line per 10 steps, two checkpoints.
            assert!(out.join("config.toml").exists(), "{what}");
            let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
            let lines: Vec<serde_json::Value> = metrics
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 4, "{what}: log_every = 10 over 40 steps");
            for k in ["step", "epoch", "loss", "lr", "img_s"] {
                assert!(lines[0].get(k).is_some(), "{what}: metrics lack {k}");
            }
            // The mean wait for a batch over the logged steps: a part of the run's time.
            for l in &lines {
                let wait = l["data_wait_s"].as_f64().expect("data_wait_s");
                let elapsed = l["elapsed_s"].as_f64().unwrap();
                assert!((0.0..=elapsed).contains(&wait), "{what}: {l}");
            }
            let ckpts = pixmim::checkpoint::run::list_checkpoints(&out).unwrap();
            let steps: Vec<_> = ckpts.iter().map(|c| c.0).collect();
            assert_eq!(steps, vec![20, 40], "{what}");
            let _ = std::fs::remove_dir_all(&out);
        }
    }
}

/// MAE's tiny preset with the PixMIM plugin, composed.
fn tiny_mae_with_pixmim() -> pixmim::registry::Composed {
    compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        plugins: vec!["pixmim".into()],
        ..Default::default()
    })
    .unwrap()
}

/// The PixMIM plugin's resolved config: SRC, the low-pass target, and the radius it scaled to
/// the image (r = 40 * 32 / 224 for the tiny presets' 32 px) written back.
#[test]
fn the_pixmim_plugin_resolves_src_and_a_scaled_radius() {
    let c = tiny_mae_with_pixmim();
    let cfg = &c.table;
    assert_eq!(cfg["augmentation"]["name"].as_str(), Some("src"));
    assert_eq!(cfg["target"]["name"].as_str(), Some("lowpass"));
    assert!((cfg["target"]["radius"].as_float().unwrap() - 40.0 * 32.0 / 224.0).abs() < 1e-12);
}

/// No plugin, then each registered plugin alone.
fn plugin_sets() -> Vec<Vec<String>> {
    std::iter::once(vec![])
        .chain(plugins().iter().map(|p| vec![p.name().to_string()]))
        .collect()
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_its_last_good_checkpoint() {
    let out = out_dir("diverge");
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        sets: vec![
            format!("data.path={:?}", samples().display().to_string()),
            "train.steps=40".into(),
            "train.batch_size=4".into(),
            "train.checkpoint_every=1".into(),
            "train.keep_checkpoints=40".into(),
            "optim.lr=1e30".into(), // every weight moves by about 1e30 a step
        ],
        ..Default::default()
    })
    .unwrap();
    let opts = TrainOptions {
        out: out.clone(),
        device: DeviceSpec::NdArray,
        replicas: vec![],
        resume: false,
        progress: false,
        stop_after: None,
        group: None,
    };
    let Err(e) = c.train(&opts) else {
        panic!("a run with lr 1e30 must diverge")
    };
    assert_eq!(e.exit_code(), 1, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("step") && (msg.contains("NaN") || msg.contains("inf")),
        "{msg}"
    );
    let ckpts = pixmim::checkpoint::run::list_checkpoints(&out).unwrap();
    let (step, last) = ckpts.last().expect("at least one good checkpoint");
    assert!(*step < 40, "the run must stop early");
    assert!(
        msg.contains(&*last.display().to_string()),
        "names the last good one: {msg}"
    );
    for (k, t) in read_safetensors(last).unwrap().0 {
        assert!(
            t.data.iter().all(|v| v.is_finite()),
            "`{k}` is not finite in {step}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `Composed::reconstruct` loads the checkpoint once and runs every batch through it in order:
/// each batch's result equals the same batch on its own, the model is not changed between
/// batches, and a failing input stops the job with that input's error.
#[test]
fn reconstruct_runs_each_batch_through_one_loaded_model() {
    use pixmim::job::{ReconstructInput, ReconstructOptions, Reconstruction};
    use pixmim::traits::ImageBatch;
    let out = out_dir("reconstruct");
    run(&["train.steps=2", "train.batch_size=4"], &out, false, None);
    let checkpoint = pixmim::checkpoint::run::list_checkpoints(&out)
        .unwrap()
        .pop()
        .unwrap()
        .1;
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        ..Default::default()
    })
    .unwrap();
    let (h, w) = c.geometry.image;
    let batch = |n: usize, k: usize| ImageBatch {
        batch: n,
        channels: 3,
        height: h,
        width: w,
        data: (0..n * 3 * h * w)
            .map(|i| ((i * 31 + k * 7) % 97) as f32 / 48.0 - 1.0)
            .collect(),
    };
    let input = |n, k, seed| ReconstructInput {
        image: batch(n, k),
        noise: None,
        seed,
    };
    let job = |inputs: Vec<pixmim::Result<ReconstructInput>>| {
        let mut seen: Vec<(u64, Reconstruction)> = Vec::new();
        let r = c.reconstruct(ReconstructOptions {
            checkpoint: checkpoint.clone(),
            device: DeviceSpec::NdArray,
            inputs: Box::new(inputs.into_iter()),
            each: Box::new(|i, rec| {
                seen.push((i.seed, rec));
                Ok(())
            }),
        });
        (r, seen)
    };
    let (r, all) = job(vec![
        Ok(input(2, 0, 1)),
        Ok(input(1, 1, 2)),
        Ok(input(2, 0, 1)),
    ]);
    assert!(matches!(r, Ok(3)), "{:?}", r.err());
    assert_eq!(
        all.iter().map(|(s, r)| (*s, r.batch)).collect::<Vec<_>>(),
        [(1, 2), (2, 1), (1, 2)]
    );
    // The same batch twice through the loaded model: the same numbers.
    assert_eq!(all[0].1.pred, all[2].1.pred);
    assert_eq!(all[0].1.loss, all[2].1.loss);
    // The middle batch on its own (its own model load) agrees with it in the sequence.
    let (_, alone) = job(vec![Ok(input(1, 1, 2))]);
    assert_eq!(alone[0].1.pred, all[1].1.pred);
    assert_eq!(alone[0].1.mask, all[1].1.mask);
    // Every image's prediction is there: (B, L, p*p*3) per batch, and a finite loss.
    for (_, r) in &all {
        let l = r.grid.0 * r.grid.1;
        assert_eq!(r.pred.len(), r.batch * l * r.patch * r.patch * 3);
        assert!(r.loss.is_finite(), "loss {}", r.loss);
    }
    // An input that fails stops the job with its error, after the batches before it.
    let bad = pixmim::Error::Usage("batch two could not be read".into());
    let (r, seen) = job(vec![Ok(input(1, 0, 1)), Err(bad), Ok(input(1, 1, 2))]);
    let e = r.expect_err("the failing input fails the job").to_string();
    assert!(e.contains("batch two could not be read"), "{e}");
    assert_eq!(seen.len(), 1);
    // A batch of the wrong size is refused, naming both shapes.
    let wrong = ImageBatch::zeros(1, 3, h + 4, w);
    let (r, _) = job(vec![Ok(ReconstructInput {
        image: wrong,
        noise: None,
        seed: 0,
    })]);
    let e = r.expect_err("a wrong-size batch fails").to_string();
    assert!(e.contains(&format!("Bx3x{h}x{w}")), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Every job runs on the step threads (`method_def::MethodDef`): the model is built there, and
/// the job's passes and the matrix products they start run on the shard pool, not on the
/// thread that asked for the job.
#[test]
fn jobs_run_on_the_step_threads() {
    use pixmim::method_def::{MethodDef, ModelConfig};
    use pixmim::registry::{Geometry, Method};
    use std::sync::Mutex;

    static BUILT_ON: Mutex<String> = Mutex::new(String::new());
    /// MAE's network, noting the thread that builds it.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Noting(pixmim::mae::MaeConfig);
    impl ModelConfig for Noting {
        type Model<B: burn::prelude::Backend> = pixmim::mae::Mae<B>;
        fn validate(&self) -> pixmim::Result<()> {
            self.0.validate()
        }
        fn from_table(model: &toml::Table) -> pixmim::Result<Self> {
            pixmim::mae::MaeConfig::from_table(model).map(Noting)
        }
        fn geometry(&self) -> pixmim::Result<Geometry> {
            self.0.geometry()
        }
        fn init<B: burn::prelude::Backend>(&self, device: &B::Device, seed: u64) -> Self::Model<B> {
            *BUILT_ON.lock().unwrap() = std::thread::current().name().unwrap_or("").to_owned();
            self.0.init::<B>(device, seed)
        }
    }
    static NOTING: MethodDef<Noting> = MethodDef {
        name: "noting",
        description: "MAE, noting where it is built",
        presets: &[],
        recipe: |_| None,
        official_layout: pixmim::state_dict::OfficialLayout::PLAIN,
        model: std::marker::PhantomData,
    };
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (trainable, _) = NOTING.count_params(&c).unwrap();
    assert_eq!(
        trainable,
        c.count_params().unwrap().0,
        "the same network as mae"
    );
    let name = BUILT_ON.lock().unwrap().clone();
    assert!(name.starts_with("pixmim-shard-"), "the job ran on `{name}`");
}

/// PixMIM's adaptive low-pass target (appendix Table 21): its radius trains with the model,
/// is logged at every logged step, is saved in checkpoints with its AdamW moments, and a run
/// stopped between checkpoints resumes to the same radius and weights, bit for bit.
#[test]
fn the_adaptive_radius_trains_is_logged_and_resumes_exactly() {
    let sets = [
        "target.name=\"adaptive_lowpass\"",
        "train.steps=8",
        "train.checkpoint_every=4",
        "train.log_every=1",
    ];
    let whole = out_dir("adaptive-whole");
    let first = run(&sets, &whole, false, None);
    assert!(first.losses.iter().all(|l| l.is_finite()));
    let weights = final_weights(&whole);
    for key in [
        "target.theta",
        "optim.exp_avg.target.theta",
        "optim.exp_avg_sq.target.theta",
    ] {
        assert!(weights.contains_key(key), "no `{key}` in the checkpoint");
    }
    let config = std::fs::read_to_string(whole.join("config.toml")).unwrap();
    let config: toml::Table = toml::from_str(&config).unwrap();
    let t = config["target"].as_table().unwrap();
    let (lo, hi) = (
        t["radius_min"].as_float().unwrap(),
        t["radius_max"].as_float().unwrap(),
    );
    let init = t["radius_init"].as_float().unwrap();
    let radii: Vec<f64> = std::fs::read_to_string(whole.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["target_radius"]
                .as_f64()
                .expect("target_radius on every line")
        })
        .collect();
    assert_eq!(radii.len(), 8);
    assert!(radii.iter().all(|r| (lo..=hi).contains(r)), "{radii:?}");
    // AdamW moves theta by about lr per step: the radius leaves its start.
    assert!((radii[7] - init).abs() > 1e-4, "{init} -> {radii:?}");

    // Exports carry the model only: the official layout has no place for theta.
    let last = pixmim::checkpoint::run::list_checkpoints(&whole)
        .unwrap()
        .pop()
        .unwrap()
        .1;
    let exported = whole.join("official.safetensors");
    let n = pixmim::interop::export(&last, pixmim::interop::Format::Official, &exported).unwrap();
    let (official, _) = read_safetensors(&exported).unwrap();
    assert_eq!(official.len(), n);
    assert!(official.contains_key("blocks.0.attn.qkv.weight"));
    assert!(
        official
            .keys()
            .all(|k| !k.starts_with("target.") && !k.starts_with("optim.")),
        "{:?}",
        official.keys().collect::<Vec<_>>()
    );

    let split = out_dir("adaptive-split");
    run(&sets, &split, false, Some(6));
    let second = run(&sets, &split, true, None);
    assert_eq!(second.start_iteration, 4);
    let resumed = final_weights(&split);
    assert_eq!(weights.len(), resumed.len());
    for (k, v) in &weights {
        assert_eq!(v.data, resumed[k].data, "{k} differs after resume");
    }
    // A checkpoint with a learnt radius is refused by a run whose target is fixed.
    let err = std::panic::catch_unwind(|| {
        run(
            &["train.steps=10", "train.checkpoint_every=4"],
            &split,
            true,
            None,
        )
    })
    .expect_err("a fixed target cannot resume a trainable one");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("target"), "{msg}");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// Several processes each build their share of every global batch (`BatchRows::share`): the
/// shares, put together, are the batch one process builds, images and masks alike, with the
/// PixMIM plugin's SRC and low-pass target too.
#[test]
fn the_shares_of_a_batch_are_its_rows() {
    use pixmim::data::loader::{make_batch, BatchRows, Source};
    use pixmim::data::Dataset;
    let c = tiny_mae_with_pixmim();
    let source = Source::strict(Dataset::open(&samples()).unwrap());
    let build =
        |rows: &BatchRows| make_batch(&source, &c.parts, 3, rows, 5, false, &mut None).unwrap();
    let whole = build(&BatchRows::all(8));
    let shares: Vec<_> = (0..4).map(|r| build(&BatchRows::share(8, r, 4))).collect();
    let joined = |f: &dyn Fn(&pixmim::data::loader::Batch) -> Vec<f32>| {
        shares.iter().flat_map(f).collect::<Vec<f32>>()
    };
    assert_eq!(joined(&|b| b.images.data.clone()), whole.images.data);
    let target =
        |b: &pixmim::data::loader::Batch| b.target.as_ref().expect("host target").data.clone();
    assert_eq!(joined(&target), target(&whole));
    let masks: Vec<f32> = shares.iter().flat_map(|b| b.mask.mask.clone()).collect();
    assert_eq!(masks, whole.mask.mask);
    assert!(shares
        .iter()
        .all(|b| b.images.batch == 2 && b.mask.batch == 2));
    // Not a trivial pass: the rows of a batch differ from each other.
    assert_ne!(shares[0].images.data, shares[1].images.data);
}

/// `train.activation_checkpointing = "balanced"` recomputes element-wise results in the
/// backward pass instead of storing them: the same arithmetic, so the same losses and weights
/// as `none`, for every method, with the PixMIM target, on two devices (data parallel), and
/// across a kill and resume (the optimiser's moments come back from the checkpoint).
#[test]
fn activation_checkpointing_trains_to_the_same_weights() {
    // Every method alone and with each plugin on one device; the default method with the
    // last plugin on two.
    let mut cases: Vec<(&str, Vec<String>, usize)> = methods()
        .iter()
        .flat_map(|m| plugin_sets().into_iter().map(|p| (m.name(), p, 0)))
        .collect();
    cases.push((methods()[0].name(), plugin_sets().pop().unwrap(), 1));
    for (method, plugins, more) in cases {
        let plugins: Vec<&str> = plugins.iter().map(String::as_str).collect();
        let plugins = &plugins[..];
        let tag = format!("{method}-{}-{more}", plugins.join("+"));
        let replicas = || vec![DeviceSpec::NdArray; more];
        let sets = |mode: &str| {
            [
                "train.steps=3".to_string(),
                "train.batch_size=4".into(),
                "train.checkpoint_every=1".into(),
                format!("train.activation_checkpointing={mode:?}"),
            ]
        };
        let plain_sets = sets("none");
        let plain_sets: Vec<&str> = plain_sets.iter().map(String::as_str).collect();
        let plain_out = out_dir(&format!("ckpt-none-{tag}"));
        let plain = run_on(
            method,
            plugins,
            &plain_sets,
            &plain_out,
            false,
            None,
            replicas(),
        );

        // Balanced, killed after two steps, resumed for the third.
        let ckpt_sets = sets("balanced");
        let ckpt_sets: Vec<&str> = ckpt_sets.iter().map(String::as_str).collect();
        let ckpt_out = out_dir(&format!("ckpt-balanced-{tag}"));
        let first = run_on(
            method,
            plugins,
            &ckpt_sets,
            &ckpt_out,
            false,
            Some(2),
            replicas(),
        );
        let rest = run_on(
            method,
            plugins,
            &ckpt_sets,
            &ckpt_out,
            true,
            None,
            replicas(),
        );
        let losses = [first.losses, rest.losses].concat();
        assert_eq!(plain.losses, losses, "{tag}");

        let (a, b) = (final_weights(&plain_out), final_weights(&ckpt_out));
        assert!(a.keys().any(|k| k.starts_with("optim.exp_avg.")));
        for (k, v) in &a {
            let worst = v
                .data
                .iter()
                .zip(&b[k].data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= 1e-6, "{tag} {k}: {worst}");
        }
        for d in [plain_out, ckpt_out] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
