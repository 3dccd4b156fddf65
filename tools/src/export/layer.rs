//! Layers: each [`Layer`] as a const-generic type and a value.

use super::node::{atom, f32_lit, floats, list, matrix, strukt, Node};
use super::MAX_TUPLE;
use crate::model::{Act, I8Net, Layer, Net, Storage};
use anyhow::{ensure, Result};
use flowmote::MlpShape;

/// One layer of the exported model.
#[derive(Clone, Debug)]
pub struct Item {
    /// Its type, e.g. `Maf<DIM, 64, 0>`.
    pub ty: String,
    /// Its value (a `const` expression).
    pub value: Node,
    /// The core's types it names (for the `use` line).
    pub uses: Vec<&'static str>,
}

/// How one layer's conditioner weights are written: the storage and, for
/// `i8`, the weights and scales.
#[derive(Clone, Copy, Debug)]
pub enum Stored<'a> {
    /// `f32` (`Mlp`).
    F32,
    /// `f16` bit patterns (`Mlp<…, F16>`), from the `f16` values in `params`.
    F16,
    /// `i8` with row scales (`MlpI8`).
    I8(&'a I8Net),
}

impl Stored<'_> {
    /// The type parameter naming the storage (empty for the `f32` default).
    fn suffix(&self) -> &'static str {
        match self {
            Stored::F32 => "",
            Stored::F16 => ", F16",
            Stored::I8(_) => ", i8",
        }
    }
    /// The core's names the network literal needs.
    fn uses(&self) -> &'static [&'static str] {
        match self {
            Stored::F32 => &["Mlp", "Activation"],
            Stored::F16 => &["Mlp", "Activation", "F16"],
            Stored::I8(_) => &["MlpI8", "Activation"],
        }
    }
}

/// Literals as a matrix of `cols` columns.
fn lit_matrix(v: &[String], cols: usize) -> Node {
    if cols == 0 {
        return list("[", "]", Vec::new());
    }
    list(
        "[",
        "]",
        v.chunks(cols)
            .map(|r| list("[", "]", r.iter().map(|x| atom(x.clone())).collect()))
            .collect(),
    )
}

/// `rows × cols` blocks of `cols`-long rows: `[[[…]; rows]; …]` literals.
fn lit_blocks(v: &[String], rows: usize, cols: usize) -> Node {
    list(
        "[",
        "]",
        v.chunks((rows * cols).max(1)).map(|m| lit_matrix(m, cols)).collect(),
    )
}

/// `Activation::Tanh` etc.: the core's variant names, never listed again.
fn act_path(a: Act) -> String {
    format!("Activation::{:?}", flowmote::Activation::from(a))
}

