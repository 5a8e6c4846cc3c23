//! The one implementation of [`Method`] every method crate uses: a method is its model
//! config ([`ModelConfig`]: parse, geometry, init), its presets (typed [`Recipe`]s, each with
//! the parameter counts it builds) and one definition, `METHOD`, which the `pixmim` facade
//! registers (so this impl's jobs are compiled once per model type, in the facade, not in every
//! method crate and its unit-test build).
//!
//! ```ignore
//! pub static METHOD: MethodDef<MaeConfig> = MethodDef {
//!     name: "mae",
//!     description: "Masked Autoencoder ...",
//!     presets: presets::PRESETS,
//!     recipe: presets::recipe,
//!     official_layout: OfficialLayout::PLAIN,
//!     model: PhantomData,
//! };
//! ```
use std::marker::PhantomData;

use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::DispatchDevice;
use toml::Table;

use crate::checkpoint::count_params;
use crate::device::DeviceSpec;
use crate::engine::data_parallel::on_step_threads;
use crate::error::Result;
use crate::job::{
    ClassifyOptions, FeatureOptions, Features, FinetuneOptions, FinetuneSummary, ImportOptions,
    ImportReport, ReconstructOptions, StepBenchOptions, StepTiming, TrainOptions, TrainSummary,
    ViewLogits,
};
use crate::recipe::Recipe;
use crate::registry::{Composed, Geometry, Method, PresetDef};
use crate::state_dict::OfficialLayout;
use crate::traits::Autoencoder;
use crate::RunBackend;

/// A method's network as its `[model]` table describes it: the one place its config is
/// parsed, checked and built (no inherent copies of these to forward to).
pub trait ModelConfig:
    serde::Serialize + serde::de::DeserializeOwned + Sized + Send + Sync + 'static
{
    /// The network on backend `B`.
    type Model<B: Backend>: Autoencoder<B>;
    /// Check the values; errors name the key (`model.depth`).
    fn validate(&self) -> Result<()>;
    /// Parse `[model]` (unknown keys refused by name) and validate it.
    fn from_table(model: &Table) -> Result<Self> {
        let c: Self = crate::config::parse_params(model, "model")?;
        c.validate()?;
        Ok(c)
    }
    /// What the data pipeline must produce for this network.
    fn geometry(&self) -> Result<Geometry>;
    /// The network with its official initialisation, from `seed`.
    fn init<B: Backend>(&self, device: &B::Device, seed: u64) -> Self::Model<B>;
    /// Floats of activations autodiff keeps per training image with `visible` tokens kept
    /// (the memory pre-flight); `None` leaves activations out of the estimate.
    fn activation_floats_per_image(&self, _visible: usize) -> Option<f64> {
        None
    }
}

/// A registered method: names, presets and checkpoint layout around the model config `C`.
pub struct MethodDef<C> {
    pub name: &'static str,
    pub description: &'static str,
    /// The presets, the default first, with the parameter counts each builds.
    pub presets: &'static [PresetDef],
    /// A preset's recipe by name (the first config layer of a run).
    pub recipe: fn(&str) -> Option<Recipe<C>>,
    /// How the official code's state dict differs from pixmim's names and shapes.
    pub official_layout: OfficialLayout,
    pub model: PhantomData<fn() -> C>,
}

/// `C`'s network on the run's backend.
type Model<C> = <C as ModelConfig>::Model<RunBackend>;

impl<C: ModelConfig> MethodDef<C>
where
    Model<C>: AutodiffModule<RunBackend> + 'static,
{
    /// `job(c, build)` on the step threads, where every job runs so that the matrix products
    /// and host kernels of its passes share the thread that runs them
    /// ([`crate::engine::data_parallel::on_step_threads`]).
    fn run<R: Send>(
        &self,
        c: &Composed,
        job: impl FnOnce(&(dyn Fn(&DispatchDevice, u64) -> Model<C> + Sync)) -> Result<R> + Send,
    ) -> Result<R> {
        let cfg = C::from_table(&c.model_table())?;
        on_step_threads(move || {
            job(&|device: &DispatchDevice, seed| cfg.init::<RunBackend>(device, seed))
        })?
    }
}

impl<C: ModelConfig> Method for MethodDef<C>
where
    Model<C>: AutodiffModule<RunBackend> + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn presets(&self) -> &'static [PresetDef] {
        self.presets
    }
    fn preset(&self, name: &str) -> Option<Table> {
        (self.recipe)(name).map(|r| r.to_table())
    }
    fn geometry(&self, model: &Table) -> Result<Geometry> {
        C::from_table(model)?.geometry()
    }
    fn official_layout(&self) -> OfficialLayout {
        self.official_layout
    }
    fn activation_floats_per_image(&self, model: &Table, visible: usize) -> Result<Option<f64>> {
        Ok(C::from_table(model)?.activation_floats_per_image(visible))
    }
    fn count_params(&self, c: &Composed) -> Result<(usize, usize)> {
        self.run(c, |build| {
            let model = build(&DeviceSpec::NdArray.train_device()?, c.seed);
            Ok(count_params(&model))
        })
    }
    fn train(&self, c: &Composed, opts: &TrainOptions) -> Result<TrainSummary> {
        self.run(c, |build| crate::engine::train::train(c, opts, build))
    }
    fn bench_step(&self, c: &Composed, opts: &StepBenchOptions) -> Result<StepTiming> {
        self.run(c, |build| {
            crate::engine::step_bench::time_steps(c, opts, build)
        })
    }
    fn reconstruct(&self, c: &Composed, opts: ReconstructOptions<'_>) -> Result<usize> {
        self.run(c, |build| {
            crate::engine::reconstruct::reconstruct(c, opts, build)
        })
    }
    fn import(&self, c: &Composed, opts: &ImportOptions) -> Result<ImportReport> {
        self.run(c, |build| crate::interop::import_into(c, opts, build))
    }
    fn features(&self, c: &Composed, opts: &FeatureOptions) -> Result<Features> {
        self.run(c, |build| crate::eval::features::extract(c, opts, build))
    }
    fn finetune(&self, c: &Composed, opts: &FinetuneOptions) -> Result<FinetuneSummary> {
        self.run(c, |build| crate::eval::finetune::finetune(c, opts, build))
    }
    fn classify(
        &self,
        c: &Composed,
        opts: &ClassifyOptions,
        on_view: &mut (dyn FnMut(ViewLogits<'_>) + Send),
    ) -> Result<()> {
        self.run(c, |build| {
            crate::eval::classify::classify(c, opts, on_view, build)
        })
    }
}
