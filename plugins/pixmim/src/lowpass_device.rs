//! The low-pass target on the training device: the same filter as [`LowPassFilter`] written as
//! DFT matrix products (numerics §2.1), pruned to the frequency rows and columns the disk keeps, so
//! a GPU computes it next to the model instead of in the data workers.
//!
//! For one channel U (H, W): Y = | Ih[:, R] · (M ⊙ (Fh[R, :] · U · Fw[:, K])) · Iw[K, :] | / (HW),
//! with K the kept columns, R the kept rows, F the forward and I the inverse DFT matrices.
//! The high band is U minus the low band's complex result, before the modulus.
//! Twiddles are computed in f64 with reduced angles and stored as f32.
//!
//! [`LowPassOnDevice::smooth_target`] replaces the ideal disk with a smooth one, a sigmoid of
//! (r - distance) / width, r a tensor, so the target has a gradient in r (the adaptive
//! target); its support is the filter's disk, built at the largest radius plus a margin.
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use burn::DispatchDevice;
use pixmim_core::RunBackend;

use crate::lowpass::{Band, LowPassFilter};
use pixmim_core::{IMAGENET_MEAN, IMAGENET_STD};

/// Real and imaginary parts of a complex matrix.
#[derive(Clone, Debug)]
struct Cplx<B: Backend> {
    re: Tensor<B, 2>,
    im: Tensor<B, 2>,
}

/// exp(sign * 2πi * a*b / n) for a in `rows`, b in `cols`.
fn twiddles<B: Backend>(
    rows: &[usize],
    cols: &[usize],
    n: usize,
    sign: f64,
    device: &B::Device,
) -> Cplx<B> {
    let (mut re, mut im) = (
        Vec::with_capacity(rows.len() * cols.len()),
        Vec::with_capacity(rows.len() * cols.len()),
    );
    for &a in rows {
        for &b in cols {
            let ang = sign * 2.0 * std::f64::consts::PI * ((a * b) % n) as f64 / n as f64;
            re.push(ang.cos() as f32);
            im.push(ang.sin() as f32);
        }
    }
    let shape = [rows.len(), cols.len()];
    Cplx {
        re: Tensor::from_data(TensorData::new(re, shape), device),
        im: Tensor::from_data(TensorData::new(im, shape), device),
    }
}

/// Complex matrix product with broadcasting over a leading batch dim.
fn cmul<B: Backend>(
    a_re: Tensor<B, 3>,
    a_im: Tensor<B, 3>,
    b: &Cplx<B>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (br, bi) = (b.re.clone().unsqueeze::<3>(), b.im.clone().unsqueeze::<3>());
    let re = a_re.clone().matmul(br.clone()) - a_im.clone().matmul(bi.clone());
    let im = a_re.matmul(bi) + a_im.matmul(br);
    (re, im)
}

fn lmul<B: Backend>(
    a: &Cplx<B>,
    b_re: Tensor<B, 3>,
    b_im: Tensor<B, 3>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (ar, ai) = (a.re.clone().unsqueeze::<3>(), a.im.clone().unsqueeze::<3>());
    let re = ar.clone().matmul(b_re.clone()) - ai.clone().matmul(b_im.clone());
    let im = ar.matmul(b_im) + ai.matmul(b_re);
    (re, im)
}

/// The filter's matrices on one device.
#[derive(Clone, Debug)]
pub struct LowPassOnDevice<B: Backend> {
    height: usize,
    width: usize,
    fw: Cplx<B>,
    fh: Cplx<B>,
    mask: Tensor<B, 2>,
    /// Distance of each kept bin from the disk's centre on the shifted grid, (R, K).
    distance: Tensor<B, 2>,
    /// The same for the DC bin.
    dc_distance: f64,
    ih: Cplx<B>,
    iw: Cplx<B>,
    /// Is the DC bin kept? (false only for tiny radii)
    dc_kept: bool,
}

