//! Weighted k-nearest-neighbour classification of frozen features, as DINO's `eval_knn`
//! (the usual kNN monitor of self-supervised pretraining): L2-normalised features, cosine
//! similarity, the k most similar training images vote for their class with weight
//! exp(similarity / T), T = 0.07.
use rayon::prelude::*;

use super::features::Features;
use crate::error::{Error, Result};

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

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums so the compiler vectorises it.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Class scores of one query: the weighted votes of its `k` nearest training rows.
fn votes(
    train: &[f32],
    labels: &[usize],
    dim: usize,
    q: &[f32],
    k: usize,
    t: f64,
    classes: usize,
) -> Vec<f64> {
    let mut sims: Vec<(f32, usize)> = train
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| (dot(r, q), i))
        .collect();
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
    let hits: Vec<(bool, bool)> = vn
        .par_chunks_exact(val.dim)
        .zip(val.labels.par_iter())
        .map(|(q, &label)| {
            let score = votes(&tn, &train.labels, train.dim, q, k, temperature, classes);
            let mut ranked: Vec<usize> = (0..classes).collect();
            ranked.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
            (
                ranked[0] == label,
                ranked.iter().take(5).any(|&c| c == label),
            )
        })
        .collect();
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
        let s = votes(&tn, &train.labels, 2, &q, 2, 0.5, 2);
        let c0 = q[0] as f64;
        let c1 = (2.0 * q[0] + 0.1 * q[1]) as f64 / (4.01f64).sqrt();
        assert!(
            (s[0] - ((c0 / 0.5).exp() + (c1 / 0.5).exp())).abs() < 1e-4,
            "{s:?}"
        );
        assert_eq!(s[1], 0.0);
        assert!(knn_classify(&train, &val, 0, 0.07).is_err());
    }
}
