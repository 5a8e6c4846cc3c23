//! Issue 24: a component is one `--set section.name=...` away on every method's presets: the
//! earlier layers' keys the new component does not take are dropped, the user's own are
//! checked strictly, and each registration declares exactly the keys its parser takes.
use pixmim::registry::component_names;
use pixmim::registry::{component_param_keys, compose, methods, Request, COMPONENT_SECTIONS};
use pixmim::traits::{Augmentation, Corruption, TargetGenerator};

fn names(section: &str) -> Vec<&'static str> {
    let v = match section {
        "augmentation" => component_names::<dyn Augmentation>(),
        "masking" => component_names::<dyn Corruption>(),
        _ => component_names::<dyn TargetGenerator>(),
    };
    v.into_iter().map(|(n, _)| n).collect()
}

fn request(method: &str, preset: &str, sets: &[String]) -> Request {
    Request {
        method: method.into(),
        preset: Some(preset.into()),
        sets: sets.to_vec(),
        ..Default::default()
    }
}

#[test]
fn every_component_swaps_in_by_name_on_every_preset() {
    let mut swaps = 0;
    for m in methods() {
        for preset in m.presets().iter().map(|p| p.name) {
            for section in COMPONENT_SECTIONS {
                for name in names(section) {
                    let sets = vec![format!("{section}.name={name:?}")];
                    let c = compose(&request(m.name(), preset, &sets)).unwrap_or_else(|e| {
                        panic!("{} {preset}: --set {section}.name={name}: {e}", m.name())
                    });
                    let t = c.table[section].as_table().unwrap();
                    assert_eq!(t["name"].as_str(), Some(name));
                    let keys = component_param_keys(section, name).unwrap();
                    for k in t.keys().filter(|k| *k != "name") {
                        assert!(
                            keys.contains(&k.as_str()),
                            "{} {preset}: `{section}.{k}` left behind for `{name}`",
                            m.name()
                        );
                    }
                    swaps += 1;
                }
            }
        }
    }
    assert!(swaps >= 4 * 2 * 3, "only {swaps} swaps tried");
}

