//! The GPU code path against the CPU's: every method's tiny training step (forward, backward,
//! AdamW), with and without the PixMIM plugin, on `--device wgpu` (burn's cubecl kernels, the
//! ones burn-cuda compiles for NVIDIA cards too) equals the same run on flex.
//!
//! On a machine without a GPU the adapter is Mesa's lavapipe, a Vulkan driver that runs on the
//! CPU (Debian's `mesa-vulkan-drivers`, which `.ci/run` installs): slow, so the runs are two
//! steps of batch 4. Without any Vulkan or Metal adapter these tests fail, naming the package.
//!
//! The default build runs burn's kernels one op at a time; docs/performance.md's command ("Fusion
//! and autotune are builds") runs this file in a build with `--features
//! pixmim-cli/fusion,pixmim-cli/autotune` (fused elementwise chains, autotuned matmuls: the
//! configuration a GPU machine measures), to the same tolerances, without the method x plugin
//! runs (each plugin's device target is checked there on its own).
use pixmim::device::DeviceSpec;
use pixmim::job::{TrainOptions, TrainSummary};
use pixmim::registry::{compose, methods, plugins, Request};
use pixmim_tests::{assert_same_final_weights, out_dir, samples};

/// Two AdamW steps from the same initial weights, on `device`.
fn train(method: &str, plugins: &[&str], device: DeviceSpec, name: &str) -> TrainSummary {
    let c = compose(&Request {
        method: method.into(),
        preset: Some("tiny".into()),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
        sets: vec![
            "train.steps=2".into(),
            "train.batch_size=4".into(),
            "train.checkpoint_every=2".into(),
            format!("data.path={:?}", samples().display().to_string()),
        ],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let opts = TrainOptions {
        out: out_dir(name),
        device,
        replicas: vec![],
        resume: false,
        progress: false,
        stop_after: None,
        group: None,
    };
    c.train(&opts)
        .unwrap_or_else(|e| panic!("{method} {plugins:?} on {device}: {e}"))
}

/// Relative tolerances, wgpu against flex. Both compute in f32 but reduce in different orders
/// (cubecl's tiled matmul and its reductions against flex's gemm): the losses agree to float
/// rounding, and the weights after two AdamW steps to 1e-4 of each tensor's largest value
/// (Adam divides each gradient by its own running scale, so tiny gradients' rounding shows
/// up as updates of up to lr).
const LOSS_RTOL: f64 = 1e-5;
const WEIGHT_RTOL: f32 = 1e-4;

fn same_run(method: &str, plugins: &[&str]) {
    let wgpu = DeviceSpec::Wgpu(None);
    if let Err(e) = wgpu.device() {
        panic!("{e}\n(the GPU path's tests need a Vulkan or Metal adapter; on Debian without a GPU: apt-get install mesa-vulkan-drivers)");
    }
    let tag = format!("{method}-{}", plugins.join("+"));
    let cpu = train(
        method,
        plugins,
        DeviceSpec::Flex,
        &format!("gpu-path-flex-{tag}"),
    );
    let gpu = train(method, plugins, wgpu, &format!("gpu-path-wgpu-{tag}"));
    assert_eq!(cpu.losses.len(), 2);
    for (c, g) in cpu.losses.iter().zip(&gpu.losses) {
        assert!(
            (c - g).abs() <= LOSS_RTOL * c.abs(),
            "{method} {plugins:?}: losses on flex {:?}, on wgpu {:?}",
            cpu.losses,
            gpu.losses
        );
    }
    let worst = assert_same_final_weights(
        &cpu.out,
        &gpu.out,
        WEIGHT_RTOL,
        &format!("{method} {plugins:?} wgpu against flex"),
    );
    eprintln!(
        "{method} {plugins:?} (fusion {}, autotune {}): losses {:?} vs {:?}; largest weight \
         difference {:.2e} of scale ({})",
        pixmim::gpu_runtime::FUSION,
        pixmim::gpu_runtime::AUTOTUNE,
        cpu.losses,
        gpu.losses,
        worst.0,
        worst.1
    );
    for d in [cpu.out, gpu.out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Every registered method's step: its model's kernels.
#[test]
fn every_method_trains_on_wgpu_as_on_flex() {
    for m in methods() {
        same_run(m.name(), &[]);
    }
}

/// Every registered method with each registered plugin. A plugin changes the components
/// (its target's device path is checked on its own below), not the model's kernels, so the
/// fused build's run skips this one.
#[test]
fn every_method_with_each_plugin_trains_on_wgpu_as_on_flex() {
    for m in methods() {
        for p in plugins() {
            same_run(m.name(), &[p.name()]);
        }
    }
}

/// Each target generator's device path runs the cubecl kernels as on flex: equal to its host
/// path (the same check as component_swap's, on the GPU path).
#[test]
fn every_target_generators_device_path_on_wgpu_equals_its_host_path() {
    let wgpu = DeviceSpec::Wgpu(None);
    let seen = pixmim_tests::check_every_target_generator(&wgpu);
    eprintln!("(target, device path, error against the host path) on wgpu: {seen:?}");
}
