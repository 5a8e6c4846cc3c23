//! Issue 8: malformed configs and overrides never panic the parser; every refusal is a user
//! error (exit code 2) with a message, and an unknown key is named.
use std::path::PathBuf;

use pixmim::registry::{compose, methods, Request};
use proptest::prelude::*;

/// Keys that exist in some preset, so overrides reach the validators, not only the
/// unknown-key check.
const KEYS: &[&str] = &[
    "seed",
    "method",
    "plugins",
    "model.img_size",
    "model.patch_size",
    "model.embed_dim",
    "model.depth",
    "model.num_heads",
    "model.decoder_embed_dim",
    "model.decoder_depth",
    "model.decoder_num_heads",
    "model.mlp_ratio",
    "model.norm_pix_loss",
    "model.out_indices",
    "model.pos_embed",
    "masking.name",
    "masking.ratio",
    "masking.unit",
    "augmentation.name",
    "augmentation.scale",
    "augmentation.ratio",
    "augmentation.hflip",
    "augmentation.padding",
    "augmentation.interpolation",
    "target.name",
    "target.radius",
    "target.on_device",
    "optim.blr",
    "optim.lr",
    "optim.weight_decay",
    "optim.betas",
    "optim.eps",
    "optim.no_decay",
    "optim.clip_grad",
    "schedule.kind",
    "schedule.warmup_epochs",
    "schedule.min_lr",
    "train.batch_size",
    "train.accum_iter",
    "train.epochs",
    "train.steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.precision",
    "train.memory_check",
    "data.path",
    "data.on_error",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (-3i64..300).prop_map(|v| v.to_string()),
        // Large powers of two pass divisibility checks and reach allocation-sized values.
        (1u32..63).prop_map(|e| (1u64 << e).to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "0.0",
            "1.0",
            "1.5",
            "-0.5",
            "nan",
            "inf",
            "-inf",
            "1e308",
            "1e-320",
            "true",
            "false",
            "\"\"",
            "\"random\"",
            "\"lowpass\"",
            "\"src\"",
            "\"bf16\"",
            "\"nope\"",
            "[]",
            "[1]",
            "[0.2, 1.0]",
            "[1.0, 0.2]",
            "[[1]]",
            "{}",
            "{a = 1}",
            "[\"pixmim\"]",
            "\"/no/such/path\"",
            "2147483648",
            "9223372036854775807",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        "[ -~]{0,16}", // printable junk: unparseable TOML becomes a bare string
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,8}(\\.[a-z_]{1,8}){0,2}",
        1 => "[ -~]{0,12}",
    ]
}

fn override_() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| format!("{k}={v}")),
        1 => "[ -~]{0,20}", // not even key=value
    ]
}

/// The registered methods' names.
fn registered() -> Vec<String> {
    methods().iter().map(|m| m.name().to_string()).collect()
}

/// A registered method, or a name that is not one (empty, unknown, upper-cased).
fn method() -> impl Strategy<Value = String> {
    let mut names = registered();
    names.extend(["".into(), "nosuch".into(), names[0].to_uppercase()]);
    prop::sample::select(names)
}

fn plugins() -> impl Strategy<Value = Vec<String>> {
    prop::sample::select(vec![
        vec![],
        vec!["pixmim"],
        vec!["pixmim", "pixmim"],
        vec!["nope"],
    ])
    .prop_map(|v| v.into_iter().map(str::to_string).collect())
}

fn preset() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![None, Some("tiny"), Some("base"), Some("giant")])
        .prop_map(|p| p.map(str::to_string))
}

fn config_file(text: &str, case: u64) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pixmim-fuzz-{}-{case}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

