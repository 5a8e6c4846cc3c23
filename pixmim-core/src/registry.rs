//! Methods, plugins and components register by name with `inventory`; `compose` builds a run
//! from a method, its preset, plugins and the user's overrides.
//!
//! Pitfall: a crate the final binary never references is not linked and its registrations
//! vanish. The CLI names every method and plugin crate once (`cli/src/linked.rs`).
use std::path::Path;
use std::sync::Arc;
use toml::{Table, Value};

pub use crate::component::{
    AugmentationRegistration, ComponentRegistration, CorruptionRegistration, Geometry,
    TargetRegistration, MAX_IMAGE_SIDE,
};
use crate::config::{self, DataConfig, OptimConfig, ScheduleConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::job::{
    ClassifyOptions, FeatureOptions, Features, FinetuneOptions, FinetuneSummary, ImportOptions,
    ImportReport, ReconstructOptions, StepBenchOptions, StepTiming, TrainOptions, TrainSummary,
    ViewLogits,
};
use crate::state_dict::OfficialLayout;
pub use crate::traits::Parts;
use crate::traits::{Augmentation, Corruption, TargetGenerator};

/// A MIM method: its presets, and the entry points that run its model.
pub trait Method: Sync + Send {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// The presets, the default first.
    fn presets(&self) -> &'static [PresetDef];
    /// A preset as a full run-config table (model, augmentation, masking, target, optim, ...).
    fn preset(&self, name: &str) -> Option<Table>;
    /// Validate `[model]` and say what the data pipeline must produce.
    fn geometry(&self, model: &Table) -> Result<Geometry>;
    /// How the official code's state dict names and shapes this method's parameters, where
    /// it differs from pixmim's checkpoint (`pixmim import` / `export`).
    fn official_layout(&self) -> OfficialLayout;
    /// Floats of activations autodiff keeps per training image with `visible_tokens` patches
    /// (or mask cells) kept, for the memory pre-flight ([`crate::memory`]); `None` leaves
    /// activations out of the estimate (and says so).
    fn activation_floats_per_image(
        &self,
        model: &Table,
        visible_tokens: usize,
    ) -> Result<Option<f64>>;

    // The jobs, each run with this method's model. Method crates get them from
    // `crate::method_def::MethodDef`, which monomorphises the generic engine for the model.

    /// (trainable, frozen) parameters.
    fn count_params(&self, c: &Composed) -> Result<(usize, usize)>;
    /// Pretrain (or resume) a run.
    fn train(&self, c: &Composed, opts: &TrainOptions) -> Result<TrainSummary>;
    /// Time training steps on synthetic images (`pixmim bench`).
    fn bench_step(&self, c: &Composed, opts: &StepBenchOptions) -> Result<StepTiming>;
    /// Batches through trained weights loaded once, each handed to `opts.each`; returns how
    /// many went through.
    fn reconstruct(&self, c: &Composed, opts: ReconstructOptions<'_>) -> Result<usize>;
    /// Load a foreign state dict into the model and save it as a pixmim checkpoint.
    fn import(&self, c: &Composed, opts: &ImportOptions) -> Result<ImportReport>;
    /// Frozen encoder features of a labelled dataset (kNN, linear probe).
    fn features(&self, c: &Composed, opts: &FeatureOptions) -> Result<Features>;
    /// Encoder + classifier head trained end to end.
    fn finetune(&self, c: &Composed, opts: &FinetuneOptions) -> Result<FinetuneSummary>;
    /// A fine-tuned classifier's logits on a set under each of `opts.views`, handed to
    /// `on_view` view by view.
    fn classify(
        &self,
        c: &Composed,
        opts: &ClassifyOptions,
        on_view: &mut (dyn FnMut(ViewLogits<'_>) + Send),
    ) -> Result<()>;
}

/// A preset as its method crate declares it: the name, and the (trainable, frozen) parameter
/// counts of the network it builds, which the conformance tests check against the model (the
/// official models' published counts where a preset is an official model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresetDef {
    pub name: &'static str,
    pub trainable: usize,
    pub frozen: usize,
}

/// A plugin swaps parts of whatever method it is composed with.
pub trait Plugin: Sync + Send {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Rewrite the resolved config (before the user's file and `--set`s, which win).
    fn apply(&self, cfg: &mut Table) -> Result<()>;
}

pub struct MethodRegistration(pub &'static dyn Method);
pub struct PluginRegistration(pub &'static dyn Plugin);

inventory::collect!(MethodRegistration);
inventory::collect!(PluginRegistration);

pub fn methods() -> Vec<&'static dyn Method> {
    let mut v: Vec<_> = inventory::iter::<MethodRegistration>
        .into_iter()
        .map(|r| r.0)
        .collect();
    v.sort_by_key(|m| m.name());
    v
}

pub fn plugins() -> Vec<&'static dyn Plugin> {
    let mut v: Vec<_> = inventory::iter::<PluginRegistration>
        .into_iter()
        .map(|r| r.0)
        .collect();
    v.sort_by_key(|m| m.name());
    v
}

pub fn method(name: &str) -> Result<&'static dyn Method> {
    methods()
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| {
            let known: Vec<_> = methods().iter().map(|m| m.name()).collect();
            Error::config(
                "method",
                format!("unknown method `{name}`; known: {}", known.join(", ")),
            )
        })
}

pub fn plugin(name: &str) -> Result<&'static dyn Plugin> {
    plugins()
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| {
            let known: Vec<_> = plugins().iter().map(|m| m.name()).collect();
            Error::config(
                "plugins",
                format!("unknown plugin `{name}`; known: {}", known.join(", ")),
            )
        })
}

