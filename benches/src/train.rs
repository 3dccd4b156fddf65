//! A training epoch over the run-time-sized [`DynFlow`] of the tools library.
//!
//! This is the *fallback* the benchmark uses while the tools trainer
//! (`tools/src/train.rs`) has not landed: per mini-batch, the gradient of the
//! mean negative log-likelihood by [`DynFlow::nll_backward`] (the core's own
//! backward passes) and one Adam step, MAF gradients masked with
//! [`made_mask_params`]. It does what one epoch of maximum-likelihood training
//! costs, with no tricks the real trainer could not use.

use crate::{fill_uniform, rng, Rng};
use flowmote::cnf::ContinuousFlowRef;
use flowmote::coupling::DEFAULT_CLAMP;
use flowmote::maf::made_mask_params;
use flowmote::mlp::{MlpGrad, MlpRef, MlpShape};
use flowmote::Activation;
use flowmote_tools::model::{Act, DynFlow, Layer, Net, Workspace};

/// Flow family of [`dyn_flow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// MAF layers.
    Maf,
    /// Affine coupling layers (split `d/2 + (d − d/2)`).
    Coupling,
}

/// A run-time-sized flow like the benchmark's static ones: a frozen
/// standardisation, then `layers` MAF or coupling layers (`depth` hidden
/// layers of `hidden` units, tanh) with a reversal between them; seeded
/// random weights (MAF weights masked) drawn as a usual initialisation:
/// uniform in `±1/√fan_in` for every layer, the output layer included (what
/// PyTorch and Equinox do, so training starts where the peers' does).
pub fn dyn_flow(kind: Kind, d: usize, layers: usize, hidden: usize, depth: usize, seed: u64) -> DynFlow {
    let mut r = rng(seed);
    let net = Net {
        hidden,
        depth,
        act: Act::Tanh,
    };
    let mut ls = vec![Layer::ActNorm {
        log_scale: vec![0.0; d],
        shift: vec![0.0; d],
        frozen: true,
    }];
    for i in 0..layers {
        if i > 0 {
            ls.push(Layer::Reverse);
        }
        let layer = match kind {
            Kind::Maf => Layer::Maf {
                net,
                clamp: DEFAULT_CLAMP,
                params: Vec::new(),
            },
            Kind::Coupling => Layer::AffineCoupling {
                a: d / 2,
                b: d - d / 2,
                net,
                clamp: DEFAULT_CLAMP,
                params: Vec::new(),
            },
        };
        let shape = layer.mlp_shape(d).expect("conditioned layer");
        let p = random_params(&mut r, shape, kind == Kind::Maf, 1.0);
        ls.push(match layer {
            Layer::Maf { net, clamp, .. } => Layer::Maf { net, clamp, params: p },
            Layer::AffineCoupling { a, b, net, clamp, .. } => Layer::AffineCoupling {
                a,
                b,
                net,
                clamp,
                params: p,
            },
            other => other,
        });
    }
    let f = DynFlow { dim: d, layers: ls };
    f.validate().expect("valid benchmark flow");
    f
}

/// Flat MLP parameters drawn like [`crate::random_mlp`] (weights `±1/√fan_in`,
/// the output layer and biases scaled by `out_scale`), masked for MADE if asked.
pub fn random_params<R: Rng>(r: &mut R, shape: MlpShape, made: bool, out_scale: f32) -> Vec<f32> {
    let mut p = vec![0.0; shape.n_params()];
    {
        let g = MlpGrad::from_flat(shape, &mut p).expect("shape");
        fill_uniform(r, g.w_in, 1.0 / (shape.input.max(1) as f32).sqrt());
        fill_uniform(r, g.w_cond, 1.0);
        fill_uniform(r, g.b_in, 0.1);
        fill_uniform(r, g.w_hid, 1.0 / (shape.hidden as f32).sqrt());
        fill_uniform(r, g.b_hid, 0.1);
        fill_uniform(r, g.w_out, out_scale / (shape.hidden as f32).sqrt());
        fill_uniform(r, g.b_out, 0.1 * out_scale);
    }
    if made {
        made_mask_params(shape, &mut p).expect("MADE shape");
    }
    p
}

