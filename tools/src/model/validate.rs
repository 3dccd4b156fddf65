//! Checking a flow read from a file: sizes, permutations and finiteness of
//! every layer, before anything evaluates it.

use super::*;

impl DynFlow {
    /// Check sizes, permutations and finiteness of every parameter.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim;
        ensure!(d >= 1, "model dimension must be at least 1");
        for (i, l) in self.layers.iter().enumerate() {
            let ctx = || format!("layer {i} ({})", l.describe());
            // The kinds that store numbers of their own besides a
            // conditioner; the other checks are the same for every kind
            // and read its spec, below.
            match l {
                Layer::ActNorm { log_scale, shift, .. } => {
                    ensure!(
                        log_scale.len() == d && shift.len() == d,
                        "{}: expected {d} scales and shifts",
                        ctx()
                    );
                    ensure!(
                        log_scale.iter().chain(shift).all(|v| v.is_finite()),
                        "{}: non-finite parameter",
                        ctx()
                    );
                }
                Layer::Permutation { perm } => {
                    ensure!(
                        perm.len() == d && flowmote::permutation::is_permutation(perm),
                        "{}: not a permutation of 0..{d}",
                        ctx()
                    );
                }
                Layer::LuLinear { perm, sign, params } => {
                    ensure!(
                        LuLinearRef::from_flat(perm, sign, params).is_ok() && perm.len() == d,
                        "{}: expected a permutation of 0..{d}, {d} signs and {} parameters",
                        ctx(),
                        LuLinearRef::n_params(d)
                    );
                    ensure!(
                        params.iter().chain(sign).all(|v| v.is_finite()),
                        "{}: non-finite weight",
                        ctx()
                    );
                }
                Layer::TriLinear { params } => {
                    ensure!(
                        params.len() == TriLinearRef::n_params(d),
                        "{}: expected {} parameters for {d} columns",
                        ctx(),
                        TriLinearRef::n_params(d)
                    );
                    ensure!(params.iter().all(|v| v.is_finite()), "{}: non-finite weight", ctx());
                }
                _ => {}
            }
            let s = l.spec(d);
            if let Some((a, b)) = s.split {
                ensure!(
                    a + b == d && a >= 1 && b >= 1,
                    "{}: split {a}+{b} does not fit dimension {d}",
                    ctx()
                );
            }
            if let Some(bins) = s.bins {
                ensure!(
                    (1..=flowmote::spline::MAX_BINS).contains(&bins),
                    "{}: bins must be 1..={}",
                    ctx(),
                    flowmote::spline::MAX_BINS
                );
            }
            if let Some((_, steps)) = s.ode {
                ensure!(steps >= 1, "{}: needs at least one solver step", ctx());
            }
            if let Some(shape) = s.net {
                check_net(shape, s.bound, s.params).with_context(ctx)?;
            }
        }
        self.validate_weights()
    }
}

fn check_net(shape: MlpShape, bound: Option<f32>, params: &[f32]) -> Result<()> {
    ensure!(
        shape.depth >= 1 && shape.hidden >= 1,
        "conditioner needs hidden ≥ 1 and depth ≥ 1"
    );
    if let Some(bound) = bound {
        ensure!(
            bound.is_finite() && bound > 0.0,
            "clamp / tail bound must be a positive number"
        );
    }
    ensure!(
        params.len() == shape.n_params(),
        "expected {} parameters, found {}",
        shape.n_params(),
        params.len()
    );
    if !params.iter().all(|v| v.is_finite()) {
        bail!("non-finite weight");
    }
    Ok(())
}
