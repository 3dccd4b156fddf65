//! Continuous normalizing flows (CNF) with an exact divergence and fixed-step
//! solvers, trained by flow matching.
//!
//! A vector field `f(x, t)` — an MLP with `D` inputs, time as its scalar
//! condition input (`shape.cond = 1`) and `D` outputs — defines the ODE
//! `dx/dt = f(x, t)`. Convention (flow matching, straight paths):
//! `x_t = (1 − t)·z + t·x_data`, so `t = 0` is the latent (noise) end, `t = 1`
//! the data end, and the field regresses `x_data − z`.
//!
//! * [`ContinuousFlowRef::inverse`] (latent → data, sampling) integrates
//!   `t: 0 → 1`; [`ContinuousFlowRef::forward`] (data → latent, scoring)
//!   integrates `t: 1 → 0`.
//! * Both integrate the augmented state `(x, ℓ)` with `dℓ/dt = tr ∂f/∂x`
//!   (instantaneous change of variables), so each returns the log-det of its
//!   own map: `forward` returns `ℓ = ∫₁⁰ tr(∂f/∂x) dt = −∫₀¹ tr dt`, `inverse`
//!   returns `+∫₀¹ tr dt`. The stage values of `ℓ` use the same Runge–Kutta
//!   weights as `x`, so the returned log-det matches `log|det|` of the
//!   discrete map up to the solver's error (checked against finite-difference
//!   Jacobians in `host-tests/tests/cnf.rs`).
//!
//! ## The exact trace and its cost
//! With `H` hidden units, `D` dimensions and `depth` hidden layers, one field
//! evaluation costs `H·(D + 1) + (depth − 1)·H² + D·H` MACs plus `depth·H`
//! activations. The trace of the Jacobian adds:
//! * **depth 1, precomputed** `c_k = Σ_i W_out[i,k]·W_in[k,i]` (what [`Cnf`]
//!   stores, computed in its `const fn` constructor):
//!   `tr = Σ_k act'(a_k)·c_k`, **`H`** MACs + `H` derivatives;
//! * **depth 1, on the fly** (view without coefficients, e.g. the host
//!   trainer): **`H·(D + 1)`** MACs — as much again as the output layer;
//! * **any depth**, `D` forward-mode passes (JVP with `e_i`, keeping only
//!   component `i` of the output tangent): **`D·(2H + (depth − 1)·H²)`** MACs,
//!   i.e. about `D` times the hidden part of a forward pass. For depth 1 this
//!   general path costs `2·H·D`, twice the on-the-fly fast path and `2D` times
//!   the precomputed one.
//!
//! Example (`D = 2`, `H = 32`, depth 1): field 160 MACs + 32 `tanh`; trace
//! 32 MACs precomputed, 96 on the fly, 128 by JVP. A solver step calls the
//! field once (Euler), twice (Heun) or four times (RK4).
//!
//! Measured on the host (x86-64, release, ns per field + trace, noisy shared
//! machine; `trace_cost_timing` in `host-tests/tests/cnf.rs`), where `tanhf`
//! dominates: `D = 2, H = 32`: field alone 430, precomputed 440, on the fly
//! 470, JVP 505; `D = 8, H = 64`: 1100–1300, 1100–1300, 1500, 1650–1750. With
//! depth 2 the `D·H²` tangent passes dominate: `D = 2, H = 32` field 1170 vs
//! field + JVP trace 2000; `D = 8, H = 64` 4700 vs 16800. So for depth 1 the
//! precomputed trace is almost free, and a deeper field's exact trace costs
//! about `D` extra hidden layers per evaluation.
//!
//! ## Buffers
//! The view takes three scratch slices so that the const-generic [`Cnf`] can
//! pass stack arrays of stable-Rust sizes: `xbuf` (`3·D`: stage sum, stage
//! state, stage slope), `hbuf` (`3·H`: first-layer activations and two
//! tangents) and `acts` (`(depth − 1)·H`: deeper activations, empty for
//! depth 1). [`ContinuousFlowRef::scratch_len`] and the `…_flat` methods split
//! one slice instead, for run-time-sized host models.

use crate::layer::SliceBijector;
use crate::mlp::{dot, Mlp, MlpGrad, MlpRef};
use crate::{Bijector, Error};