proptest! {
    // 256 cases per property (proptest's default; PROPTEST_CASES raises it).
    #![proptest_config(ProptestConfig::default())]

    /// Random overrides on every method, preset and plugin combination.
    #[test]
    fn malformed_overrides_are_refused_without_panic(
        method in method(),
        preset in preset(),
        plugins in plugins(),
        sets in prop::collection::vec(override_(), 1..5),
    ) {
        let r = compose(&Request { method, preset, plugins, sets, config_file: None });
        if let Err(e) = r {
            prop_assert_eq!(e.exit_code(), 2, "{}", e);
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }

    /// Random TOML documents (and non-TOML bytes) as `--config` files.
    #[test]
    fn malformed_config_files_are_refused_without_panic(
        lines in prop::collection::vec((key(), value()), 0..6),
        junk in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        case in any::<u64>(),
    ) {
        let mut text = String::new();
        let mut current = String::new();
        for (k, v) in &lines {
            match k.rsplit_once('.') {
                Some((section, leaf)) => {
                    if section != current {
                        text.push_str(&format!("[{section}]\n"));
                        current = section.to_string();
                    }
                    text.push_str(&format!("{leaf} = {v}\n"));
                }
                None => text.insert_str(0, &format!("{k} = {v}\n")),
            }
        }
        let path = config_file(&text, case);
        if let Some(bytes) = &junk {
            std::fs::write(&path, bytes).unwrap();
        }
        let r = compose(&Request {
            method: "mae".into(),
            preset: Some("tiny".into()),
            config_file: Some(path.clone()),
            ..Default::default()
        });
        let _ = std::fs::remove_file(&path);
        if let Err(e) = r {
            prop_assert_eq!(e.exit_code(), 2, "{}", e);
            let msg = e.to_string();
            // A file that is not TOML at all is named.
            if msg.contains("TOML") || msg.contains("UTF-8") {
                prop_assert!(msg.contains(&*path.to_string_lossy()), "{}", msg);
            }
        }
    }

    /// An unknown key in a known section is named in the refusal.
    #[test]
    fn an_unknown_key_is_named(
        section in prop::sample::select(vec!["model", "masking", "augmentation", "target", "optim", "schedule", "train", "data"]),
        leaf in "zz[a-z_]{1,8}",
        v in value(),
        method in prop::sample::select(registered()),
    ) {
        let r = compose(&Request {
            method,
            preset: Some("tiny".into()),
            sets: vec![format!("{section}.{leaf}={v}")],
            ..Default::default()
        });
        let e = match r {
            Ok(_) => return Err(TestCaseError::fail(format!("{section}.{leaf} was accepted"))),
            Err(e) => e,
        };
        prop_assert_eq!(e.exit_code(), 2);
        prop_assert!(e.to_string().contains(&leaf), "{} does not name {}", e, leaf);
    }

    /// Image and patch sizes, from 0 to absurd, on every method with and without PixMIM:
    /// refused or accepted, never an out-of-memory abort (an extra zero in img_size used
    /// to make the low-pass target allocate exabytes).
    #[test]
    fn any_image_size_is_refused_or_fits(
        method in prop::sample::select(registered()),
        plugins in plugins(),
        img in prop_oneof![(0u32..63).prop_map(|e| 1u64 << e), any::<u32>().prop_map(u64::from)],
        patch in prop::sample::select(vec![None, Some(0u64), Some(1), Some(4), Some(16), Some(1 << 40)]),
    ) {
        let mut sets = vec![format!("model.img_size={img}")];
        if let Some(p) = patch {
            sets.push(format!("model.patch_size={p}"));
        }
        let r = compose(&Request {
            method,
            preset: Some("tiny".into()),
            plugins,
            sets,
            config_file: None,
        });
        match r {
            Ok(c) => prop_assert!(c.geometry.image.0 <= pixmim::registry::MAX_IMAGE_SIDE),
            Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
        }
    }
}

/// Every numeric leaf of a resolved config (arrays element by element), found by walking the
/// table rather than listed by hand, so a key added later is covered too.
fn numeric_keys(table: &toml::Table, prefix: &str, out: &mut Vec<(String, Option<usize>)>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Integer(_) | toml::Value::Float(_) => out.push((key, None)),
            toml::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    if matches!(x, toml::Value::Integer(_) | toml::Value::Float(_)) {
                        out.push((key.clone(), Some(i)));
                    }
                }
            }
            toml::Value::Table(t) => numeric_keys(t, &format!("{key}."), out),
            _ => {}
        }
    }
}

/// `--set` of `key` (element `index`) to `value`, the array's other elements as resolved.
fn set_to(table: &toml::Table, key: &str, index: Option<usize>, value: &str) -> String {
    let Some(i) = index else {
        return format!("{key}={value}");
    };
    let mut cur = toml::Value::Table(table.clone());
    for part in key.split('.') {
        cur = cur[part].clone();
    }
    let mut items: Vec<String> = cur
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    items[i] = value.to_string();
    format!("{key}=[{}]", items.join(", "))
}

