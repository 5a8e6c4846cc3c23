//! A fine-tuned classifier (`pixmim eval finetune`'s encoder, `fc_norm` and `head`) applied to
//! every image of a set under one or more views: the logits that robustness
//! ([`super::robustness`]) and shape bias ([`super::shape_bias`]) are computed from. The
//! classifier is loaded once for all views.
use std::collections::HashMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::DispatchDevice;

use super::features::all_visible_tensors;
use super::finetune::{Classifier, ClassifierHead};
use crate::checkpoint::{import_params, read_safetensors, refuse_unused, HostTensor};
use crate::error::{Error, Result};
use crate::job::{ClassifyOptions, ViewLogits};
use crate::registry::Composed;
use crate::traits::Autoencoder;
use crate::RunBackend;

type B = RunBackend;

/// Each view's logits (N, classes) over `opts.data`, in order, handed to `on_view` as each
/// view finishes.
pub fn classify<M, F>(
    c: &Composed,
    opts: &ClassifyOptions,
    on_view: &mut (dyn FnMut(ViewLogits<'_>) + Send),
    build: F,
) -> Result<()>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    let device = opts.device.train_device()?;
    let classifier = load_classifier(c, opts, build(&device, c.seed), &device)?;
    let classes = classifier.head.head.weight.dims()[1];
    let data = &opts.data.dataset;
    if let Some(&y) = data.labels.iter().flatten().find(|&&y| y >= classes) {
        return Err(Error::data(
            &data.root,
            format!(
                "has label {y}; the classifier in {} has {classes} classes",
                opts.checkpoint.display()
            ),
        ));
    }
    for (view, v) in opts.views.iter().enumerate() {
        let logits = classifier.logits(
            c,
            &opts.data,
            v.transform.as_ref(),
            v.seed,
            opts.batch_size,
            &device,
        )?;
        on_view(ViewLogits {
            view,
            classes,
            logits: &logits,
        });
    }
    Ok(())
}

/// The encoder and `fc_norm` + `head` from a fine-tuned file; anything else in it, or a
/// missing head, is an error naming the file.
fn load_classifier<M: Autoencoder<B> + AutodiffModule<B>>(
    c: &Composed,
    opts: &ClassifyOptions,
    model: M,
    device: &DispatchDevice,
) -> Result<Classifier<M>> {
    let path = &opts.checkpoint;
    let (tensors, _) = read_safetensors(path)?;
    let (head_t, model_t): (HashMap<String, HostTensor>, HashMap<String, HostTensor>) = tensors
        .into_iter()
        .filter(|(k, _)| crate::checkpoint::is_model_key(k))
        .partition(|(k, _)| k.starts_with("fc_norm.") || k.starts_with("head."));
    let [classes, dim] = head_shape(&head_t, path)?;
    let (encoder, unused) = import_params(model, &model_t, path)?;
    let (head, unused_head) = import_params(
        ClassifierHead::<B>::new(dim, classes, 0, device),
        &head_t,
        path,
    )?;
    let unused: Vec<String> = unused.into_iter().chain(unused_head).collect();
    refuse_unused(path, &unused)?;
    let encoder = encoder.with_drop_path(0.0).no_grad();
    // The encoder's width must be what the head takes.
    let probe = encoder.encode(
        Tensor::zeros([1, 3, c.geometry.image.0, c.geometry.image.1], device),
        &all_visible_tensors(c, 1, device),
    );
    if probe.dims()[2] != dim {
        return Err(Error::Checkpoint {
            path: path.clone(),
            msg: format!(
                "its head takes {dim} features; the encoder gives {}",
                probe.dims()[2]
            ),
        });
    }
    Ok(Classifier {
        encoder,
        head: head.no_grad(),
        pool: opts.pool,
    })
}

/// (classes, features) of the `head.weight` a fine-tuned file holds.
fn head_shape(tensors: &HashMap<String, HostTensor>, path: &Path) -> Result<[usize; 2]> {
    let shape = tensors.get("head.weight").map(|t| t.shape.as_slice());
    shape
        .and_then(|s| <[usize; 2]>::try_from(s).ok())
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: "has no classifier head (`head.weight`): pass the finetuned.safetensors \
                  that `pixmim eval finetune` writes"
                .into(),
        })
}

/// Refuse a file that is not a fine-tuned classifier before any evaluation starts.
pub fn check_classifier_file(path: &Path) -> Result<()> {
    head_shape(&read_safetensors(path)?.0, path).map(|_| ())
}