/// Fixed-step ODE solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Solver {
    /// Explicit Euler: 1 field evaluation per step, global error `O(h)`.
    Euler,
    /// Heun (explicit trapezoid): 2 evaluations per step, `O(h²)`.
    Heun,
    /// Classical Runge–Kutta: 4 evaluations per step, `O(h⁴)`; the default.
    #[default]
    Rk4,
}

impl Solver {
    /// Field evaluations per step.
    pub const fn stages(self) -> usize {
        match self {
            Solver::Euler => 1,
            Solver::Heun => 2,
            Solver::Rk4 => 4,
        }
    }

    /// Order of the global error.
    pub const fn order(self) -> usize {
        match self {
            Solver::Euler => 1,
            Solver::Heun => 2,
            Solver::Rk4 => 4,
        }
    }
}

/// Depth-1 trace coefficient `c_k = Σ_i W_out[i,k]·W_in[k,i]` of hidden unit
/// `k` (the field has as many outputs as inputs). Summed in `i` order, the
/// same as [`Cnf::new`], so both give bit-identical traces.
#[inline(always)]
pub fn trace_coefficient(net: &MlpRef<'_>, k: usize) -> f32 {
    let (n, h) = (net.shape.input, net.shape.hidden);
    let mut c = 0.0;
    for i in 0..n {
        c += net.w_out[i * h + k] * net.w_in[k * n + i];
    }
    c
}

/// Fill `coef[..hidden]` with [`trace_coefficient`] for every hidden unit
/// (for a host view that wants the precomputed fast path).
pub fn trace_coefficients(net: &MlpRef<'_>, coef: &mut [f32]) {
    for (k, c) in coef.iter_mut().enumerate().take(net.shape.hidden) {
        *c = trace_coefficient(net, k);
    }
}

/// Primal pass of the field keeping what the trace needs: evaluates
/// `out = f(x, t)` exactly as [`MlpRef::forward`] does (same summation
/// order), leaving the activation *derivatives* `act'(a)` of the first layer
/// in `d0[..H]` and of layer `l ≥ 1` in `acts[(l − 1)·H..l·H]`.
#[inline(always)]
fn primal_with_derivatives(net: &MlpRef<'_>, x: &[f32], t: f32, d0: &mut [f32], acts: &mut [f32], out: &mut [f32]) {
    let s = net.shape;
    let (n, h) = (s.input, s.hidden);
    for k in 0..h {
        let row = &net.w_in[k * n..(k + 1) * n];
        let mut a = net.b_in[k] + dot(row, &x[..n]);
        if s.cond == 1 {
            a += net.w_cond[k] * t;
        }
        d0[k] = net.act.apply(a);
    }
    for l in 1..s.depth {
        let w = &net.w_hid[(l - 1) * h * h..l * h * h];
        let b = &net.b_hid[(l - 1) * h..l * h];
        let (prev, next): (&[f32], &mut [f32]) = if l == 1 {
            (&d0[..h], &mut acts[..h])
        } else {
            let (p, q) = acts[(l - 2) * h..l * h].split_at_mut(h);
            (p, q)
        };
        for k in 0..h {
            next[k] = net.act.apply(b[k] + dot(&w[k * h..(k + 1) * h], prev));
        }
    }
    let last: &[f32] = if s.depth == 1 {
        &d0[..h]
    } else {
        &acts[(s.depth - 2) * h..(s.depth - 1) * h]
    };
    for (j, o) in out[..s.output].iter_mut().enumerate() {
        *o = net.b_out[j] + dot(&net.w_out[j * h..(j + 1) * h], last);
    }
    // Activations are no longer needed: keep their derivatives instead, so
    // the D tangent passes do not recompute them.
    for v in d0[..h].iter_mut().chain(acts[..(s.depth - 1) * h].iter_mut()) {
        *v = net.act.derivative_from_output(*v);
    }
}

/// `f(x, t)` into `out` and the exact `tr ∂f/∂x` by the depth-1 fast path
/// `Σ_k act'(a_k)·c_k`. `coef` holds the `c_k` ([`trace_coefficients`]) or
/// is empty to compute them on the fly. `hbuf` holds `hidden` floats.
///
/// Requires `shape.depth == 1` and `shape.output == shape.input`.
#[inline(always)]
pub fn field_trace_depth1(net: &MlpRef<'_>, coef: &[f32], x: &[f32], t: f32, hbuf: &mut [f32], out: &mut [f32]) -> f32 {
    let h = net.shape.hidden;
    let d = &mut hbuf[..h];
    primal_with_derivatives(net, x, t, d, &mut [], out);
    let mut tr = 0.0;
    if coef.len() >= h {
        for k in 0..h {
            tr += d[k] * coef[k];
        }
    } else {
        for k in 0..h {
            tr += d[k] * trace_coefficient(net, k);
        }
    }
    tr
}