fn params_mut(l: &mut Layer) -> Option<&mut Vec<f32>> {
    match l {
        Layer::Maf { params, .. } | Layer::AffineCoupling { params, .. } | Layer::Cnf { params, .. } => Some(params),
        _ => None,
    }
}

/// Adam, the tool's own (used here with no weight decay).
pub use flowmote_tools::train::Adam;

/// Trainer state of one NLL epoch ([`NllTrainer::epoch`]): gradients, Adam moments, workspace.
#[derive(Debug)]
pub struct NllTrainer {
    grads: Vec<Vec<f32>>,
    adam: Vec<Adam>,
    /// Per-thread gradient buffers and workspaces (thread 0 uses `grads`).
    per_thread: Vec<(Vec<Vec<f32>>, Workspace)>,
    /// Mini-batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f32,
}

impl NllTrainer {
    /// State for `flow`, splitting each mini-batch over `threads` threads
    /// (scoped threads, per-thread gradients summed before the step).
    pub fn new(flow: &DynFlow, batch: usize, lr: f32, threads: usize) -> Self {
        let grads: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
        let adam = grads.iter().map(|g| Adam::new(g.len())).collect();
        NllTrainer {
            per_thread: (0..threads.max(1))
                .map(|_| (grads.clone(), Workspace::new(flow)))
                .collect(),
            grads,
            adam,
            batch,
            lr,
        }
    }