impl<B: Backend> LowPassOnDevice<B> {
    pub fn new(filter: &LowPassFilter, device: &B::Device) -> Self {
        let (h, w) = (filter.height, filter.width);
        let cols: Vec<usize> = filter.kept_columns().collect();
        let mut rows: Vec<usize> = (0..h)
            .filter(|&k| cols.iter().any(|&l| filter.keeps(k, l)))
            .collect();
        rows.sort();
        let all_w: Vec<usize> = (0..w).collect();
        let all_h: Vec<usize> = (0..h).collect();
        let bins = || rows.iter().flat_map(|&k| cols.iter().map(move |&l| (k, l)));
        let mask: Vec<f32> = bins()
            .map(|(k, l)| filter.keeps(k, l) as u8 as f32)
            .collect();
        let distance: Vec<f32> = bins()
            .map(|(k, l)| bin_distance(h, w, k, l) as f32)
            .collect();
        let grid = [rows.len(), cols.len()];
        let mut iw = twiddles::<B>(&cols, &all_w, w, 1.0, device);
        // fold 1/(HW) into the last matrix
        let s = 1.0 / (h * w) as f64;
        iw.re = iw.re * s;
        iw.im = iw.im * s;
        Self {
            height: h,
            width: w,
            fw: twiddles(&all_w, &cols, w, -1.0, device),
            fh: twiddles(&rows, &all_h, h, -1.0, device),
            mask: Tensor::from_data(TensorData::new(mask, grid), device),
            distance: Tensor::from_data(TensorData::new(distance, grid), device),
            dc_distance: bin_distance(h, w, 0, 0),
            ih: twiddles(&all_h, &rows, h, 1.0, device),
            iw,
            dc_kept: filter.keeps(0, 0),
        }
    }

    /// PixMIM target of normalised images (B, 3, H, W), in normalised space, keeping `band`.
    pub fn target(&self, x: Tensor<B, 4>, band: Band) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let (u, dc) = self.centred(x.clone());
        let u_centred = u.clone();
        let (s_re, s_im) = self.filtered(u, self.mask.clone());
        let (s_re, s_im) = match band {
            Band::Low if self.dc_kept => (s_re + dc, s_im),
            Band::Low => (s_re, s_im),
            // u - low: the centred image less the filtered part, the mean where the disk
            // dropped it; the imaginary part changes sign (the modulus does not care).
            Band::High => {
                let s_re = u_centred - s_re;
                (if self.dc_kept { s_re } else { s_re + dc }, s_im)
            }
        };
        renormalise(s_re, s_im, [b, c, h, w], &x.device())
    }

    /// The low-pass target with the smooth disk sigmoid((radius - distance) / width):
    /// `radius` a one-element tensor the result is differentiable in. Bins outside the
    /// support (the filter this was built from) count as 0.
    pub fn smooth_target(&self, x: Tensor<B, 4>, radius: Tensor<B, 1>, width: f64) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let (u, dc) = self.centred(x.clone());
        let edge = |d: Tensor<B, 2>| sigmoid((radius.clone().reshape([1, 1]) - d) / width);
        let (s_re, s_im) = self.filtered(u, edge(self.distance.clone()));
        // A constant lives only in the DC bin, which the disk weighs by its value there.
        let dc_weight = edge(Tensor::from_floats(
            [[self.dc_distance as f32]],
            &x.device(),
        ));
        let s_re = s_re + dc * dc_weight.unsqueeze::<3>();
        renormalise(s_re, s_im, [b, c, h, w], &x.device())
    }

    /// De-normalised channels (B*3, H, W) less their means, and the means (B*3, 1, 1).
    /// The filter is linear and a constant lives only in the DC bin: filtering u - mean(u)
    /// and adding the mean back keeps the f32 sums small (1e-5 parity on photos).
    fn centred(&self, x: Tensor<B, 4>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [b, c, h, w] = x.dims();
        assert_eq!((h, w), (self.height, self.width));
        let (mean, std) = mean_std(&x.device());
        let u = (x * std + mean).reshape([b * c, h, w]);
        let dc = u.clone().mean_dim(2).mean_dim(1);
        (u - dc.clone(), dc)
    }

    /// IDFT(DFT(u) ⊙ mask) over the support, real and imaginary parts (N, H, W).
    fn filtered(&self, u: Tensor<B, 3>, mask: Tensor<B, 2>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let zeros = u.zeros_like();
        // A disk that holds no bin (r < 0.5 on an even size) keeps nothing: no matrices.
        if mask.dims().contains(&0) {
            return (zeros.clone(), zeros);
        }
        let (p_re, p_im) = cmul(u, zeros, &self.fw); // (N, H, K)
        let (q_re, q_im) = lmul(&self.fh, p_re, p_im); // (N, R, K)
        let m = mask.unsqueeze::<3>();
        let (q_re, q_im) = (q_re * m.clone(), q_im * m);
        let (r_re, r_im) = lmul(&self.ih, q_re, q_im); // (N, H, K)
        cmul(r_re, r_im, &self.iw) // (N, H, W)
    }
}