/// `f(x, t)` into `out` and the exact `tr ∂f/∂x` for any depth by `D`
/// forward-mode passes: the tangent of input `e_i` is pushed through the
/// network and component `i` of the output tangent is summed.
/// `hbuf` holds `3·hidden` floats, `acts` `(depth − 1)·hidden`.
///
/// Requires `shape.output == shape.input`.
#[inline(always)]
pub fn field_trace_jvp(
    net: &MlpRef<'_>,
    x: &[f32],
    t: f32,
    hbuf: &mut [f32],
    acts: &mut [f32],
    out: &mut [f32],
) -> f32 {
    let s = net.shape;
    let (n, h) = (s.input, s.hidden);
    let (d0, rest) = hbuf.split_at_mut(h);
    let (tan_a, rest) = rest.split_at_mut(h);
    let tan_b = &mut rest[..h];
    primal_with_derivatives(net, x, t, d0, acts, out);
    let mut tr = 0.0;
    for i in 0..n {
        // First layer: ∂h/∂x_i = act'(a)·W_in[:, i].
        for k in 0..h {
            tan_a[k] = d0[k] * net.w_in[k * n + i];
        }
        let (mut cur, mut nxt) = (&mut *tan_a, &mut *tan_b);
        for l in 1..s.depth {
            let w = &net.w_hid[(l - 1) * h * h..l * h * h];
            let dl = &acts[(l - 1) * h..l * h];
            for k in 0..h {
                nxt[k] = dl[k] * dot(&w[k * h..(k + 1) * h], cur);
            }
            core::mem::swap(&mut cur, &mut nxt);
        }
        tr += dot(&net.w_out[i * h..(i + 1) * h], cur);
    }
    tr
}

/// Borrowed continuous flow on run-time sizes: the one implementation.
#[derive(Clone, Copy, Debug)]
pub struct ContinuousFlowRef<'a> {
    /// Vector field `f(x, t)`: `D` inputs, `cond = 1` (time), `D` outputs.
    pub net: MlpRef<'a>,
    /// Fixed-step solver.
    pub solver: Solver,
    /// Number of solver steps over the unit time interval (0 = identity).
    pub steps: usize,
    /// Precomputed depth-1 trace coefficients ([`trace_coefficients`]), or
    /// empty to compute them on the fly. Ignored for deeper fields.
    pub coef: &'a [f32],
}

impl<'a> ContinuousFlowRef<'a> {
    /// A view that computes the depth-1 trace coefficients on the fly.
    pub const fn new(net: MlpRef<'a>, solver: Solver, steps: usize) -> Self {
        ContinuousFlowRef {
            net,
            solver,
            steps,
            coef: &[],
        }
    }

    /// Dimension `D`.
    #[inline(always)]
    pub fn dim(&self) -> usize {
        self.net.shape.input
    }

    /// `true` if the field maps `D` inputs and a time input to `D` outputs.
    pub fn is_valid(&self) -> bool {
        let s = self.net.shape;
        s.output == s.input && s.cond == 1 && s.depth >= 1
    }

    /// Field evaluations of one `forward` or `inverse`.
    pub fn evaluations(&self) -> usize {
        self.steps * self.solver.stages()
    }

    /// Lengths of the three buffers `(xbuf, hbuf, acts)` of
    /// [`ContinuousFlowRef::forward`]: `(3·D, 3·H, (depth − 1)·H)`.
    pub fn buffer_lens(&self) -> (usize, usize, usize) {
        let s = self.net.shape;
        (3 * s.input, 3 * s.hidden, (s.depth - 1) * s.hidden)
    }

    /// Floats of the single scratch slice of the `…_flat` methods.
    pub fn scratch_len(&self) -> usize {
        let (a, b, c) = self.buffer_lens();
        a + b + c
    }