/// An `Mlp { … }` (or `MlpI8 { … }`) literal from flat parameters
/// (`MlpRef::from_flat` order), outputs split into heads of `out` each, the
/// weight matrices written in the storage `w`. Returns it and the time
/// weights (`w_cond`, empty unless `shape.cond == 1`).
fn mlp_node(shape: MlpShape, net: &Net, out: usize, params: &[f32], w: Stored<'_>) -> Result<(Node, Vec<f32>)> {
    let r = flowmote::MlpRef::from_flat(shape, net.act.into(), params)
        .map_err(|e| anyhow::anyhow!("network parameters do not match their shape: {e:?}"))?;
    let h = shape.hidden;
    ensure!(
        out > 0 && shape.output.is_multiple_of(out),
        "network outputs do not split into heads"
    );
    let f16 = |m: &[f32]| -> Vec<String> {
        m.iter()
            .map(|v| format!("{:#06x}", flowmote::weights::f32_to_f16(*v)))
            .collect()
    };
    let node = match w {
        Stored::F32 => strukt(
            "Mlp",
            vec![
                ("act", atom(act_path(net.act))),
                ("w_in", matrix(r.w_in, shape.input)),
                ("b_in", floats(r.b_in)),
                (
                    "w_hid",
                    list("[", "]", r.w_hid.chunks(h * h).map(|m| matrix(m, h)).collect()),
                ),
                ("b_hid", matrix(r.b_hid, h)),
                (
                    "w_out",
                    list("[", "]", r.w_out.chunks(out * h).map(|m| matrix(m, h)).collect()),
                ),
                ("b_out", matrix(r.b_out, out)),
            ],
        ),
        Stored::F16 => strukt(
            "Mlp",
            vec![
                ("act", atom(act_path(net.act))),
                ("w_in", lit_matrix(&f16(r.w_in), shape.input)),
                ("b_in", floats(r.b_in)),
                ("w_hid", lit_blocks(&f16(r.w_hid), h, h)),
                ("b_hid", matrix(r.b_hid, h)),
                ("w_out", lit_blocks(&f16(r.w_out), out, h)),
                ("b_out", matrix(r.b_out, out)),
            ],
        ),
        Stored::I8(q) => {
            let n_in = r.w_in.len();
            let n_hid = r.w_hid.len();
            ensure!(
                q.q.len() == n_in + n_hid + r.w_out.len() && q.scales.len() == crate::model::matrix_rows(shape),
                "i8 weights do not match the network's shape"
            );
            let ints: Vec<String> = q.q.iter().map(|v| v.to_string()).collect();
            let (s_in, rest) = q.scales.split_at(h);
            let (s_hid, s_out) = rest.split_at(h * (shape.depth - 1));
            strukt(
                "MlpI8",
                vec![
                    ("act", atom(act_path(net.act))),
                    ("w_in", lit_matrix(&ints[..n_in], shape.input)),
                    ("s_in", floats(s_in)),
                    ("b_in", floats(r.b_in)),
                    ("w_hid", lit_blocks(&ints[n_in..n_in + n_hid], h, h)),
                    ("s_hid", matrix(s_hid, h)),
                    ("b_hid", matrix(r.b_hid, h)),
                    ("w_out", lit_blocks(&ints[n_in + n_hid..], out, h)),
                    ("s_out", matrix(s_out, out)),
                    ("b_out", matrix(r.b_out, out)),
                ],
            )
        }
    };
    Ok((node, r.w_cond.to_vec()))
}

fn usizes(v: &[usize]) -> Node {
    list("[", "]", v.iter().map(|i| atom(i.to_string())).collect())
}

