//! Every method and plugin crate, named once so the linker keeps their `inventory`
//! registrations (a crate the binary never references is dropped with them).
//! Adding a method: add its crate to cli/Cargo.toml and one line here.
pub use pixmim_convmae as _;
pub use pixmim_lsmae as _;
pub use pixmim_mae as _;
pub use pixmim_mff as _;
pub use pixmim_plugin_pixmim as _;