    /// `out = f(x, t)` and returns the exact `tr ∂f/∂x` (depth-1 fast path or
    /// `D` forward-mode passes). Buffers as in [`ContinuousFlowRef::forward`].
    #[inline(always)]
    pub fn field_with_trace(&self, x: &[f32], t: f32, hbuf: &mut [f32], acts: &mut [f32], out: &mut [f32]) -> f32 {
        if self.net.shape.depth == 1 {
            field_trace_depth1(&self.net, self.coef, x, t, hbuf, out)
        } else {
            field_trace_jvp(&self.net, x, t, hbuf, acts, out)
        }
    }

    /// Integrate `dx/dt = f(x, t)`, `dℓ/dt = tr ∂f/∂x` from `t0` to `t1` in
    /// `steps` fixed steps, `x` in place; returns `ℓ(t1) − ℓ(t0)`, the
    /// log-det of the map `x(t0) ↦ x(t1)` (up to the solver's error).
    #[inline(always)]
    pub fn integrate(
        &self,
        x: &mut [f32],
        t0: f32,
        t1: f32,
        xbuf: &mut [f32],
        hbuf: &mut [f32],
        acts: &mut [f32],
    ) -> f32 {
        let d = self.dim();
        if self.steps == 0 {
            return 0.0;
        }
        let x = &mut x[..d];
        let (acc, rest) = xbuf.split_at_mut(d);
        let (xs, rest) = rest.split_at_mut(d);
        let k = &mut rest[..d];
        let n = self.steps as f32;
        let h = (t1 - t0) / n;
        let mut ld = 0.0;
        for step in 0..self.steps {
            // t from the step index, not by accumulation, so the last step
            // ends exactly at t1.
            let t = t0 + (t1 - t0) * (step as f32 / n);
            match self.solver {
                Solver::Euler => {
                    let tr = self.field_with_trace(x, t, hbuf, acts, k);
                    for (xi, ki) in x.iter_mut().zip(k.iter()) {
                        *xi += h * ki;
                    }
                    ld += h * tr;
                }
                Solver::Heun => {
                    let tr1 = self.field_with_trace(x, t, hbuf, acts, acc);
                    for j in 0..d {
                        xs[j] = x[j] + h * acc[j];
                    }
                    let tr2 = self.field_with_trace(xs, t + h, hbuf, acts, k);
                    let h2 = 0.5 * h;
                    for j in 0..d {
                        x[j] += h2 * (acc[j] + k[j]);
                    }
                    ld += h2 * (tr1 + tr2);
                }
                Solver::Rk4 => {
                    let h2 = 0.5 * h;
                    let tr1 = self.field_with_trace(x, t, hbuf, acts, acc);
                    for j in 0..d {
                        xs[j] = x[j] + h2 * acc[j];
                    }
                    let tr2 = self.field_with_trace(xs, t + h2, hbuf, acts, k);
                    for j in 0..d {
                        acc[j] += 2.0 * k[j];
                        xs[j] = x[j] + h2 * k[j];
                    }
                    let tr3 = self.field_with_trace(xs, t + h2, hbuf, acts, k);
                    for j in 0..d {
                        acc[j] += 2.0 * k[j];
                        xs[j] = x[j] + h * k[j];
                    }
                    let tr4 = self.field_with_trace(xs, t + h, hbuf, acts, k);
                    let h6 = h / 6.0;
                    for j in 0..d {
                        x[j] += h6 * (acc[j] + k[j]);
                    }
                    ld += h6 * (tr1 + 2.0 * (tr2 + tr3) + tr4);
                }
            }
        }
        ld
    }