fn component<T: ?Sized + 'static>(section: &str, cfg: &Table, geometry: &Geometry) -> Result<Box<T>>
where
    ComponentRegistration<T>: inventory::Collect,
{
    let name = config::component_name(cfg, section)?;
    let params = config::component_params(cfg, section);
    let entries: Vec<&ComponentRegistration<T>> = inventory::iter::<ComponentRegistration<T>>
        .into_iter()
        .collect();
    match entries.iter().find(|e| e.name == name) {
        Some(e) => (e.build)(&params, geometry),
        None => {
            let mut known: Vec<_> = entries.iter().map(|e| e.name).collect();
            known.sort();
            Err(Error::config(
                format!("{section}.name"),
                format!("unknown {section} `{name}`; known: {}", known.join(", ")),
            ))
        }
    }
}

/// Build a registered component by name outside a run config (one `[section]` holding
/// `name` and `params`).
fn build_named<T: ?Sized + 'static>(
    section: &str,
    name: &str,
    params: &Table,
    geometry: &Geometry,
) -> Result<Box<T>>
where
    ComponentRegistration<T>: inventory::Collect,
{
    let mut t = Table::new();
    let mut s = params.clone();
    s.insert("name".into(), name.into());
    t.insert(section.into(), s.into());
    component::<T>(section, &t, geometry)
}

/// Build a registered target generator by name (for `pixmim target`).
pub fn build_target(
    name: &str,
    params: &Table,
    geometry: &Geometry,
) -> Result<Box<dyn TargetGenerator>> {
    build_named("target", name, params, geometry)
}

/// Build a registered augmentation by name (analyses and evaluation transforms).
pub fn build_augmentation(
    name: &str,
    params: &Table,
    geometry: &Geometry,
) -> Result<Box<dyn Augmentation>> {
    build_named("augmentation", name, params, geometry)
}

/// The sections that name a swappable component.
pub const COMPONENT_SECTIONS: [&str; 3] = ["augmentation", "masking", "target"];

