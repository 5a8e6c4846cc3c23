//! `[train.monitor]`: how good the encoder's features are while it pretrains. Every `every`
//! steps, rank 0 encodes the monitor's labelled images with the current weights (every patch
//! visible, no stochastic depth, no autodiff graph) on the step threads and logs the kNN
//! top-1 / top-5 of its validation images (`knn_top1`, `knn_top5`) and the seconds it took
//! (`monitor_s`) to `metrics.jsonl` and TensorBoard. The features are a function of the weights
//! alone, so a resumed run logs what the uninterrupted one would.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::DispatchDevice;

use crate::augment::CenterCrop;
use crate::config::MonitorConfig;
use crate::data::loader::Source;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::features::encode_source;
use crate::eval::{knn_classify, KnnResult};
use crate::job::Pool;
use crate::registry::Composed;
use crate::traits::{Augmentation, Autoencoder};
use crate::RunBackend;

type B = RunBackend;

/// Images per encoder pass.
const BATCH: usize = 64;

pub(super) struct Monitor {
    cfg: MonitorConfig,
    every: usize,
    train: Source,
    val: Source,
    transform: Arc<dyn Augmentation>,
}

impl Monitor {
    /// The run's monitor, its data listed now (a bad path fails the run before its first
    /// step, naming the key); `None` when `[train.monitor]` is not set.
    pub(super) fn open(c: &Composed) -> Result<Option<Self>> {
        let Some(cfg) = c.train.monitor.clone() else {
            return Ok(None);
        };
        cfg.validate()?;
        let labelled = |path: &Path, limit: usize, key: &str| -> Result<Source> {
            let ds = Dataset::open_labelled(path, Some(limit))
                .map_err(|e| Error::config(key, e.to_string()))?;
            Ok(Source::strict(ds))
        };
        let train = labelled(&cfg.data, cfg.train_limit, "train.monitor.data")?;
        let val = labelled(&cfg.val_data, cfg.val_limit, "train.monitor.val_data")?;
        let transform = Arc::new(CenterCrop::eval(c.geometry.image, cfg.crop_pct)?);
        let every = cfg.interval(c.train.batch_size);
        eprintln!(
            "monitor: kNN top-1 of {} images voted by {} every {every} steps and at the end",
            val.dataset.len(),
            train.dataset.len()
        );
        Ok(Some(Self {
            cfg,
            every,
            train,
            val,
            transform,
        }))
    }

    /// Is step `done` (1-based) one the monitor measures?
    pub(super) fn due(&self, done: usize, total: usize) -> bool {
        done.is_multiple_of(self.every) || done == total
    }

    /// kNN accuracy of the model's features now.
    pub(super) fn measure<M>(
        &self,
        c: &Composed,
        model: &M,
        device: &DispatchDevice,
    ) -> Result<Measurement>
    where
        M: Autoencoder<B> + AutodiffModule<B>,
    {
        let started = Instant::now();
        let model = model.clone().with_drop_path(0.0).no_grad();
        let encode = |source: &Source| {
            encode_source(
                c,
                &model,
                (source, self.transform.as_ref()),
                (BATCH, Pool::Cls),
                device,
                |_| {},
            )
        };
        let (train, val) = (encode(&self.train)?, encode(&self.val)?);
        let knn = knn_classify(&train, &val, self.cfg.k, self.cfg.temperature)?;
        Ok(Measurement {
            knn,
            elapsed: started.elapsed(),
        })
    }
}

/// One measurement: the kNN result and how long it took.
pub(super) struct Measurement {
    pub knn: KnnResult,
    pub elapsed: Duration,
}
