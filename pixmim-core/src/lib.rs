//! pixmim-core: the parts every masked-image-modeling method shares.
//!
//! A MIM method is four parts (numerics §0, PixMIM paper §3.1):
//! an [`Augmentation`](traits::Augmentation) (image -> training view, in data workers),
//! a [`Corruption`](traits::Corruption) (which patches are removed),
//! a [`TargetGenerator`](traits::TargetGenerator) (what the decoder must predict) and
//! an [`Autoencoder`](traits::Autoencoder) (encoder + decoder).
//! A [`Method`](registry::Method) bundles defaults for all four plus presets; a
//! [`Plugin`](registry::Plugin) swaps some of them. Both register by name with `inventory`.

pub mod analyze;
pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod component;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod gpu_runtime;
pub mod image_grid;
pub mod init;
pub mod interop;
pub mod job;
pub mod log;
pub mod loss;
pub mod mask;
pub mod masking;
pub mod memory;
pub mod method_def;
#[cfg(test)]
mod module_graph;
pub mod nn;
pub mod npy;
pub mod object_mask;
pub mod optim;
pub mod out_dir;
pub mod patchify;
pub mod preview;
pub mod recipe;
pub mod registry;
pub mod robustness;
pub mod state_dict;
pub mod target;
pub mod tensorboard;
pub mod traits;

pub use error::{Error, Result};

/// The backend every registered method runs on: burn's `Dispatch`, whose device picks
/// flex, ndarray or cuda at run time, so the registry needs no backend generics.
pub type RunBackend = burn::Dispatch;

/// ImageNet normalisation constants (numerics §1.1).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet normalisation constants (numerics §1.1).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

// Re-exported so method crates can register without naming inventory themselves.
pub use inventory;
