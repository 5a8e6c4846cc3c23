//! Weight initialisation on the host with a seeded RNG (numerics §0.10), so a seed gives the same
//! initial weights on every backend and a CPU run is repeatable.
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub struct HostInit {
    rng: StdRng,
}

impl HostInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
    pub fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| self.rng.gen_range(-bound..bound) as f32)
            .collect()
    }
    /// Xavier-uniform for a (fan_out, fan_in) matrix.
    pub fn xavier(&mut self, fan_in: usize, fan_out: usize) -> Vec<f32> {
        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
        self.uniform(fan_in * fan_out, bound)
    }
    pub fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        let d = Normal::new(0.0, std).expect("std > 0");
        (0..n).map(|_| d.sample(&mut self.rng) as f32).collect()
    }

    /// nn.Linear with xavier_uniform weight and zero bias (MAE's `_init_weights`).
    pub fn linear<B: Backend>(
        &mut self,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Linear<B> {
        let w = self.xavier(d_in, d_out);
        Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }
}