    /// Data → latent in place (integrates `t: 1 → 0`); returns
    /// `log|det ∂forward/∂x| = ∫₁⁰ tr(∂f/∂x) dt`. Buffers: `xbuf` `3·D`,
    /// `hbuf` `3·H`, `acts` `(depth − 1)·H` floats
    /// ([`ContinuousFlowRef::buffer_lens`]). Never panics on non-finite
    /// values (they propagate to the result).
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], xbuf: &mut [f32], hbuf: &mut [f32], acts: &mut [f32]) -> f32 {
        self.integrate(x, 1.0, 0.0, xbuf, hbuf, acts)
    }

    /// Latent → data in place (integrates `t: 0 → 1`); returns the log-det of
    /// this map, `∫₀¹ tr(∂f/∂x) dt`. Buffers as in [`ContinuousFlowRef::forward`].
    #[inline(always)]
    pub fn inverse(&self, z: &mut [f32], xbuf: &mut [f32], hbuf: &mut [f32], acts: &mut [f32]) -> f32 {
        self.integrate(z, 0.0, 1.0, xbuf, hbuf, acts)
    }

    /// [`ContinuousFlowRef::forward`] with one scratch slice of
    /// [`ContinuousFlowRef::scratch_len`] floats.
    pub fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32 {
        let (xb, hb, ab) = self.split_scratch(scratch);
        self.forward(x, xb, hb, ab)
    }

    /// [`ContinuousFlowRef::inverse`] with one scratch slice of
    /// [`ContinuousFlowRef::scratch_len`] floats.
    pub fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32 {
        let (xb, hb, ab) = self.split_scratch(scratch);
        self.inverse(z, xb, hb, ab)
    }

    fn split_scratch<'s>(&self, s: &'s mut [f32]) -> (&'s mut [f32], &'s mut [f32], &'s mut [f32]) {
        let (a, b, _) = self.buffer_lens();
        let (xb, rest) = s.split_at_mut(a);
        let (hb, ab) = rest.split_at_mut(b);
        (xb, hb, ab)
    }

    /// Floats of the scratch slice of [`ContinuousFlowRef::flow_matching_backward`]
    /// and [`ContinuousFlowRef::flow_matching_loss`]:
    /// `depth·H` activations, `3·D` (point, output, target) and `2·H`.
    pub fn train_scratch_len(&self) -> usize {
        let s = self.net.shape;
        s.n_activations() + 3 * s.input + 2 * s.hidden
    }

    /// Flow-matching loss of one sample without gradient:
    /// `½‖f(x_t, t) − (x_data − z)‖²` with `x_t = (1 − t)·z + t·x_data`.
    pub fn flow_matching_loss(&self, x_data: &[f32], z: &[f32], t: f32, scratch: &mut [f32]) -> f32 {
        let s = self.net.shape;
        let d = s.input;
        let (acts, rest) = scratch.split_at_mut(s.n_activations());
        let (xt, rest) = rest.split_at_mut(d);
        let (out, rest) = rest.split_at_mut(d);
        let target = &mut rest[..d];
        interpolate(x_data, z, t, xt, target);
        self.net.forward_cached(xt, t, acts, out);
        let mut loss = 0.0;
        for j in 0..d {
            let r = out[j] - target[j];
            loss += 0.5 * r * r;
        }
        loss
    }

    /// Flow-matching loss of one sample, `½‖f(x_t, t) − (x_data − z)‖²` with
    /// `x_t = (1 − t)·z + t·x_data` (noise `z`, time `t` drawn by the
    /// caller), returned; its gradient with respect to every field parameter
    /// is *added* to `grad`. `scratch` has
    /// [`ContinuousFlowRef::train_scratch_len`] floats. Allocation-free.
    pub fn flow_matching_backward(
        &self,
        x_data: &[f32],
        z: &[f32],
        t: f32,
        grad: &mut MlpGrad<'_>,
        scratch: &mut [f32],
    ) -> f32 {
        let s = self.net.shape;
        let d = s.input;
        let (acts, rest) = scratch.split_at_mut(s.n_activations());
        let (xt, rest) = rest.split_at_mut(d);
        let (out, rest) = rest.split_at_mut(d);
        let (target, rest) = rest.split_at_mut(d);
        let (t0, t1) = rest.split_at_mut(s.hidden);
        interpolate(x_data, z, t, xt, target);
        self.net.forward_cached(xt, t, acts, out);
        let mut loss = 0.0;
        for j in 0..d {
            let r = out[j] - target[j];
            loss += 0.5 * r * r;
            out[j] = r; // ∂loss/∂out
        }
        self.net.backward(xt, t, acts, out, None, t0, t1, grad);
        loss
    }
}

/// Trained by flow matching, not by maximum likelihood: no
/// [`SliceBackward`](crate::layer::SliceBackward).
impl SliceBijector for ContinuousFlowRef<'_> {
    fn scratch_len(&self) -> usize {
        ContinuousFlowRef::scratch_len(self)
    }
    fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32 {
        ContinuousFlowRef::forward_flat(self, x, scratch)
    }
    fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32 {
        ContinuousFlowRef::inverse_flat(self, z, scratch)
    }
}