/// Each numeric key of every method (with and without every plugin) at each extreme: 0, -1,
/// a huge float, NaN, the infinities and the largest integer. Either compose refuses it, exit
/// 2, naming the key, or the run it describes trains a step (with the plugin set, where a
/// run is cheap: the tiny preset, batch 2) without a panic or an abort. Before this test,
/// `train.sync_timeout_s = 1e20` passed every check and panicked at the run's start.
#[test]
fn every_numeric_key_at_its_extremes_is_refused_by_name_or_trains() {
    use pixmim::device::DeviceSpec;
    use pixmim::job::TrainOptions;
    const EXTREMES: &[&str] = &[
        "0",
        "-1",
        "1e20",
        "nan",
        "inf",
        "-inf",
        "9223372036854775807",
    ];
    let samples = pixmim_tests::samples();
    let mut refused = 0;
    let mut trained = Vec::new();
    let mut wrong = Vec::new();
    for method in pixmim::registry::methods() {
        let plugin_sets: Vec<Vec<String>> = std::iter::once(vec![])
            .chain(
                pixmim::registry::plugins()
                    .iter()
                    .map(|p| vec![p.name().to_string()]),
            )
            .collect();
        for plugins in plugin_sets {
            let request = |sets: Vec<String>| Request {
                method: method.name().into(),
                preset: Some("tiny".into()),
                plugins: plugins.clone(),
                sets,
                config_file: None,
            };
            let resolved = compose(&request(vec![])).unwrap().table;
            let mut keys = Vec::new();
            numeric_keys(&resolved, "", &mut keys);
            assert!(
                keys.iter().any(|(k, _)| k == "train.sync_timeout_s"),
                "{keys:?}"
            );
            for (key, index) in &keys {
                for value in EXTREMES {
                    let set = set_to(&resolved, key, *index, value);
                    let c = match compose(&request(vec![set.clone()])) {
                        Err(e) => {
                            let leaf = key.rsplit('.').next().unwrap();
                            if e.exit_code() != 2 || !e.to_string().contains(leaf) {
                                wrong.push(format!("{set}: {e}"));
                            }
                            refused += 1;
                            continue;
                        }
                        Ok(c) => c,
                    };
                    // Accepted: the run it describes starts and trains a step. Keys of the
                    // run's length and batch are set for the run unless they are the key.
                    if plugins.is_empty() {
                        continue;
                    }
                    let mut sets = vec![set.clone()];
                    for (k, v) in [
                        ("train.batch_size", "2"),
                        ("train.steps", "1"),
                        ("train.image_every", "0"),
                        ("train.num_workers", "1"),
                        ("train.checkpoint_every", "1"),
                    ] {
                        if k != key {
                            sets.push(format!("{k}={v}"));
                        }
                    }
                    sets.push(format!("data.path={:?}", samples.display().to_string()));
                    let mut c = compose(&request(sets)).unwrap_or(c);
                    if c.train.steps.is_none() && c.train.epochs.is_none() {
                        c.set_run_length(Some(1), None).unwrap();
                    }
                    let out = pixmim_tests::out_dir(&format!("extreme-{}", trained.len()));
                    let mut opts = TrainOptions::new(&out, DeviceSpec::Flex);
                    opts.stop_after = Some(1);
                    let run =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.train(&opts)));
                    let Ok(run) = run else {
                        wrong.push(format!("{set}: accepted, then panicked"));
                        let _ = std::fs::remove_dir_all(&out);
                        trained.push(set);
                        continue;
                    };
                    match run {
                        Ok(_) => {}
                        Err(e) if e.exit_code() == 2 || e.to_string().contains("loss is") => {}
                        Err(e) => wrong.push(format!("{set}: accepted, then failed: {e}")),
                    }
                    let _ = std::fs::remove_dir_all(&out);
                    trained.push(set);
                }
            }
        }
    }
    eprintln!(
        "{refused} refused, {} accepted and run: {trained:?}",
        trained.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(refused > 100);
}
