//! Shared helpers for flowmote's host integration tests (see `tests/`).
#![deny(missing_docs)]

/// Central finite-difference Jacobian of `f: ℝⁿ → ℝⁿ` at `x`, in f64 from f32
/// evaluations, with step `h`. Row-major `n × n`, `J[i][j] = ∂f_i/∂x_j`.
pub fn fd_jacobian(f: &mut dyn FnMut(&[f32]) -> Vec<f32>, x: &[f32], h: f32) -> Vec<f64> {
    let n = x.len();
    let mut jac = vec![0.0f64; n * n];
    for j in 0..n {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[j] += h;
        xm[j] -= h;
        let (fp, fm) = (f(&xp), f(&xm));
        let step = (xp[j] as f64) - (xm[j] as f64);
        for i in 0..n {
            jac[i * n + j] = (fp[i] as f64 - fm[i] as f64) / step;
        }
    }
    jac
}

/// `log|det A|` of a row-major `n × n` matrix by LU with partial pivoting (f64).
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let mut m = a.to_vec();
    let mut ld = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap();
        if p != c {
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
            }
        }
        let piv = m[c * n + c];
        ld += piv.abs().ln();
        for r in c + 1..n {
            let f = m[r * n + c] / piv;
            for k in c..n {
                m[r * n + k] -= f * m[c * n + k];
            }
        }
    }
    ld
}
