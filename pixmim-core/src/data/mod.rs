//! Datasets and the batch pipeline.
pub mod bad_files;
pub mod complete;
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod pack;
pub mod seed;
pub mod shards;

pub use bad_files::BadFiles;
pub use dataset::Dataset;
pub use loader::{Batch, Loader};