/// The keys the component `name` of `section` takes, if one is registered.
pub fn component_param_keys(section: &str, name: &str) -> Option<&'static [&'static str]> {
    fn find<T: ?Sized + 'static>(name: &str) -> Option<&'static [&'static str]>
    where
        ComponentRegistration<T>: inventory::Collect,
    {
        inventory::iter::<ComponentRegistration<T>>
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.params)
    }
    match section {
        "augmentation" => find::<dyn Augmentation>(name),
        "masking" => find::<dyn Corruption>(name),
        "target" => find::<dyn TargetGenerator>(name),
        _ => None,
    }
}

/// Apply one config layer with `apply`. Where the layer switches a component section to
/// another `name`, the keys of that section from earlier layers that the new component does
/// not take are dropped (`--set augmentation.name=center_crop` on an RRC preset leaves no
/// `scale` behind); keys the layer gives itself (`given(section, key)`) stay, so they are
/// still validated strictly. Keys both components take (`hflip`, `interpolation`) carry over.
fn apply_layer(
    table: &mut Table,
    apply: impl FnOnce(&mut Table) -> Result<()>,
    given: impl Fn(&Table, &str, &str) -> bool,
) -> Result<()> {
    let before = table.clone();
    apply(table)?;
    let name = |t: &Table, s: &str| {
        t.get(s)
            .and_then(|v| v.get("name"))
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    for section in COMPONENT_SECTIONS {
        let new = name(table, section);
        if new == name(&before, section) {
            continue;
        }
        let Some(keys) = new
            .as_deref()
            .and_then(|n| component_param_keys(section, n))
        else {
            continue; // an unknown name is refused later, naming it
        };
        if let Some(Value::Table(t)) = table.get_mut(section) {
            t.retain(|k, _| k == "name" || keys.contains(&k) || given(&before, section, k));
        }
    }
    Ok(())
}

/// Build a registered masking by name.
pub fn build_masking(
    name: &str,
    params: &Table,
    geometry: &Geometry,
) -> Result<Box<dyn Corruption>> {
    build_named("masking", name, params, geometry)
}

/// Names and descriptions of registered components of one kind, for `pixmim list`.
pub fn component_names<T: ?Sized + 'static>() -> Vec<(&'static str, &'static str)>
where
    ComponentRegistration<T>: inventory::Collect,
{
    let mut v: Vec<_> = inventory::iter::<ComponentRegistration<T>>
        .into_iter()
        .map(|e| (e.name, e.description))
        .collect();
    v.sort();
    v
}

/// The names of `method`'s presets, the default first.
pub fn preset_names(method: &dyn Method) -> Vec<&'static str> {
    method.presets().iter().map(|p| p.name).collect()
}

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    pub preset: Option<String>,
    pub plugins: Vec<String>,
    pub config_file: Option<std::path::PathBuf>,
    pub sets: Vec<String>,
}

/// A fully resolved and validated run.
pub struct Composed {
    /// The whole config, as written to `OUT/config.toml`.
    pub table: Table,
    pub method: &'static dyn Method,
    pub plugins: Vec<&'static dyn Plugin>,
    pub seed: u64,
    pub geometry: Geometry,
    /// Augmentation, masking and target generator, shared with the data workers.
    pub parts: Arc<Parts>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainConfig,
    pub data: DataConfig,
}

