//! pixmim with every method and plugin crate linked.
//!
//! Methods and plugins register by name with `inventory`, and a crate the final binary never
//! references is not linked, so its registrations vanish. This crate references each of them
//! once (`pixmim::mae`, `pixmim::plugin_pixmim`, ...: `build.rs` writes a `pub use` for every
//! `pixmim-*` dependency); depend on it (the CLI and the tests do) and every method and plugin
//! is there. Adding a method or plugin crate is one line in this crate's `Cargo.toml`; the test
//! at the bottom fails until it is there.
pub use pixmim_core::*;

include!(concat!(env!("OUT_DIR"), "/linked.rs"));

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

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

    /// Every method crate under `methods/` and plugin crate under `plugins/` registers through
    /// this crate (each registers under its folder's name).
    #[test]
    fn every_method_and_plugin_crate_is_linked() {
        let methods: BTreeSet<String> = crate::registry::methods()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        let plugins: BTreeSet<String> = crate::registry::plugins()
            .iter()
            .map(|p| p.name().to_string())
            .collect();
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
}