    /// One epoch of maximum-likelihood training over `rows` (flat, `dim` per
    /// row, in the given order): mean NLL gradient per mini-batch by
    /// [`DynFlow::nll_backward`], then an Adam step (MAF gradients masked).
    /// Returns the mean training NLL of the epoch.
    pub fn epoch(&mut self, flow: &mut DynFlow, rows: &[f32]) -> f64 {
        let d = flow.dim;
        let mut total = 0.0f64;
        let mut n = 0usize;
        // Whole mini-batches only (a short last batch is dropped, as FlowJAX
        // and PyTorch's `drop_last` do: a batch of one row is mostly noise).
        let whole = if rows.len() >= self.batch * d {
            rows.len() / (self.batch * d) * self.batch * d
        } else {
            rows.len()
        };
        for batch in rows[..whole].chunks(self.batch * d) {
            let nt = self.per_thread.len();
            let per = (batch.len() / d).div_ceil(nt).max(1) * d;
            let f: &DynFlow = flow;
            let parts: Vec<(f64, usize)> = std::thread::scope(|sc| {
                let hs: Vec<_> = self
                    .per_thread
                    .iter_mut()
                    .zip(batch.chunks(per))
                    .map(|((grads, ws), rows)| {
                        sc.spawn(move || {
                            for g in grads.iter_mut() {
                                g.fill(0.0);
                            }
                            let (mut tot, mut m) = (0.0f64, 0usize);
                            for x in rows.chunks_exact(d) {
                                if let Ok(nll) = f.nll_backward(x, grads, ws) {
                                    tot += nll as f64;
                                    m += 1;
                                }
                            }
                            (tot, m)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("training thread")).collect()
            });
            let used = parts.len();
            let m: usize = parts.iter().map(|p| p.1).sum();
            total += parts.iter().map(|p| p.0).sum::<f64>();
            for (i, g) in self.grads.iter_mut().enumerate() {
                g.fill(0.0);
                for (tg, _) in &self.per_thread[..used] {
                    for (a, b) in g.iter_mut().zip(&tg[i]) {
                        *a += b;
                    }
                }
            }
            n += m;
            if m == 0 {
                continue;
            }
            let scale = 1.0 / m as f32;
            for (i, layer) in flow.layers.iter_mut().enumerate() {
                let shape = layer.mlp_shape(d);
                let is_maf = matches!(layer, Layer::Maf { .. });
                if let Some(p) = params_mut(layer) {
                    if is_maf {
                        made_mask_params(shape.expect("MAF shape"), &mut self.grads[i]).expect("MADE shape");
                    }
                    self.adam[i].step(p, &self.grads[i], scale, self.lr, 0.0);
                }
            }
        }
        total / n.max(1) as f64
    }
}

/// Parameters and Adam state of a continuous flow's field, for
/// [`FmTrainer::epoch`].
#[derive(Debug)]
pub struct FmTrainer {
    /// Field shape (`d` inputs + time, `d` outputs).
    pub shape: MlpShape,
    /// Flat field parameters.
    pub params: Vec<f32>,
    grad: Vec<f32>,
    adam: Adam,
    scratch: Vec<f32>,
    z: Vec<f32>,
    /// Mini-batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f32,
}

impl FmTrainer {
    /// A depth-1 tanh field for `d` dimensions with `hidden` units, seeded.
    pub fn new(d: usize, hidden: usize, batch: usize, lr: f32, seed: u64) -> Self {
        let shape = MlpShape {
            input: d,
            cond: 1,
            hidden,
            depth: 1,
            output: d,
        };
        let mut r = rng(seed);
        let params = random_params(&mut r, shape, false, 1.0);
        let v = ContinuousFlowRef::new(
            MlpRef::from_flat(shape, Activation::Tanh, &params).expect("shape"),
            crate::CNF_SOLVER,
            crate::CNF_STEPS,
        );
        FmTrainer {
            shape,
            grad: vec![0.0; params.len()],
            adam: Adam::new(params.len()),
            scratch: vec![0.0; v.train_scratch_len()],
            z: vec![0.0; d],
            params,
            batch,
            lr,
        }
    }

    /// One epoch of flow matching over `rows`: per row a noise draw and a
    /// time, [`ContinuousFlowRef::flow_matching_backward`]; an Adam step per
    /// mini-batch. Returns the mean loss.
    pub fn epoch<R: Rng>(&mut self, rows: &[f32], rng: &mut R) -> f64 {
        let d = self.shape.input;
        let mut total = 0.0f64;
        let mut n = 0usize;
        for batch in rows.chunks(self.batch * d) {
            self.grad.fill(0.0);
            let m = batch.len() / d;
            {
                let net = MlpRef::from_flat(self.shape, Activation::Tanh, &self.params).expect("shape");
                let v = ContinuousFlowRef::new(net, crate::CNF_SOLVER, crate::CNF_STEPS);
                let mut g = MlpGrad::from_flat(self.shape, &mut self.grad).expect("shape");
                for x in batch.chunks_exact(d) {
                    flowmote::normal::fill_standard_normal(rng, &mut self.z);
                    let t = crate::uniform(rng, 0.0, 1.0);
                    total += v.flow_matching_backward(x, &self.z, t, &mut g, &mut self.scratch) as f64;
                }
            }
            n += m;
            self.adam
                .step(&mut self.params, &self.grad, 1.0 / m.max(1) as f32, self.lr, 0.0);
        }
        total / n.max(1) as f64
    }
}

/// Read a CSV of numbers with a header line; drops a `label` column.
/// Returns `(rows flat, columns)`.
pub fn read_csv(path: &std::path::Path) -> std::io::Result<(Vec<f32>, usize)> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let skip = header.iter().position(|h| h.trim() == "label");
    let cols = header.len() - usize::from(skip.is_some());
    let mut v = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        for (j, f) in line.split(',').enumerate() {
            if Some(j) != skip {
                v.push(f.trim().parse::<f32>().map_err(std::io::Error::other)?);
            }
        }
    }
    Ok((v, cols))
}

/// Standardise rows in place with their own per-column mean and std.
pub fn standardise(rows: &mut [f32], d: usize) {
    let n = (rows.len() / d).max(1) as f64;
    for j in 0..d {
        let mean = rows.iter().skip(j).step_by(d).map(|&v| v as f64).sum::<f64>() / n;
        let var = rows
            .iter()
            .skip(j)
            .step_by(d)
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in rows.iter_mut().skip(j).step_by(d) {
            *v = ((*v as f64 - mean) / sd) as f32;
        }
    }
}
