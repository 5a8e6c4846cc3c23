//! LARS as MAE's linear probe uses it (`util/lars.py`), on host parameters: for matrices,
//! weight decay is added to the gradient and the update scaled by the trust ratio
//! `trust_coefficient * |p| / |update|`; vectors (biases) take the plain update; then
//! heavy-ball momentum `mu = momentum * mu + update`, `p -= lr * mu`.
pub struct Lars {
    pub momentum: f64,
    pub weight_decay: f64,
    pub trust_coefficient: f64,
    /// Off: plain SGD with momentum and weight decay (the probe's `--optimizer sgd`).
    pub trust: bool,
}

impl Lars {
    /// One step for one parameter: `is_matrix` selects the LARS branch (`p.ndim > 1`).
    pub fn step(&self, lr: f64, p: &mut [f32], grad: &[f32], mu: &mut [f32], is_matrix: bool) {
        let wd = self.weight_decay as f32;
        let mut update: Vec<f32> = if is_matrix || !self.trust {
            grad.iter().zip(p.iter()).map(|(g, w)| g + wd * w).collect()
        } else {
            grad.to_vec()
        };
        if is_matrix && self.trust {
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let (pn, un) = (norm(p), norm(&update));
            if pn > 0.0 && un > 0.0 {
                let q = (self.trust_coefficient * pn / un) as f32;
                update.iter_mut().for_each(|u| *u *= q);
            }
        }
        let m = self.momentum as f32;
        for ((w, u), v) in p.iter_mut().zip(&update).zip(mu.iter_mut()) {
            *v = m * *v + u;
            *w -= lr as f32 * *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_lars_step() {
        let lars = Lars {
            momentum: 0.9,
            weight_decay: 0.5,
            trust_coefficient: 0.001,
            trust: true,
        };
        // p = [3, 4] (|p| = 5), g = [0.5, -2]: update = g + 0.5 p = [2, 0] (|u| = 2),
        // q = 0.001 * 5 / 2 = 0.0025 -> [0.005, 0]; mu starts at 0; lr 10 -> p - [0.05, 0].
        let mut p = [3.0f32, 4.0];
        let mut mu = [0.0f32; 2];
        lars.step(10.0, &mut p, &[0.5, -2.0], &mut mu, true);
        assert!(
            (p[0] - 2.95).abs() < 1e-6 && (p[1] - 4.0).abs() < 1e-6,
            "{p:?}"
        );
        // A second step with zero gradient: the update is wd*p scaled again, plus momentum.
        let mut b = [1.0f32];
        let mut mb = [0.0f32];
        lars.step(1.0, &mut b, &[0.25], &mut mb, false);
        lars.step(1.0, &mut b, &[0.25], &mut mb, false);
        // Bias: no decay, no trust ratio: mu = 0.25 then 0.475; b = 1 - 0.25 - 0.475.
        assert!((b[0] - 0.275).abs() < 1e-6, "{b:?}");
    }
}