/// `x_t = (1 − t)·z + t·x`, `target = x − z`.
#[inline(always)]
fn interpolate(x: &[f32], z: &[f32], t: f32, xt: &mut [f32], target: &mut [f32]) {
    for j in 0..xt.len() {
        xt[j] = (1.0 - t) * z[j] + t * x[j];
        target[j] = x[j] - z[j];
    }
}

/// Const-generic continuous flow for `static` models: dimension `D`, a field
/// with `H` hidden units and `L + 1` hidden layers, time weights `w_t`.
///
/// The weights are private so that the depth-1 trace coefficients, computed
/// once by the `const fn` [`Cnf::new`], cannot go stale; the solver and the
/// step count can be changed freely.
///
/// ```
/// use flowmote::{Activation, Cnf, Flow, Mlp, Solver};
///
/// // f(x, t) = W_out·tanh(W_in·x + w_t·t + b_in) + b_out, 2-D, 2 hidden units.
/// static MODEL: Flow<2, Cnf<2, 2, 0>> = Flow::new(Cnf::new(
///     Mlp {
///         act: Activation::Tanh,
///         w_in: [[0.5, 0.0], [0.0, -0.5]],
///         b_in: [0.1, 0.0],
///         w_hid: [],
///         b_hid: [],
///         w_out: [[[1.0, 0.0], [0.0, 0.8]]],
///         b_out: [[0.2, -0.1]],
///     },
///     [0.3, 0.3],
///     Solver::Rk4,
///     8,
/// ));
///
/// let lp = MODEL.log_prob(&[0.5, -1.0]).unwrap();
/// assert!(lp.is_finite());
/// assert!(MODEL.log_prob(&[f32::NAN, 0.0]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Cnf<const D: usize, const H: usize, const L: usize> {
    net: Mlp<D, H, L, D, 1>,
    w_t: [f32; H],
    coef: [f32; H],
    /// Fixed-step solver.
    pub solver: Solver,
    /// Solver steps over the unit time interval.
    pub steps: usize,
}

impl<const D: usize, const H: usize, const L: usize> Cnf<D, H, L> {
    /// A CNF with field `net` (time enters the first layer through `w_t`),
    /// integrated by `solver` in `steps` steps. Precomputes the depth-1 trace
    /// coefficients; usable in a `static`.
    pub const fn new(net: Mlp<D, H, L, D, 1>, w_t: [f32; H], solver: Solver, steps: usize) -> Self {
        let mut coef = [0.0; H];
        let mut k = 0;
        while k < H {
            let mut c = 0.0;
            let mut i = 0;
            while i < D {
                c += net.w_out[0][i][k] * net.w_in[k][i];
                i += 1;
            }
            coef[k] = c;
            k += 1;
        }
        Cnf {
            net,
            w_t,
            coef,
            solver,
            steps,
        }
    }

    /// The field's weights (time column excluded).
    pub const fn net(&self) -> &Mlp<D, H, L, D, 1> {
        &self.net
    }

    /// The field's time weights (`w_cond` of the view).
    pub const fn w_t(&self) -> &[f32; H] {
        &self.w_t
    }

    /// Borrow as the slice-level view (with the precomputed coefficients).
    #[inline(always)]
    pub fn view(&self) -> ContinuousFlowRef<'_> {
        let mut net = self.net.view();
        net.shape.cond = 1;
        net.w_cond = &self.w_t;
        ContinuousFlowRef {
            net,
            solver: self.solver,
            steps: self.steps,
            coef: &self.coef,
        }
    }
}

impl<const D: usize, const H: usize, const L: usize> Bijector<D> for Cnf<D, H, L> {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let (mut xb, mut hb, mut ab) = ([[0.0; D]; 3], [[0.0; H]; 3], [[0.0; H]; L]);
        Ok(self
            .view()
            .forward(x, xb.as_flattened_mut(), hb.as_flattened_mut(), ab.as_flattened_mut()))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let (mut xb, mut hb, mut ab) = ([[0.0; D]; 3], [[0.0; H]; 3], [[0.0; H]; L]);
        Ok(self
            .view()
            .inverse(z, xb.as_flattened_mut(), hb.as_flattened_mut(), ab.as_flattened_mut()))
    }
}
