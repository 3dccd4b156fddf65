//! Layers: each [`Layer`] as a const-generic type and a value.

use super::node::{atom, f32_lit, floats, list, matrix, strukt, Node};
use super::MAX_TUPLE;
use crate::model::{Act, Layer, Net};
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
    pub uses: &'static [&'static str],
}

/// `Activation::Tanh` etc.: the core's variant names, never listed again.
fn act_path(a: Act) -> String {
    format!("Activation::{:?}", flowmote::Activation::from(a))
}

/// An `Mlp { … }` literal from flat parameters (`MlpRef::from_flat` order),
/// outputs split into heads of `out` each. Returns it and the time weights
/// (`w_cond`, empty unless `shape.cond == 1`).
fn mlp_node(shape: MlpShape, net: &Net, out: usize, params: &[f32]) -> Result<(Node, Vec<f32>)> {
    let r = flowmote::MlpRef::from_flat(shape, net.act.into(), params)
        .map_err(|e| anyhow::anyhow!("network parameters do not match their shape: {e:?}"))?;
    let h = shape.hidden;
    ensure!(
        out > 0 && shape.output.is_multiple_of(out),
        "network outputs do not split into heads"
    );
    let node = strukt(
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
    );
    Ok((node, r.w_cond.to_vec()))
}

fn usizes(v: &[usize]) -> Node {
    list("[", "]", v.iter().map(|i| atom(i.to_string())).collect())
}

/// Type, value and imports of one layer — the one place that knows how a
/// [`Layer`] maps onto the core's const-generic types.
pub fn layer_item(layer: &Layer, dim: usize) -> Result<Item> {
    let shape = layer.mlp_shape(dim);
    let l = |s: &MlpShape| s.depth - 1;
    Ok(match layer {
        Layer::ActNorm { log_scale, shift, .. } => Item {
            ty: "ActNorm<DIM>".into(),
            value: strukt(
                "ActNorm",
                vec![("log_scale", floats(log_scale)), ("shift", floats(shift))],
            ),
            uses: &["ActNorm"],
        },
        Layer::Permutation { perm } => Item {
            ty: "Permutation<DIM>".into(),
            value: list("Permutation::new(", ")", vec![usizes(perm)]),
            uses: &["Permutation"],
        },
        Layer::Reverse => Item {
            ty: "Reverse".into(),
            value: atom("Reverse"),
            uses: &["Reverse"],
        },
        Layer::AffineCoupling {
            a,
            b,
            net,
            clamp,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, *b, params)?;
            Item {
                ty: format!("AffineCoupling<{a}, {b}, {}, {}>", s.hidden, l(&s)),
                value: strukt("AffineCoupling", vec![("clamp", atom(f32_lit(*clamp))), ("net", mlp)]),
                uses: &["AffineCoupling", "Mlp", "Activation"],
            }
        }
        Layer::Maf { net, clamp, params } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, dim, params)?;
            Item {
                ty: format!("Maf<DIM, {}, {}>", s.hidden, l(&s)),
                value: strukt("Maf", vec![("clamp", atom(f32_lit(*clamp))), ("net", mlp)]),
                uses: &["Maf", "Mlp", "Activation"],
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
            let (mlp, _) = mlp_node(s, net, *b, params)?;
            Item {
                ty: format!(
                    "SplineCoupling<{a}, {b}, {}, {}, {bins}, {}>",
                    s.hidden,
                    l(&s),
                    3 * bins - 1
                ),
                value: list("SplineCoupling::new(", ")", vec![atom(f32_lit(*tail_bound)), mlp]),
                uses: &["SplineCoupling", "Mlp", "Activation"],
            }
        }
        Layer::SplineAutoregressive {
            bins,
            tail_bound,
            net,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, _) = mlp_node(s, net, dim, params)?;
            Item {
                ty: format!(
                    "SplineAutoregressive<DIM, {}, {}, {bins}, {}>",
                    s.hidden,
                    l(&s),
                    3 * bins - 1
                ),
                value: list("SplineAutoregressive::new(", ")", vec![atom(f32_lit(*tail_bound)), mlp]),
                uses: &["SplineAutoregressive", "Mlp", "Activation"],
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
                uses: &["LuLinear"],
            }
        }
        Layer::Cnf {
            net,
            solver,
            steps,
            params,
        } => {
            let s = shape.expect("has a net");
            let (mlp, w_t) = mlp_node(s, net, dim, params)?;
            let solver = format!("Solver::{:?}", flowmote::Solver::from(*solver));
            Item {
                ty: format!("Cnf<DIM, {}, {}>", s.hidden, l(&s)),
                value: list(
                    "Cnf::new(",
                    ")",
                    vec![mlp, floats(&w_t), atom(solver), atom(steps.to_string())],
                ),
                uses: &["Cnf", "Mlp", "Activation", "Solver"],
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