/// Type, value and imports of one layer — the one place that knows how a
/// [`Layer`] maps onto the core's const-generic types. `storage` is the
/// flow's ([`Storage`]); `i8` the layer's `i8` weights when it is `i8`.
pub fn layer_item(layer: &Layer, dim: usize, storage: Storage, i8: Option<&I8Net>) -> Result<Item> {
    let shape = layer.mlp_shape(dim);
    let l = |s: &MlpShape| s.depth - 1;
    let w = match (storage, layer.compressible_net(dim), i8) {
        (Storage::F32, ..) | (_, None, _) => Stored::F32,
        (Storage::F16, Some(_), _) => Stored::F16,
        (Storage::I8, Some(_), Some(q)) => Stored::I8(q),
        (Storage::I8, Some(_), None) => anyhow::bail!("the layer has no i8 weights"),
    };
    let uses = |layer: &'static str| {
        let mut u = vec![layer];
        u.extend_from_slice(w.uses());
        u
    };
    let sfx = w.suffix();
    Ok(match layer {
        Layer::ActNorm { log_scale, shift, .. } => Item {
            ty: "ActNorm<DIM>".into(),
            value: list("ActNorm::new(", ")", vec![floats(log_scale), floats(shift)]),
            uses: vec!["ActNorm"],
        },
        Layer::Permutation { perm } => Item {
            ty: "Permutation<DIM>".into(),
            value: list("Permutation::new(", ")", vec![usizes(perm)]),
            uses: vec!["Permutation"],
        },
        Layer::Reverse => Item {
            ty: "Reverse".into(),
            value: atom("Reverse"),
            uses: vec!["Reverse"],
        },
        Layer::AffineCoupling {
            a,
            b,
            net,
            clamp,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, *b, params, w)?;
            Item {
                ty: format!("AffineCoupling<{a}, {b}, {}, {}{sfx}>", s.hidden, l(&s)),
                value: strukt("AffineCoupling", vec![("clamp", atom(f32_lit(*clamp))), ("net", mlp)]),
                uses: uses("AffineCoupling"),
            }
        }
        Layer::Maf { net, clamp, params } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, dim, params, w)?;
            Item {
                ty: format!("Maf<DIM, {}, {}{sfx}>", s.hidden, l(&s)),
                value: strukt("Maf", vec![("clamp", atom(f32_lit(*clamp))), ("net", mlp)]),
                uses: uses("Maf"),
            }
        }
        Layer::SplineCoupling {
            a,
            b,
            bins,
            tail_bound,
            net,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, *b, params, w)?;
            Item {
                ty: format!(
                    "SplineCoupling<{a}, {b}, {}, {}, {bins}, {}{sfx}>",
                    s.hidden,
                    l(&s),
                    3 * bins - 1
                ),
                value: list("SplineCoupling::new(", ")", vec![atom(f32_lit(*tail_bound)), mlp]),
                uses: uses("SplineCoupling"),
            }
        }
        Layer::SplineAutoregressive {
            bins,
            tail_bound,
            net,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, dim, params, w)?;
            Item {
                ty: format!(
                    "SplineAutoregressive<DIM, {}, {}, {bins}, {}{sfx}>",
                    s.hidden,
                    l(&s),
                    3 * bins - 1
                ),
                value: list("SplineAutoregressive::new(", ")", vec![atom(f32_lit(*tail_bound)), mlp]),
                uses: uses("SplineAutoregressive"),
            }
        }
        Layer::LuLinear { perm, sign, params } => {
            ensure!(params.len() == dim * dim + dim, "LU layer: wrong parameter count");
            let (lu, bias) = params.split_at(dim * dim);
            Item {
                ty: "LuLinear<DIM>".into(),
                value: list(
                    "LuLinear::new(",
                    ")",
                    vec![usizes(perm), floats(sign), matrix(lu, dim), floats(bias)],
                ),
                uses: vec!["LuLinear"],
            }
        }
        Layer::TriLinear { params } => {
            let n = flowmote::triangular::packed_len(dim);
            ensure!(params.len() == n + dim, "triangular layer: wrong parameter count");
            let (tri, bias) = params.split_at(n);
            Item {
                ty: format!("TriLinear<DIM, {n}>"),
                value: list("TriLinear::new(", ")", vec![floats(tri), floats(bias)]),
                uses: vec!["TriLinear"],
            }
        }
        Layer::Cnf {
            net,
            solver,
            steps,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, w_t) = mlp_node(s, net, dim, params, Stored::F32)?;
            let solver = format!("Solver::{:?}", flowmote::Solver::from(*solver));
            Item {
                ty: format!("Cnf<DIM, {}, {}>", s.hidden, l(&s)),
                value: list(
                    "Cnf::new(",
                    ")",
                    vec![mlp, floats(&w_t), atom(solver), atom(steps.to_string())],
                ),
                uses: vec!["Cnf", "Mlp", "Activation", "Solver"],
            }
        }
    })
}

/// Group layers into tuples of at most [`MAX_TUPLE`] (nesting as needed).
pub(super) fn nest<T: Clone>(items: Vec<T>, group: &dyn Fn(Vec<T>) -> T) -> T {
    if items.len() <= MAX_TUPLE {
        return group(items);
    }
    let chunks: Vec<T> = items.chunks(MAX_TUPLE).map(|c| group(c.to_vec())).collect();
    nest(chunks, group)
}
