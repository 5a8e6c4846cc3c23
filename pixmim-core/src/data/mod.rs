//! Datasets and the batch pipeline.
pub mod dataset;
pub mod loader;
pub mod seed;

pub use dataset::Dataset;
pub use loader::{Batch, Loader};
