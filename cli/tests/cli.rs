//! The CLI contract: spellings, exit codes, and messages that name the bad key or file.
mod common;
use common::{pixmim, text, tmp, train_tiny};

#[test]
fn list_shows_every_registered_method_plugin_and_component() {
    use pixmim::registry;
    use pixmim::traits::{Augmentation, Corruption, TargetGenerator};
    let o = pixmim(&["list"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let line = |name: &str, kind: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name}  [{kind}] ")))
            .unwrap_or_else(|| panic!("{kind} {name} missing: {out}"))
            .to_string()
    };
    for m in registry::methods() {
        let presets = registry::preset_names(m).join(", ");
        assert!(line(m.name(), "method").ends_with(&format!("(presets: {presets})")));
    }
    for p in registry::plugins() {
        line(p.name(), "plugin");
    }
    for (kind, names) in [
        ("target", registry::component_names::<dyn TargetGenerator>()),
        (
            "augmentation",
            registry::component_names::<dyn Augmentation>(),
        ),
        ("masking", registry::component_names::<dyn Corruption>()),
    ] {
        for (name, _) in names {
            line(name, kind);
        }
    }
}

/// `info` prints each method's default preset's parameter counts, the ones its crate declares.
#[test]
fn info_reports_the_declared_counts_of_every_method() {
    for m in pixmim::registry::methods() {
        let p = m.presets()[0];
        let o = pixmim(&["info", "--method", m.name(), "--preset", p.name]);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        for (what, n) in [("trainable", p.trainable), ("frozen", p.frozen)] {
            assert!(
                out.contains(&format!("{what} parameters: {n}")),
                "{} {}: {out}",
                m.name(),
                p.name
            );
        }
    }
}

