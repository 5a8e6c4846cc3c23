//! Weighted k-nearest-neighbour classification of frozen features, as DINO's `eval_knn`
//! (the usual kNN monitor of self-supervised pretraining): L2-normalised features, cosine
//! similarity, the k most similar training images vote for their class with weight
//! exp(similarity / T), T = 0.07.
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::job::Features;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnResult {
    /// Fractions in [0, 1].
    pub top1: f64,
    pub top5: f64,
    pub k: usize,
}

fn normalised(f: &Features) -> Vec<f32> {
    let mut v = f.data.clone();
    for row in v.chunks_mut(f.dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Queries per similarity product. Each block reads the training matrix once, so the
/// (N_train x D) features stream through memory N_val / QUERY_BLOCK times instead of once per
/// query (60k x 192 floats is 46 MB, far beyond any cache); 256 x 60k similarities are 61 MB.
const QUERY_BLOCK: usize = 256;

/// Cosine similarities of a block of normalised queries (rows of `q`) with every normalised
/// training row: one (B x D) x (D x N) product on the CPU backend's threaded GEMM.
fn similarities(q: &[f32], train_t: &Tensor<Flex, 2>, dim: usize) -> Vec<f32> {
    let device = train_t.device();
    let q =
        Tensor::<Flex, 2>::from_data(TensorData::new(q.to_vec(), [q.len() / dim, dim]), &device);
    q.matmul(train_t.clone())
        .into_data()
        .into_vec::<f32>()
        .expect("f32 similarities")
}

/// Class scores of one query: the weighted votes of its `k` most similar training rows.
fn votes(sims: &[f32], labels: &[usize], k: usize, t: f64, classes: usize) -> Vec<f64> {
    let mut sims: Vec<(f32, usize)> = sims.iter().copied().zip(0..).collect();
    // Most similar first; ties by index, so results do not depend on thread scheduling.
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let k = k.min(sims.len());
    if k < sims.len() {
        sims.select_nth_unstable_by(k - 1, order);
    }
    let mut score = vec![0f64; classes];
    for &(s, i) in &sims[..k] {
        score[labels[i]] += (s as f64 / t).exp();
    }
    score
}

/// Classify every validation row by its `k` nearest training rows.
pub fn knn_classify(
    train: &Features,
    val: &Features,
    k: usize,
    temperature: f64,
) -> Result<KnnResult> {
    if train.is_empty() || val.is_empty() {
        return Err(Error::Usage(
            "kNN needs training and validation images".into(),
        ));
    }
    if train.dim != val.dim {
        return Err(Error::Usage(format!(
            "feature sizes differ: train {} vs val {}",
            train.dim, val.dim
        )));
    }
    if k == 0 || temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::Usage(format!(
            "--k must be >= 1 and the temperature > 0 (got k={k}, T={temperature})"
        )));
    }
    let classes = train.num_classes().max(val.num_classes());
    let tn = normalised(train);
    let vn = normalised(val);
    let train_t = Tensor::<Flex, 2>::from_data(
        TensorData::new(tn, [train.len(), train.dim]),
        &Default::default(),
    )
    .transpose();
    let mut hits: Vec<(bool, bool)> = Vec::with_capacity(val.len());
    for (q, labels) in vn
        .chunks(QUERY_BLOCK * val.dim)
        .zip(val.labels.chunks(QUERY_BLOCK))
    {
        let sims = similarities(q, &train_t, val.dim);
        hits.par_extend(
            sims.par_chunks_exact(train.len())
                .zip(labels.par_iter())
                .map(|(row, &label)| {
                    let score = votes(row, &train.labels, k, temperature, classes);
                    let mut ranked: Vec<usize> = (0..classes).collect();
                    ranked.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
                    (
                        ranked[0] == label,
                        ranked.iter().take(5).any(|&c| c == label),
                    )
                }),
        );
    }
    let n = hits.len() as f64;
    Ok(KnnResult {
        top1: hits.iter().filter(|h| h.0).count() as f64 / n,
        top5: hits.iter().filter(|h| h.1).count() as f64 / n,
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[[f32; 2]], labels: &[usize]) -> Features {
        Features {
            dim: 2,
            data: rows.iter().flatten().copied().collect(),
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn votes_are_weighted_by_similarity_and_limited_to_k() {
        // Class 0 along +x, class 1 along +y; the query leans to +x.
        let train = feats(
            &[[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [0.0, 2.0]],
            &[0, 0, 1, 1, 1],
        );
        let val = feats(&[[1.0, 0.3]], &[0]);
        // k=5: three class-1 votes, but the two class-0 neighbours are far more similar.
        let r = knn_classify(&train, &val, 5, 0.07).unwrap();
        assert_eq!(r.top1, 1.0);
        // With a huge temperature every vote weighs ~1 and the majority (class 1) wins.
        let r = knn_classify(&train, &val, 5, 1e6).unwrap();
        assert_eq!(r.top1, 0.0);
        assert_eq!(r.top5, 1.0);
        // k=1: only the nearest (class 0) votes.
        assert_eq!(knn_classify(&train, &val, 1, 1e6).unwrap().top1, 1.0);
        // Hand-computed scores: cos sims of [1, .3] with the k=2 nearest rows.
        let q = [1.0f32 / 1.09f32.sqrt(), 0.3 / 1.09f32.sqrt()];
        let tn = normalised(&train);
        let train_t =
            Tensor::<Flex, 2>::from_data(TensorData::new(tn, [5, 2]), &Default::default())
                .transpose();
        let sims = similarities(&q, &train_t, 2);
        let s = votes(&sims, &train.labels, 2, 0.5, 2);
        let c0 = q[0] as f64;
        let c1 = (2.0 * q[0] + 0.1 * q[1]) as f64 / (4.01f64).sqrt();
        assert!(
            (s[0] - ((c0 / 0.5).exp() + (c1 / 0.5).exp())).abs() < 1e-4,
            "{s:?}"
        );
        assert_eq!(s[1], 0.0);
        assert!(knn_classify(&train, &val, 0, 0.07).is_err());
    }

    #[test]
    fn blocked_products_classify_as_one_query_at_a_time() {
        use rand::{Rng, SeedableRng};
        // More queries than one block (and a partial last block), random features.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (dim, classes) = (12, 4);
        let mut random = |n: usize| Features {
            dim,
            data: (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
            labels: (0..n).map(|i| i % classes).collect(),
        };
        let (train, val) = (random(300), random(2 * QUERY_BLOCK + 37));
        let (k, t) = (7, 0.1);
        // The rule written out in f64, one query at a time.
        let unit = |r: &[f32]| {
            let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|x| *x as f64 / n).collect::<Vec<_>>()
        };
        let rows: Vec<Vec<f64>> = train.data.chunks(dim).map(unit).collect();
        let (mut top1, mut top5) = (0, 0);
        for (q, &label) in val.data.chunks(dim).zip(&val.labels) {
            let q = unit(q);
            let mut sims: Vec<(f64, usize)> = rows
                .iter()
                .map(|r| r.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>())
                .zip(0..)
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut score = vec![0f64; classes];
            for &(s, i) in &sims[..k] {
                score[train.labels[i]] += (s / t).exp();
            }
            let mut ranked: Vec<usize> = (0..classes).collect();
            ranked.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
            top1 += (ranked[0] == label) as usize;
            top5 += ranked[..classes.min(5)].contains(&label) as usize;
        }
        let r = knn_classify(&train, &val, k, t).unwrap();
        let n = val.len() as f64;
        assert_eq!(r.top1, top1 as f64 / n);
        assert_eq!(r.top5, top5 as f64 / n);
        // Random features carry no class signal: near chance, not a degenerate 0 or 1.
        assert!(r.top1 > 0.1 && r.top1 < 0.5, "{r:?}");
    }
}