/// The library API: each job of the composed method, with its own result type.
impl Composed {
    pub fn count_params(&self) -> Result<(usize, usize)> {
        self.method.count_params(self)
    }
    pub fn train(&self, opts: &TrainOptions) -> Result<TrainSummary> {
        self.method.train(self, opts)
    }
    pub fn bench_step(&self, opts: &StepBenchOptions) -> Result<StepTiming> {
        self.method.bench_step(self, opts)
    }
    pub fn reconstruct(&self, opts: ReconstructOptions<'_>) -> Result<usize> {
        self.method.reconstruct(self, opts)
    }
    pub fn import(&self, opts: &ImportOptions) -> Result<ImportReport> {
        self.method.import(self, opts)
    }
    pub fn features(&self, opts: &FeatureOptions) -> Result<Features> {
        self.method.features(self, opts)
    }
    pub fn finetune(&self, opts: &FinetuneOptions) -> Result<FinetuneSummary> {
        self.method.finetune(self, opts)
    }
    pub fn classify(
        &self,
        opts: &ClassifyOptions,
        on_view: &mut (dyn FnMut(ViewLogits<'_>) + Send),
    ) -> Result<()> {
        self.method.classify(self, opts, on_view)
    }

    /// Replace the run length of the preset (`--steps` / `--epochs`): in the table written to
    /// `config.toml` and in the parsed `[train]`, which is re-read from it so the two agree.
    pub fn set_run_length(&mut self, steps: Option<usize>, epochs: Option<f64>) -> Result<()> {
        let t = self.train_table()?;
        if let Some(s) = steps {
            t.insert("steps".into(), Value::Integer(s as i64));
        }
        if let Some(e) = epochs {
            t.insert("epochs".into(), Value::Float(e));
            t.remove("steps");
        }
        self.train = config::section(&self.table, "train")?;
        self.train.validate()
    }

    /// Record the run's resolved device list as `train.devices` (see [`TrainConfig`]).
    pub fn set_devices(&mut self, devices: &str) -> Result<()> {
        let t = self.train_table()?;
        t.insert("devices".into(), Value::String(devices.into()));
        self.train = config::section(&self.table, "train")?;
        Ok(())
    }

    /// The `[train]` table of the run config, to set a key the run decides.
    fn train_table(&mut self) -> Result<&mut Table> {
        let train = self
            .table
            .entry("train")
            .or_insert(Value::Table(Table::new()));
        train
            .as_table_mut()
            .ok_or_else(|| Error::config("train", "must be a table"))
    }

    pub fn model_table(&self) -> Table {
        self.table
            .get("model")
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    }
}

/// Resolve method preset -> plugins -> config file -> `--set`s, then validate every section.
/// A config file may itself name `method`, `preset` and `plugins`.
pub fn compose(req: &Request) -> Result<Composed> {
    let file = match &req.config_file {
        Some(p) => Some(config::read_toml(p)?),
        None => None,
    };
    compose_with(req, file)
}

/// A config already in memory (a checkpoint's metadata) composed as if read from a file.
pub fn compose_from_table(file: Table, sets: &[String]) -> Result<Composed> {
    compose_with(
        &Request {
            sets: sets.to_vec(),
            ..Default::default()
        },
        Some(file),
    )
}

fn compose_with(req: &Request, file: Option<Table>) -> Result<Composed> {
    let file_str = |k: &str| {
        file.as_ref()
            .and_then(|f| f.get(k))
            .and_then(|v| v.as_str())
    };
    let method_name = if req.method.is_empty() {
        file_str("method")
            .ok_or_else(|| Error::Usage("no method: pass --method (see `pixmim list`)".into()))?
            .to_string()
    } else {
        req.method.clone()
    };
    let method = method(&method_name)?;
    let preset = req
        .preset
        .clone()
        .or_else(|| file_str("preset").map(String::from))
        .unwrap_or_else(|| method.presets()[0].name.to_string());
    let mut table = method.preset(&preset).ok_or_else(|| {
        Error::config(
            "preset",
            format!(
                "method `{}` has no preset `{preset}`; presets: {}",
                method.name(),
                preset_names(method).join(", ")
            ),
        )
    })?;
    table.insert("method".into(), method.name().into());
    table.insert("preset".into(), preset.clone().into());

    let mut plugin_names = req.plugins.clone();
    if let Some(toml::Value::Array(a)) = file.as_ref().and_then(|f| f.get("plugins")) {
        for v in a {
            let n = v
                .as_str()
                .ok_or_else(|| Error::config("plugins", "must be a list of names"))?;
            if !plugin_names.iter().any(|p| p == n) {
                plugin_names.push(n.to_string());
            }
        }
    }
    let mut plugins = Vec::new();
    for n in &plugin_names {
        let p = plugin(n)?;
        // A plugin's keys are those it changed.
        let after = {
            let mut t = table.clone();
            p.apply(&mut t)?;
            t
        };
        let changed = |before: &Table, s: &str, k: &str| {
            before.get(s).and_then(|v| v.get(k)) != after.get(s).and_then(|v| v.get(k))
        };
        apply_layer(&mut table, |t| p.apply(t), changed)?;
        plugins.push(p);
    }
    table.insert(
        "plugins".into(),
        toml::Value::Array(plugin_names.iter().map(|s| s.clone().into()).collect()),
    );
    let in_layer = |layer: &Table| {
        let layer = layer.clone();
        move |_: &Table, s: &str, k: &str| layer.get(s).and_then(|v| v.get(k)).is_some()
    };
    if let Some(mut f) = file {
        for k in ["method", "preset", "plugins"] {
            f.remove(k);
        }
        apply_layer(
            &mut table,
            |t| {
                config::merge(t, &f);
                Ok(())
            },
            in_layer(&f),
        )?;
    }
    // Every `--set` of one command is one layer: the user's own keys are all checked.
    let mut sets = Table::new();
    for s in &req.sets {
        for k in ["method", "preset", "plugins"] {
            if s.trim_start().starts_with(&format!("{k}="))
                || s.trim_start().starts_with(&format!("{k} ="))
            {
                return Err(Error::Usage(format!("set `{k}` with --{k}, not --set")));
            }
        }
        config::set_dotted(&mut sets, s)?;
    }
    apply_layer(
        &mut table,
        |t| {
            for s in &req.sets {
                config::set_dotted(t, s)?;
            }
            Ok(())
        },
        in_layer(&sets),
    )?;
    config::check_top_level(&table)?;

    let seed = match table.get("seed") {
        Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
        Some(v) => {
            return Err(Error::config(
                "seed",
                format!("must be a non-negative integer, got {v}"),
            ))
        }
        None => 0,
    };
    let model = table
        .get("model")
        .and_then(|v| v.as_table())
        .cloned()
        .ok_or_else(|| Error::config("model", "is missing or not a table"))?;
    let geometry = method.geometry(&model)?;
    geometry.check_size()?;
    let augmentation = component::<dyn Augmentation>("augmentation", &table, &geometry)?;
    if augmentation.output_size() != geometry.image {
        return Err(Error::config(
            "augmentation",
            format!(
                "produces {:?} images but the model takes {:?}",
                augmentation.output_size(),
                geometry.image
            ),
        ));
    }
    let masking = component::<dyn Corruption>("masking", &table, &geometry)?;
    let target = component::<dyn TargetGenerator>("target", &table, &geometry)?;
    crate::target::check_paths(target.as_ref(), &config::component_name(&table, "target")?)?;
    if let Some(toml::Value::Table(t)) = table.get_mut("target") {
        config::merge(t, &target.resolved_params());
    }
    let optim: OptimConfig = config::section(&table, "optim")?;
    optim.validate()?;
    let schedule: ScheduleConfig = config::section(&table, "schedule")?;
    schedule.validate()?;
    let train: TrainConfig = config::section(&table, "train")?;
    train.check_values()?;
    let data: DataConfig = config::section(&table, "data")?;
    Ok(Composed {
        table,
        method,
        plugins,
        seed,
        geometry,
        parts: Arc::new(Parts {
            augmentation,
            masking,
            target,
        }),
        optim,
        schedule,
        train,
        data,
    })
}

/// Read a previous run's `config.toml` back (for `--resume`).
pub fn compose_from_file(path: &Path, sets: &[String]) -> Result<Composed> {
    compose(&Request {
        config_file: Some(path.to_path_buf()),
        sets: sets.to_vec(),
        ..Default::default()
    })
}
