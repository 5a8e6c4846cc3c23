//! pixmim with every method and plugin crate linked.
//!
//! Methods and plugins register by name with `inventory`, and a crate the final binary never
//! references is not linked, so its registrations vanish. This crate references each of them
//! once (`pixmim::mae`, `pixmim::plugin_pixmim`, ...: `build.rs` writes a `pub use` for every
//! `pixmim-*` dependency) and registers each method crate's `METHOD`, so the generic engine is
//! compiled here for each model; depend on it (the CLI and the tests do) and every method and
//! plugin is there. Adding a method or plugin crate is one line in this crate's `Cargo.toml`;
//! `tests/tests/registry.rs` fails until it is there.
pub use pixmim_core::*;

include!(concat!(env!("OUT_DIR"), "/linked.rs"));