#[test]
fn the_low_pass_radius_scales_with_the_image() {
    // LSMAE with PixMIM: the radius scales to 80 at 448 (numerics §11.1)
    let o = pixmim(&[
        "info", "--method", "lsmae", "--plugin", "pixmim", "--preset", "base",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("radius = 80.0"),
        "{}",
        text(&o)
    );
}

#[test]
fn info_with_the_pixmim_plugin_shows_src_and_the_radius() {
    let o = pixmim(&[
        "info", "--method", "mae", "--plugin", "pixmim", "--preset", "base",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let toml_part: String = out
        .lines()
        .take_while(|l| !l.starts_with("# augmentation"))
        .collect::<Vec<_>>()
        .join("\n");
    let t: toml::Table = toml_part.parse().expect("info prints TOML");
    assert_eq!(t["augmentation"]["name"].as_str(), Some("src"));
    assert_eq!(
        t["augmentation"]["interpolation"].as_str(),
        Some("bilinear")
    );
    assert_eq!(t["target"]["name"].as_str(), Some("lowpass"));
    assert_eq!(t["target"]["radius"].as_float(), Some(40.0));
    assert!(out.contains("5024 of 50176 frequency bins kept"), "{out}");
    // the model is MAE's own
    assert!(out.contains("trainable parameters: 111655680"), "{out}");
    // an explicit radius wins, and a negative one is refused by name
    let o = pixmim(&[
        "info",
        "--method",
        "mae",
        "--plugin",
        "pixmim",
        "--preset",
        "tiny",
        "--set",
        "target.radius=3",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("radius = 3.0"),
        "{}",
        text(&o)
    );
    let o = pixmim(&[
        "info",
        "--method",
        "mae",
        "--plugin",
        "pixmim",
        "--preset",
        "tiny",
        "--set",
        "target.radius=-1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("target.radius"), "{}", text(&o));
}

#[test]
fn info_reports_the_official_mae_base_counts() {
    let o = pixmim(&["info", "--method", "mae", "--preset", "base"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("trainable parameters: 111655680"), "{out}");
    assert!(out.contains("frozen parameters: 252160"), "{out}");
    // The resolved config is TOML and round-trips.
    let toml_part: String = out
        .lines()
        .take_while(|l| !l.starts_with("# augmentation"))
        .collect::<Vec<_>>()
        .join("\n");
    let t: toml::Table = toml_part.parse().expect("info prints TOML");
    assert_eq!(t["model"]["embed_dim"].as_integer(), Some(768));
}

#[test]
fn user_mistakes_exit_2_and_name_the_key_or_file() {
    let cases: &[(&[&str], &str)] = &[
        (&["info", "--method", "nope"], "nope"),
        (&["info", "--method", "mae", "--preset", "giant"], "giant"),
        (
            &[
                "info",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "masking.ratio=1.5",
            ],
            "masking.ratio",
        ),
        (
            &[
                "info",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "train.batchsize=3",
            ],
            "batchsize",
        ),
        (
            &[
                "info",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "model.img_size=30",
            ],
            "model.img_size",
        ),
        (
            &[
                "info",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "optim.blr=-1",
            ],
            "optim.blr",
        ),
        (
            &[
                "info", "--method", "mae", "--preset", "tiny", "--set", "bogus=1",
            ],
            "bogus",
        ),
        (&["info", "--method", "mae", "--plugin", "nosuch"], "nosuch"),
        (
            &["info", "--method", "mae", "--config", "/no/such/file.toml"],
            "/no/such/file.toml",
        ),
        (
            &[
                "train",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--data",
                "/no/such/dir",
            ],
            "/no/such/dir",
        ),
        (
            &[
                "train",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "train.batch_size=0",
            ],
            "train.batch_size",
        ),
        (
            &[
                "train", "--method", "mae", "--preset", "tiny", "--device", "tpu",
            ],
            "tpu",
        ),
        (
            &["train", "--method", "mae", "--preset", "tiny", "--resume"],
            "--resume",
        ),
        (
            &[
                "train",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--steps",
                "1",
                "--out",
                "/proc/no/such/run",
            ],
            "/proc/no/such/run",
        ),
        (
            &[
                "info",
                "--method",
                "mae",
                "--preset",
                "tiny",
                "--set",
                "data.on_error=\"ignore\"",
            ],
            "ignore",
        ),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let o = pixmim(args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(needle), "{args:?} should name {needle}: {t}");
        assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
    }
}

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // a GPU machine
    }
    let o = pixmim(&[
        "train", "--method", "mae", "--preset", "tiny", "--device", "cuda", "--steps", "1",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("driver"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn a_device_list_trains_data_parallel_and_bad_lists_are_named() {
    let out = tmp("dp");
    let o = train_tiny(
        &out,
        2,
        &["--device", "cpu,cpu", "--set", "train.batch_size=4"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("checkpoints/step-00000002.safetensors").exists());
    for (devices, named) in [("cuda:1,cuda:1", "twice"), ("cpu,tpu", "tpu")] {
        let o = pixmim(&[
            "train", "--method", "mae", "--preset", "tiny", "--steps", "1", "--device", devices,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(named), "{}", text(&o));
    }
    // Batch 5 cannot be split over two devices: refused naming the key.
    let o = train_tiny(
        &tmp("dp5"),
        1,
        &["--device", "cpu,cpu", "--set", "train.batch_size=5"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("train.batch_size"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn train_writes_the_run_folder_and_resumes() {
    let out = tmp("train");
    let o = pixmim(&[
        "train",
        "--method",
        "mae",
        "--preset",
        "tiny",
        "--steps",
        "6",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.log_every=2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The default device is a flex replica per core that splits the batch (16), named as
    // resolved and recorded in config.toml.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let replicas = (1..=cores.min(16)).rev().find(|k| 16 % k == 0).unwrap();
    let list = vec!["flex"; replicas].join(",");
    assert!(
        text(&o).contains(&format!("on cpu ({list})")),
        "{}",
        text(&o)
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    assert_eq!(config["train"]["devices"].as_str(), Some(list.as_str()));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert!(out.join("checkpoints/step-00000006.safetensors").exists());
    // A config file with the same run: resume continues from the config.toml in --out
    // and, already finished, trains nothing more.
    let o = pixmim(&["train", "--resume", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming from"), "{}", text(&o));
    // It repeats the recorded device list; `--device flex` pins one device instead.
    assert!(text(&o).contains(&format!("on {list} ->")), "{}", text(&o));
    let o = pixmim(&[
        "train",
        "--resume",
        "--device",
        "flex",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(text(&o).contains("on flex ->"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn target_applies_a_generator_to_npy_and_images() {
    let dir = tmp("target");
    std::fs::create_dir_all(&dir).unwrap();
    // an .npy input: a constant image stays constant under any low-pass filter keeping DC
    let n = 3 * 16 * 16;
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 16, 16), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for _ in 0..n {
        bytes.extend(0.5f32.to_le_bytes());
    }
    let input = dir.join("in.npy");
    std::fs::write(&input, bytes).unwrap();
    let output = dir.join("out.npy");
    let o = pixmim(&[
        "target",
        "--generator",
        "lowpass",
        "--radius",
        "3",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = std::fs::read(&output).unwrap();
    let values: Vec<f32> = out[out.len() - 4 * n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(
        values.iter().all(|v| (v - 0.5).abs() < 1e-4),
        "{:?}",
        &values[..4]
    );
    // an image in, an image out
    let png = dir.join("out.png");
    let o = pixmim(&[
        "target",
        "--generator",
        "lowpass",
        "--input",
        "../data/samples/astronaut.jpg",
        "--output",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("radius"), "{}", text(&o));
    assert_eq!(image_dims(&png), (160, 160));
    // another generator's keys through --set; an unknown key: exit 2, naming it
    let adaptive = |set: &str| {
        pixmim(&[
            "target",
            "--generator",
            "adaptive_lowpass",
            "--set",
            set,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
    };
    let o = adaptive("radius_init=3.5");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("from 3.5"), "{}", text(&o));
    let o = adaptive("bogus_key=1");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bogus_key"), "{}", text(&o));
    // unknown generator: exit 2, the known ones listed
    let o = pixmim(&[
        "target",
        "--generator",
        "nope",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("lowpass"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

fn image_dims(p: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    (
        u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
    )
}

#[test]
fn preview_writes_a_four_panel_grid() {
    let dir = tmp("preview");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("grid.png");
    let o = pixmim(&[
        "preview",
        "--method",
        "mae",
        "--plugin",
        "pixmim",
        "--preset",
        "tiny",
        "--count",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // tiny: 32 px panels enlarged 4x to 128, 4 panels + 5 gaps of 4 px, 3 rows
    assert_eq!(image_dims(&out), (4 * 132 + 4, 3 * 132 + 4));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_json_has_the_promised_keys() {
    let o = pixmim(&[
        "bench",
        "--json",
        "--methods",
        "mae",
        "--batch",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--pipeline-secs",
        "0.2",
        "--feed",
        "1000,50000",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    // Cores to feed a step rate: the rate over one core's, rounded up.
    for key in ["rrc", "src"] {
        let one = v[format!("pipeline_{key}_img_s_1core")].as_f64().unwrap();
        for f in [1000.0, 50000.0] {
            let cores = v[format!("pipeline_{key}_cores_to_feed")][format!("{f}")].as_f64();
            assert_eq!(cores, Some((f / one).ceil()), "{key} {f}: {v}");
        }
    }
    for k in [
        "pipeline_rrc_img_s_1core",
        "pipeline_src_img_s_1core",
        "pipeline_rrc_img_s_allcores",
        "lowpass_ms_per_image_224",
        "tiny_mae_step_s",
    ] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }
    assert!(v["pixmim_overhead_pct"].as_f64().unwrap().is_finite());
    assert!(v["steps"]["mae/tiny"]["step_s_pixmim"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_refuses_a_step_rate_that_is_not_one() {
    for bad in ["0", "-5", "nan"] {
        let feed = format!("--feed={bad}");
        let o = pixmim(&["bench", "--only", "pipeline", &feed]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("--feed"), "{bad}: {}", text(&o));
    }
}

/// `--device cpu,cpu` times `pixmim train`'s data-parallel step (one replica per device);
/// a batch that does not split, or a replica that cannot run the precision, is refused.
#[test]
fn bench_times_the_data_parallel_step() {
    let args = |device: &str, batch: &str, precision: &str| {
        pixmim(&[
            "bench",
            "--json",
            "--only",
            "steps",
            "--methods",
            "mae",
            "--device",
            device,
            "--batch",
            batch,
            "--precision",
            precision,
            "--steps",
            "1",
            "--warmup",
            "0",
        ])
    };
    let o = args("cpu,cpu", "4", "f32");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("one JSON object");
    assert_eq!(v["device"], "cpu,cpu");
    assert_eq!(
        v["backends"],
        serde_json::json!(["flex", "flex"]),
        "`cpu` is flex"
    );
    for k in ["step_s", "step_s_pixmim"] {
        let x = v["steps"]["mae/tiny"][k].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{k} = {x}: {v}");
    }
    let o = args("cpu,cpu", "5", "f32");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--batch 5"), "{}", text(&o));
    let o = args("flex,ndarray", "4", "bf16");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("train.precision"), "{}", text(&o));
}

/// `train.precision = "bf16"` trains on flex (its config is kept in the run folder) and is
/// refused on ndarray, which computes in f32 only, naming the key.
#[test]
fn bf16_trains_on_flex_and_is_refused_on_ndarray() {
    let out = tmp("bf16");
    let run = |device: &str, out: &std::path::Path| {
        let sets = [
            "--set",
            "train.batch_size=8",
            "--set",
            "train.precision=bf16",
        ];
        train_tiny(out, 2, &[&["--device", device][..], &sets].concat())
    };
    let o = run("flex", &out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("checkpoints/step-00000002.safetensors").exists());
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("precision = \"bf16\""), "{config}");
    let o = run("ndarray", &tmp("bf16-ndarray"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("train.precision"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&out);
}

/// README's method table is the registry's: one row per registered method, with its crate,
/// its presets in order and its default preset's declared parameter counts.
#[test]
fn the_readme_method_table_matches_the_registry() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let rows: Vec<Vec<String>> = readme
        .split("### Methods and presets")
        .nth(1)
        .expect("README has a \"Methods and presets\" section")
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and rule
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let thousands = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let methods = pixmim::registry::methods();
    let want: Vec<Vec<String>> = methods
        .iter()
        .map(|m| {
            let p = m.presets()[0];
            vec![
                m.name().to_string(),
                format!("methods/{}", m.name()),
                pixmim::registry::preset_names(*m).join(", "),
                format!("{} / {}", thousands(p.trainable), thousands(p.frozen)),
            ]
        })
        .collect();
    assert_eq!(
        rows, want,
        "README's method table (left) vs the registry (right)"
    );
}
