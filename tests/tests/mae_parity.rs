//! MAE against the official `facebookresearch/mae` code (vectors/mae/README.md): forward
//! intermediates at 1e-5 relative, every gradient at 1e-4 relative, and one AdamW step with
//! the official no-decay rule at 1e-6 absolute.
use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use pixmim::checkpoint::{export_params, import_params, HostTensor};
use pixmim::config::{NoDecayRule, OptimConfig};
use pixmim::device::DeviceSpec;
use pixmim::loss::{masked_mse, norm_pix};
use pixmim::mae::{Mae, MaeConfig};
use pixmim::masking::MaskBatch;
use pixmim::method_def::ModelConfig;
use pixmim::nn::PosEmbedOrientation;
use pixmim::optim::AdamW;
use pixmim::patchify::patchify;
use pixmim::traits::Autoencoder;
use pixmim::RunBackend as B;
use pixmim_tests::{load, max_abs_err, rel_err, vectors};

fn config() -> MaeConfig {
    MaeConfig {
        img_size: 64,
        patch_size: 8,
        embed_dim: 96,
        depth: 3,
        num_heads: 3,
        decoder_embed_dim: 64,
        decoder_depth: 2,
        decoder_num_heads: 4,
        mlp_ratio: 4.0,
        norm_pix: true,
        pos_embed: PosEmbedOrientation::Official,
    }
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn tensor<const D: usize>(h: &HostTensor, dev: &burn::DispatchDevice) -> Tensor<B, D> {
    let shape: [usize; D] = h.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(h.data.clone(), shape), dev)
}

fn reference_model(dev: &burn::DispatchDevice) -> Mae<B> {
    let weights = load(&vectors("mae").join("weights.safetensors"));
    let (model, unused) =
        import_params(config().init::<B>(dev, 0), &weights, &vectors("mae")).unwrap();
    assert!(unused.is_empty(), "weights the model lacks: {unused:?}");
    model
}

/// Replace every parameter by its gradient, so `export_params` names and lays them out.
struct GradsAsParams<'a>(&'a GradientsParams);
impl ModuleMapper<B> for GradsAsParams<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = p.consume();
        let g = self
            .0
            .get::<<B as AutodiffBackend>::InnerBackend, D>(id)
            .map(Tensor::from_inner)
            .unwrap_or_else(|| t.zeros_like());
        Param::from_mapped_value(id, g, mapper)
    }
}

#[test]
fn forward_gradients_and_adamw_step_match_the_official_code_on_ndarray() {
    parity(DeviceSpec::NdArray);
}

#[test]
fn forward_gradients_and_adamw_step_match_the_official_code_on_flex() {
    parity(DeviceSpec::Flex);
}

fn parity(spec: DeviceSpec) {
    let dev = spec.train_device().unwrap();
    let fwd = load(&vectors("mae").join("forward.safetensors"));
    let model = reference_model(&dev);
    assert_eq!(pixmim::checkpoint::count_params(&model), (473_184, 10_400));

    // Masking from the reference noise reproduces its ids_restore and mask exactly.
    let noise = &fwd["noise"];
    let masks = MaskBatch::from_noise(&noise.data, 2, 64, 0.75);
    assert_eq!(masks.len_keep, 16);
    let ids: Vec<f32> = masks.ids_restore.iter().map(|&v| v as f32).collect();
    assert_eq!(ids, fwd["ids_restore"].data);
    assert_eq!(masks.mask, fwd["mask"].data);
    let mask = masks.to_tensors::<B>(&dev);

    let imgs: Tensor<B, 4> = tensor(&fwd["imgs"], &dev);
    let check = |name: &str, got: Vec<f32>, tol: f64| {
        let e = rel_err(&got, &fwd[name].data);
        assert!(e < tol, "{name}: relative error {e:.2e} > {tol:.0e}");
    };
    check(
        "patch_embed_plus_pos",
        values(model.embed(imgs.clone())),
        1e-5,
    );
    check("latent", values(model.encode(imgs.clone(), &mask)), 1e-5);
    let pred = model.forward(imgs.clone(), &mask);
    check("pred", values(pred.clone()), 1e-5);
    let target = patchify(imgs.clone(), 8);
    check("target_patchified", values(target.clone()), 1e-6);
    check("target_norm_pix", values(norm_pix(target.clone())), 1e-5);
    check(
        "loss_without_norm_pix",
        values(masked_mse(pred.clone(), target, mask.mask.clone())),
        1e-5,
    );
    let loss = model.loss(pred, imgs, mask.mask.clone());
    check("loss", values(loss.clone()), 1e-5);

    // Gradients of every trainable parameter.
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let want = load(&vectors("mae").join("grads.safetensors"));
    let got: HashMap<String, HostTensor> =
        export_params(&model.clone().map(&mut GradsAsParams(&grads)))
            .into_iter()
            .collect();
    assert_eq!(
        want.len(),
        72,
        "every trainable parameter has a reference gradient"
    );
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g.shape, w.shape, "{name}");
        let e = rel_err(&g.data, &w.data);
        assert!(e < 1e-4, "grad {name}: relative error {e:.2e}");
    }

    // One AdamW step from the reference weights with the reference gradients (so only the
    // optimiser is under test), lr 1e-3, official no-decay rule (cls/mask tokens ARE decayed).
    drop(grads);
    let model = reference_model(&dev);
    let grads = reference_gradients(&model, &want);
    let cfg = OptimConfig {
        blr: 1e-3,
        lr: Some(1e-3),
        weight_decay: 0.05,
        betas: [0.9, 0.95],
        eps: 1e-8,
        no_decay: NoDecayRule::Official,
        clip_grad: None,
    };
    let mut opt = AdamW::<B>::new(&cfg, &model);
    let stepped = opt.step(1e-3, model, grads);
    let after = load(&vectors("mae").join("after_adamw_step.safetensors"));
    let got: HashMap<String, HostTensor> = export_params(&stepped).into_iter().collect();
    for (name, w) in &after {
        let e = max_abs_err(&got[name].data, &w.data);
        assert!(e < 1e-6, "after step {name}: abs error {e:.2e}");
    }
}

/// GradientsParams holding the reference gradients under the model's parameter ids.
fn reference_gradients(model: &Mae<B>, want: &HashMap<String, HostTensor>) -> GradientsParams {
    struct Collect(GradientsParams);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if p.is_require_grad() {
                self.0.register(p.id, p.val().inner());
            }
        }
    }
    let mut all = want.clone();
    for k in ["pos_embed", "decoder_pos_embed"] {
        let w = &load(&vectors("mae").join("weights.safetensors"))[k];
        all.insert(
            k.into(),
            HostTensor {
                shape: w.shape.clone(),
                data: vec![0.0; w.data.len()],
            },
        );
    }
    let (as_grads, _) = import_params(model.clone(), &all, &vectors("mae")).unwrap();
    let mut c = Collect(GradientsParams::new());
    as_grads.visit(&mut c);
    c.0
}

#[test]
fn base_preset_has_the_official_parameter_counts() {
    let cfg = pixmim::mae::presets::recipe("base").unwrap().model;
    let dev = DeviceSpec::Flex.train_device().unwrap();
    let model = cfg.init::<B>(&dev, 0);
    assert_eq!(
        pixmim::checkpoint::count_params(&model),
        (111_655_680, 252_160)
    );
}
