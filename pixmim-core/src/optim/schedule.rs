//! Learning-rate schedules (numerics §0.11).
use crate::config::{ScheduleConfig, ScheduleKind};

#[derive(Clone, Debug)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Peak learning rate (blr x effective batch / 256, or `optim.lr`).
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub epochs: f64,
    pub iters_per_epoch: usize,
    pub start_factor: f64,
}

impl LrSchedule {
    pub fn new(cfg: &ScheduleConfig, lr: f64, epochs: f64, iters_per_epoch: usize) -> Self {
        Self {
            kind: cfg.kind,
            lr,
            min_lr: cfg.min_lr,
            warmup_epochs: cfg.warmup_epochs,
            epochs,
            iters_per_epoch,
            start_factor: cfg.start_factor,
        }
    }

    /// The lr used for data iteration `i` (0-based).
    pub fn at(&self, i: usize) -> f64 {
        match self.kind {
            ScheduleKind::Official => {
                // e = epoch + i/len(loader); linear warmup from 0, then half-cycle cosine.
                let e = i as f64 / self.iters_per_epoch as f64;
                if e < self.warmup_epochs {
                    self.lr * e / self.warmup_epochs
                } else {
                    let span = (self.epochs - self.warmup_epochs).max(f64::MIN_POSITIVE);
                    let prog = ((e - self.warmup_epochs) / span).min(1.0);
                    self.min_lr
                        + (self.lr - self.min_lr)
                            * 0.5
                            * (1.0 + (std::f64::consts::PI * prog).cos())
                }
            }
            ScheduleKind::Mmengine => {
                // LinearLR(start_factor) over T_w iterations, then CosineAnnealingLR to min_lr.
                let tw = (self.warmup_epochs * self.iters_per_epoch as f64).round();
                let t = i as f64;
                if t < tw {
                    self.lr * (self.start_factor + (1.0 - self.start_factor) * t / tw)
                } else {
                    let tmax =
                        ((self.epochs - self.warmup_epochs) * self.iters_per_epoch as f64).max(1.0);
                    let prog = ((t - tw) / tmax).min(1.0);
                    self.min_lr
                        + (self.lr - self.min_lr)
                            * 0.5
                            * (1.0 + (std::f64::consts::PI * prog).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        let cfg = ScheduleConfig {
            kind,
            warmup_epochs: 40.0,
            min_lr: 0.0,
            start_factor: 1e-4,
        };
        LrSchedule::new(&cfg, 2.4e-3, 400.0, 312)
    }

    #[test]
    fn official_curve_start_warmup_end_and_last_step() {
        let s = sched(ScheduleKind::Official);
        assert_eq!(s.at(0), 0.0, "iteration 0 has lr 0");
        assert!(
            (s.at(20 * 312) - 1.2e-3).abs() < 1e-15,
            "half-way through warmup"
        );
        assert!(
            (s.at(40 * 312) - 2.4e-3).abs() < 1e-15,
            "peak at the warmup boundary"
        );
        let mid = 40.0 + 180.0;
        assert!(
            (s.at((mid * 312.0) as usize) - 1.2e-3).abs() < 1e-12,
            "cosine half-way"
        );
        let last = s.at(400 * 312 - 1);
        let e = (400.0 * 312.0 - 1.0) / 312.0;
        let want = 2.4e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (e - 40.0) / 360.0).cos());
        assert!((last - want).abs() < 1e-18 && last < 1e-9);
    }

    #[test]
    fn mmengine_curve_starts_at_start_factor() {
        let s = sched(ScheduleKind::Mmengine);
        assert!((s.at(0) - 2.4e-3 * 1e-4).abs() < 1e-18);
        assert!((s.at(40 * 312) - 2.4e-3).abs() < 1e-15);
    }
}