#[test]
fn swapping_keeps_shared_keys_and_checks_the_users_own() {
    // RRC -> center_crop: `interpolation` carries over, `scale`/`ratio`/`hflip` go.
    let c = compose(&request(
        "mae",
        "tiny",
        &["augmentation.name=\"center_crop\"".into()],
    ))
    .unwrap();
    let a = c.table["augmentation"].as_table().unwrap();
    assert_eq!(a["interpolation"].as_str(), Some("bicubic"));
    assert!(
        a.get("scale").is_none() && a.get("hflip").is_none(),
        "{a:?}"
    );
    // A key the user gives beside the new name is still refused when it does not fit.
    let e = compose(&request(
        "mae",
        "tiny",
        &[
            "augmentation.name=\"center_crop\"".into(),
            "augmentation.scale=[0.5, 1.0]".into(),
        ],
    ))
    .err()
    .expect("scale is not a center_crop key");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("scale"), "{e}");
    // The same swap from a config file layer.
    let dir = std::env::temp_dir().join(format!("pixmim-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("swap.toml");
    std::fs::write(&file, "[target]\nname = \"lowpass\"\nradius = 6.0\n").unwrap();
    let c = compose(&Request {
        config_file: Some(file),
        ..request("mae", "tiny", &[])
    })
    .unwrap();
    assert_eq!(c.table["target"]["radius"].as_float(), Some(6.0));
    // Back from PixMIM's low-pass to pixels: the plugin's radius does not stay behind.
    let c = compose(&Request {
        plugins: vec!["pixmim".into()],
        ..request("convmae", "tiny", &["target.name=\"pixel\"".into()])
    })
    .unwrap();
    assert_eq!(c.table["target"].as_table().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each registration's `params` list is what its parser accepts: serde's refusal of an
/// unknown key lists the fields it expected.
#[test]
fn declared_params_match_what_each_component_parses() {
    let geometry = pixmim::registry::Geometry {
        image: (32, 32),
        mask_grid: (8, 8),
    };
    for section in COMPONENT_SECTIONS {
        for name in names(section) {
            let mut probe = toml::Table::new();
            probe.insert("not_a_key".into(), 1.into());
            let msg = match section {
                "augmentation" => {
                    pixmim::registry::build_augmentation(name, &probe, &geometry).err()
                }
                "target" => pixmim::registry::build_target(name, &probe, &geometry).err(),
                _ => pixmim::registry::build_masking(name, &probe, &geometry).err(),
            }
            .expect("an unknown key is refused")
            .to_string();
            // "unknown field `not_a_key`, expected `a`, `b` or `c`" / "there are no fields".
            let listed = msg.split_once("expected").map_or("", |(_, l)| l);
            let mut expected: Vec<String> = listed
                .split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect();
            expected.sort();
            let mut declared: Vec<String> = component_param_keys(section, name)
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect();
            declared.sort();
            assert_eq!(declared, expected, "{section} `{name}`: {msg}");
        }
    }
}

/// Every registered augmentation and target generator trains with every method's tiny preset:
/// two steps on the sample photos with finite losses (the loss-falls tests train longer).
#[test]
fn every_augmentation_and_target_trains_with_every_method() {
    use pixmim::device::DeviceSpec;
    use pixmim::job::TrainOptions;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let mut runs = 0;
    for m in methods() {
        for section in ["augmentation", "target"] {
            for name in names(section) {
                let mut sets = vec![
                    format!("{section}.name={name:?}"),
                    format!("data.path={:?}", samples.display().to_string()),
                    "train.steps=2".to_string(),
                    "train.batch_size=4".to_string(),
                ];
                if name == "background_crop" {
                    // The sample photos have no alpha: their non-black pixels are the object.
                    sets.push("augmentation.masks=\"non_black\"".into());
                }
                let c = compose(&request(m.name(), "tiny", &sets))
                    .unwrap_or_else(|e| panic!("{} {section}={name}: {e}", m.name()));
                let out = std::env::temp_dir().join(format!(
                    "pixmim-swap-{}-{name}-{}",
                    m.name(),
                    std::process::id()
                ));
                let _ = std::fs::remove_dir_all(&out);
                let s = c
                    .train(&TrainOptions::new(&out, DeviceSpec::Flex))
                    .unwrap_or_else(|e| panic!("{} {section}={name}: {e}", m.name()));
                assert_eq!(s.losses.len(), 2, "{} {section}={name}", m.name());
                assert!(
                    s.losses.iter().all(|l| l.is_finite() && *l > 0.0),
                    "{} {section}={name}: {:?}",
                    m.name(),
                    s.losses
                );
                let _ = std::fs::remove_dir_all(&out);
                runs += 1;
            }
        }
    }
    // Four methods x (rrc, src, center_crop, resize, background_crop + pixel, lowpass,
    // highpass, adaptive_lowpass) at least.
    assert!(runs >= 4 * 9, "only {runs} runs");
}

/// `background_crop` needs each image's object mask: photos without alpha are a data error
/// naming the file (under `data.on_error = "fail"`), never a silent crop of anything.
#[test]
fn background_crop_without_masks_is_a_data_error_naming_the_image() {
    use pixmim::device::DeviceSpec;
    use pixmim::job::TrainOptions;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let sets = vec![
        "augmentation.name=\"background_crop\"".to_string(),
        format!("data.path={:?}", samples.display().to_string()),
        "train.steps=1".to_string(),
        "train.batch_size=2".to_string(),
    ];
    let c = compose(&request("mae", "tiny", &sets)).unwrap();
    let out = std::env::temp_dir().join(format!("pixmim-bg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let e = c
        .train(&TrainOptions::new(&out, DeviceSpec::Flex))
        .expect_err("no alpha, no masks")
        .to_string();
    assert!(e.contains("alpha") && e.contains("data/samples"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The target a run trains on is the one its config names, whichever path makes it.
#[test]
fn every_target_generators_paths_agree_on_the_cpu_and_none_is_raw_pixels_by_default() {
    let seen = pixmim_tests::check_every_target_generator(&pixmim::device::DeviceSpec::Flex);
    eprintln!("(target, device path, error against the host path): {seen:?}");
}
