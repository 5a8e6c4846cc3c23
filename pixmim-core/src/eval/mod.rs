//! How a user tells whether pretraining worked (paper §4): frozen features
//! ([`features`]), weighted kNN ([`knn`]), MAE's linear probe ([`linear_probe`]) and
//! end-to-end fine-tuning ([`finetune`], with [`crate::augment::mixup`]); accuracy under
//! common corruptions ([`robustness`]); shape bias on cue-conflict images ([`shape_bias`]),
//! both from a fine-tuned classifier's logits ([`classify`]); and whether a difference between runs is bigger than
//! the seed-to-seed noise ([`compare`]).
pub mod classify;
pub mod compare;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear_probe;
pub mod robustness;
pub mod shape_bias;

pub use knn::{knn_classify, KnnResult};
pub use linear_probe::{linear_probe, LinearProbeConfig, ProbeOptimizer};
