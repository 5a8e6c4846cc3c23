//! Links every method and plugin crate this crate depends on, so that adding one is one line in
//! `Cargo.toml` (`pixmim-NAME = { path = "../methods/NAME" }`): a crate the final binary never
//! references is not linked, and its `inventory` registrations would vanish. Writes
//! `pub use pixmim_NAME as NAME;` for each `pixmim-*` dependency but the core, and for each
//! method crate (one under `methods/`) the registration of its `METHOD`: the generic engine
//! is compiled here, once per model type, rather than in every method crate and again in
//! each crate's unit-test build.
use std::fmt::Write;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=../methods");
    let manifest = std::fs::read_to_string("Cargo.toml").expect("read pixmim/Cargo.toml");
    let mut section = String::new();
    let mut out = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some(name) = line.split(['=', ' ']).next() else {
            continue;
        };
        if section != "[dependencies]" || !name.starts_with("pixmim-") || name == "pixmim-core" {
            continue;
        }
        let krate = name.replace('-', "_");
        let alias = krate.trim_start_matches("pixmim_");
        writeln!(out, "pub use {krate} as {alias};").unwrap();
        if Path::new("../methods")
            .join(alias)
            .join("Cargo.toml")
            .exists()
        {
            writeln!(
                out,
                "pixmim_core::inventory::submit! {{ \
                 pixmim_core::registry::MethodRegistration(&{krate}::METHOD) }}"
            )
            .unwrap();
        }
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("linked.rs");
    std::fs::write(dest, out).expect("write linked.rs");
}