fn mean_std<B: Backend>(device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let mean = Tensor::<B, 1>::from_floats(IMAGENET_MEAN, device).reshape([1, 3, 1, 1]);
    let std = Tensor::<B, 1>::from_floats(IMAGENET_STD, device).reshape([1, 3, 1, 1]);
    (mean, std)
}

/// The modulus of the filtered channels, back in normalised space (B, 3, H, W).
fn renormalise<B: Backend>(
    re: Tensor<B, 3>,
    im: Tensor<B, 3>,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let (mean, std) = mean_std(device);
    let y = (re.powi_scalar(2) + im.powi_scalar(2))
        .sqrt()
        .reshape(shape);
    (y - mean) / std
}

/// Distance of natural-order frequency (k, l) from the disk's centre ((H-1)/2, (W-1)/2) on
/// the shifted grid, where it sits at ((k + H/2) mod H, (l + W/2) mod W).
pub fn bin_distance(h: usize, w: usize, k: usize, l: usize) -> f64 {
    let i = ((k + h / 2) % h) as f64 - (h as f64 - 1.0) / 2.0;
    let j = ((l + w / 2) % w) as f64 - (w as f64 - 1.0) / 2.0;
    (i * i + j * j).sqrt()
}

/// A filter's matrices, built once per device a batch comes from: data-parallel steps make
/// the target on every device of the run, each step. burn's `DispatchDevice` equality ignores
/// autodiff (a training device equals the plain device it wraps), but their tensors cannot be
/// mixed, so both are compared. The matrices are handed out as clones (tensor handles), so no
/// device waits on another's target while it computes.
#[derive(Default)]
pub struct MatricesCache {
    entries: std::sync::Mutex<Vec<(DispatchDevice, LowPassOnDevice<RunBackend>)>>,
}

impl MatricesCache {
    /// The matrices for `device`, built with `build` the first time it is seen.
    pub fn get(
        &self,
        device: &DispatchDevice,
        build: impl FnOnce() -> LowPassOnDevice<RunBackend>,
    ) -> LowPassOnDevice<RunBackend> {
        let autodiff = |d: &DispatchDevice| matches!(d, DispatchDevice::Autodiff(_));
        let same = |d: &DispatchDevice| d == device && autodiff(d) == autodiff(device);
        let mut entries = self.entries.lock().expect("low-pass matrices");
        if let Some((_, m)) = entries.iter().find(|(d, _)| same(d)) {
            return m.clone();
        }
        let m = build();
        entries.push((device.clone(), m.clone()));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmim_core::device::DeviceSpec;
    use std::cell::Cell;

    /// Each device's matrices are built once however its batches interleave with another
    /// device's, and a training device is not mistaken for the plain one it wraps.
    #[test]
    fn matrices_are_built_once_per_device() {
        let filter = LowPassFilter::new(8, 8, 2.0);
        let cache = MatricesCache::default();
        let builds = Cell::new(0);
        let flex = DeviceSpec::Flex.device().unwrap();
        let flex_train = DeviceSpec::Flex.train_device().unwrap();
        let ndarray = DeviceSpec::NdArray.device().unwrap();
        for _ in 0..3 {
            for d in [&flex, &flex_train, &ndarray] {
                let m = cache.get(d, || {
                    builds.set(builds.get() + 1);
                    LowPassOnDevice::new(&filter, d)
                });
                let x = Tensor::<RunBackend, 4>::zeros([1, 3, 8, 8], d);
                assert_eq!(m.target(x, Band::Low).dims(), [1, 3, 8, 8]);
            }
        }
        assert_eq!(builds.get(), 3);
    }
}
