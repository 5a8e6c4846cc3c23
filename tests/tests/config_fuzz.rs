//! Issue 8: malformed configs and overrides never panic the parser; every refusal is a user
//! error (exit code 2) with a message, and an unknown key is named.
use std::path::PathBuf;

use pixmim::registry::{compose, Request};
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

fn method() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["mae", "convmae", "mff", "lsmae", "", "nosuch", "MAE"])
        .prop_map(str::to_string)
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
        method in prop::sample::select(vec!["mae", "convmae", "mff", "lsmae"]),
    ) {
        let r = compose(&Request {
            method: method.into(),
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
        method in prop::sample::select(vec!["mae", "convmae", "mff", "lsmae"]),
        plugins in plugins(),
        img in prop_oneof![(0u32..63).prop_map(|e| 1u64 << e), any::<u32>().prop_map(u64::from)],
        patch in prop::sample::select(vec![None, Some(0u64), Some(1), Some(4), Some(16), Some(1 << 40)]),
    ) {
        let mut sets = vec![format!("model.img_size={img}")];
        if let Some(p) = patch {
            sets.push(format!("model.patch_size={p}"));
        }
        let r = compose(&Request {
            method: method.into(),
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
