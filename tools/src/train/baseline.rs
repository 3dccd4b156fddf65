//! The full-covariance Gaussian: the baseline a flow must beat, and the
//! covariance and Cholesky factor the whitening layer starts from.

use anyhow::{ensure, Result};

/// Maximum-likelihood mean and covariance (row-major `d × d`, lower
/// triangle filled) of `rows`, in f64.
pub(super) fn covariance(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let d = rows.first().map_or(0, |r| r.len());
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for j in 0..d {
            mean[j] += r[j] as f64 / n;
        }
    }
    let mut cov = vec![0.0; d * d];
    for r in rows {
        for i in 0..d {
            for j in 0..=i {
                cov[i * d + j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]) / n;
            }
        }
    }
    (mean, cov)
}

/// Lower Cholesky factor of the `d × d` covariance `cov` (lower triangle read).
pub(super) fn cholesky(cov: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s = cov[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                ensure!(
                    s > 0.0 && s.is_finite(),
                    "covariance is singular (a column is constant or a combination of others); drop redundant columns"
                );
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Ok(l)
}

/// The inverse of the lower-triangular `d × d` matrix `l` (row-major), by
/// forward substitution column by column: lower-triangular too.
pub(super) fn inverse_lower(l: &[f64], d: usize) -> Vec<f64> {
    let mut w = vec![0.0; d * d];
    let mut x = vec![0.0f64; d];
    for col in 0..d {
        for i in col..d {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let acc: f64 = (col..i).map(|k| l[i * d + k] * x[k]).sum();
            x[i] = (rhs - acc) / l[i * d + i];
        }
        for i in col..d {
            w[i * d + col] = x[i];
        }
    }
    w
}

/// A full-covariance Gaussian fitted by maximum likelihood (the baseline a
/// flow must beat).
#[derive(Clone, Debug)]
pub struct Gaussian {
    mean: Vec<f64>,
    /// Lower Cholesky factor of the covariance.
    chol: Vec<f64>,
    log_det: f64,
}

impl Gaussian {
    /// Fit mean and covariance of `rows` (a tiny ridge keeps it positive definite).
    pub fn fit(rows: &[Vec<f32>]) -> Result<Self> {
        ensure!(!rows.is_empty(), "no rows to fit a Gaussian to");
        let d = rows[0].len();
        let (mean, mut cov) = covariance(rows);
        for i in 0..d {
            cov[i * d + i] += 1e-9 * cov[i * d + i].abs().max(1e-12);
        }
        let l = cholesky(&cov, d)?;
        let log_det = (0..d).map(|i| 2.0 * l[i * d + i].ln()).sum();
        Ok(Gaussian { mean, chol: l, log_det })
    }

    /// `log N(x; μ, Σ)`.
    #[allow(clippy::needless_range_loop)]
    pub fn log_prob(&self, x: &[f32]) -> f64 {
        let d = self.mean.len();
        let mut y = vec![0.0; d];
        for i in 0..d {
            let mut s = x[i] as f64 - self.mean[i];
            for k in 0..i {
                s -= self.chol[i * d + k] * y[k];
            }
            y[i] = s / self.chol[i * d + i];
        }
        let q: f64 = y.iter().map(|v| v * v).sum();
        -0.5 * (q + self.log_det + d as f64 * (2.0 * std::f64::consts::PI).ln())
    }
}
