//! The registry as the facade links it: every crate under `methods/` and `plugins/` is
//! registered, and every preset of every registered method is typed code
//! (`MaeConfig::base()`, ...) declaring the (trainable, frozen) parameter counts of the
//! network it builds (each method crate's `presets::PRESETS`: the official models' published
//! or computed counts where a preset is an official model).
use std::collections::BTreeSet;
use std::path::Path;

use pixmim::registry::{compose, methods, plugins, Request};

/// The crates under `dir` of the workspace, by folder name.
fn crates_in(dir: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every method crate under `methods/` and plugin crate under `plugins/` registers through the
/// facade (each under its folder's name): a crate missing from `pixmim/Cargo.toml` fails here.
#[test]
fn every_method_and_plugin_crate_is_linked() {
    let methods: BTreeSet<String> = methods().iter().map(|m| m.name().to_string()).collect();
    let plugins: BTreeSet<String> = plugins().iter().map(|p| p.name().to_string()).collect();
    assert_eq!(
        methods,
        crates_in("methods"),
        "methods registered vs methods/"
    );
    assert_eq!(
        plugins,
        crates_in("plugins"),
        "plugins registered vs plugins/"
    );
}

#[test]
fn every_preset_builds_the_parameter_counts_its_method_declares() {
    let mut checked = 0;
    for m in methods() {
        assert!(!m.presets().is_empty(), "{} declares no preset", m.name());
        for p in m.presets() {
            let c = compose(&Request {
                method: m.name().into(),
                preset: Some(p.name.into()),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{} {}: {e}", m.name(), p.name));
            assert_eq!(
                c.count_params().unwrap(),
                (p.trainable, p.frozen),
                "{} {}: (trainable, frozen) built vs declared",
                m.name(),
                p.name
            );
            checked += 1;
        }
    }
    assert!(checked >= methods().len(), "{checked} presets checked");
}
