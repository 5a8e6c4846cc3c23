//! The low-pass target on the training device: the same filter as [`LowPassFilter`] written as
//! DFT matrix products (numerics §2.1), pruned to the frequency rows and columns the disk keeps, so
//! a GPU computes it next to the model instead of in the data workers.
//!
//! For one channel U (H, W): Y = | Ih[:, R] · (M ⊙ (Fh[R, :] · U · Fw[:, K])) · Iw[K, :] | / (HW),
//! with K the kept columns, R the kept rows, F the forward and I the inverse DFT matrices.
//! The high band is U minus the low band's complex result, before the modulus.
//! Twiddles are computed in f64 with reduced angles and stored as f32.
use burn::prelude::*;

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
        let mask: Vec<f32> = rows
            .iter()
            .flat_map(|&k| cols.iter().map(move |&l| (k, l)))
            .map(|(k, l)| filter.keeps(k, l) as u8 as f32)
            .collect();
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
            mask: Tensor::from_data(TensorData::new(mask, [rows.len(), cols.len()]), device),
            ih: twiddles(&all_h, &rows, h, 1.0, device),
            iw,
            dc_kept: filter.keeps(0, 0),
        }
    }

    /// PixMIM target of normalised images (B, 3, H, W), in normalised space, keeping `band`.
    pub fn target(&self, x: Tensor<B, 4>, band: Band) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        assert_eq!((h, w), (self.height, self.width));
        let device = x.device();
        let mean = Tensor::<B, 1>::from_floats(IMAGENET_MEAN, &device).reshape([1, 3, 1, 1]);
        let std = Tensor::<B, 1>::from_floats(IMAGENET_STD, &device).reshape([1, 3, 1, 1]);
        let u = (x * std.clone() + mean.clone()).reshape([b * c, h, w]);
        // The filter is linear and a constant lives only in the DC bin: filter u - mean(u)
        // and add the mean back, which keeps the f32 sums small (1e-5 parity on photos).
        let dc = u.clone().mean_dim(2).mean_dim(1); // (N, 1, 1)
        let u = u - dc.clone();
        let u_centred = u.clone();
        let zeros = u.zeros_like();
        // A disk that holds no bin (r < 0.5 on an even size) keeps nothing: no matrices.
        let (s_re, s_im) = if self.mask.dims().contains(&0) {
            (zeros.clone(), zeros)
        } else {
            let (p_re, p_im) = cmul(u, zeros, &self.fw); // (N, H, K)
            let (q_re, q_im) = lmul(&self.fh, p_re, p_im); // (N, R, K)
            let m = self.mask.clone().unsqueeze::<3>();
            let (q_re, q_im) = (q_re * m.clone(), q_im * m);
            let (r_re, r_im) = lmul(&self.ih, q_re, q_im); // (N, H, K)
            cmul(r_re, r_im, &self.iw) // (N, H, W)
        };
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
        let y = (s_re.powi_scalar(2) + s_im.powi_scalar(2))
            .sqrt()
            .reshape([b, c, h, w]);
        (y - mean) / std
    }
}
