//! Datasets and the batch pipeline.
pub mod bad_files;
pub mod complete;
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod seed;

pub use bad_files::BadFiles;
pub use dataset::Dataset;
pub use loader::{Batch, Loader};
