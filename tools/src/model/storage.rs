//! How a flow's conditioner weights are stored on the device (`f32`, `f16`
//! or `i8` with row scales), compressing a trained flow, and the bytes it
//! takes.
//!
//! Training is always in `f32`. [`DynFlow::compressed`] replaces the weight
//! matrices of the MLP conditioners (affine coupling, MAF, spline coupling,
//! autoregressive spline) by values the storage holds exactly:
//!
//! * `f16`: each weight in `params` becomes the nearest `f16` (stored in the
//!   model file as that `f32`, which the `f16` converts to exactly); the
//!   `f32` kernel on these values is the device's `f16` kernel, bit for bit
//!   (widening an `f16` is exact);
//! * `i8`: each matrix row becomes `i8` values and one `f32` scale
//!   ([`flowmote::weights::quantize_row_i8`]), kept in [`Weights::I8`]; the
//!   host evaluates them with the core's `i8` kernel (`b + scale·Σ q·x`),
//!   and `params` keep `q·scale` for reference only.
//!
//! Biases, ActNorm, LU linear and the continuous flow's field (whose exact
//! trace reads its weights directly) stay `f32`.

use super::{DynFlow, Layer};
use anyhow::{ensure, Result};
use flowmote::mlp::{MlpGrad, MlpShape};
use flowmote::weights::{f16_to_f32, f32_to_f16, quantize_row_i8};
use serde::{Deserialize, Serialize};

/// A weight storage, as `--weights` and the model file name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// 4 bytes per weight, as trained.
    #[default]
    F32,
    /// IEEE binary16, 2 bytes per weight.
    F16,
    /// 1 byte per weight and a 4-byte scale per matrix row.
    I8,
}

impl Storage {
    /// `true` for `f32`.
    pub fn is_f32(&self) -> bool {
        *self == Storage::F32
    }

    /// Bytes of one stored weight (the `i8` row scales come on top).
    pub fn bytes_per_weight(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
            Storage::I8 => 1,
        }
    }

    /// Its name (`f32`, `f16`, `i8`).
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
            Storage::I8 => "i8",
        }
    }
}

/// One conditioner's `i8` weights: the matrices in flat order (`w_in`,
/// `w_hid`, `w_out`, row-major) and one scale per row (`hidden`,
/// `(depth − 1)·hidden`, `output`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct I8Net {
    /// Weights.
    pub q: Vec<i8>,
    /// Row scales.
    pub scales: Vec<f32>,
}

/// A flow's weight storage and the data it needs.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "storage", rename_all = "snake_case")]
pub enum Weights {
    /// As trained.
    #[default]
    F32,
    /// Every conditioner weight in `params` is an `f16` value.
    F16,
    /// The conditioners' `i8` weights, one entry per layer (`None` for a
    /// layer without a compressed network).
    I8 {
        /// Per layer of the flow.
        layers: Vec<Option<I8Net>>,
    },
}

impl Weights {
    /// The storage.
    pub fn storage(&self) -> Storage {
        match self {
            Weights::F32 => Storage::F32,
            Weights::F16 => Storage::F16,
            Weights::I8 { .. } => Storage::I8,
        }
    }

    /// `true` for `f32` (not written to model files).
    pub fn is_f32(&self) -> bool {
        *self == Weights::F32
    }

    /// The `i8` weights of layer `i`, if this storage has them.
    pub fn i8_net(&self, i: usize) -> Option<&I8Net> {
        match self {
            Weights::I8 { layers } => layers.get(i).and_then(Option::as_ref),
            _ => None,
        }
    }
}

impl Layer {
    /// The conditioner shape if this layer's weights are compressed by a
    /// storage other than `f32` (the continuous flow's field is not).
    pub fn compressible_net(&self, dim: usize) -> Option<MlpShape> {
        match self {
            Layer::Cnf { .. } => None,
            _ => self.mlp_shape(dim),
        }
    }
}

/// Lengths of the three weight matrices of `s` and their row lengths.
fn matrices(s: MlpShape) -> [(usize, usize); 3] {
    let h = s.hidden;
    [(h * s.input, s.input), ((s.depth - 1) * h * h, h), (s.output * h, h)]
}

/// Number of matrix rows (= scales of `i8` storage) of `s`.
pub fn matrix_rows(s: MlpShape) -> usize {
    s.hidden * s.depth + s.output
}

/// Number of matrix weights of `s`.
pub fn matrix_weights(s: MlpShape) -> usize {
    matrices(s).iter().map(|m| m.0).sum()
}

/// The three weight matrices of a flat parameter vector, mutably.
fn matrices_mut(s: MlpShape, p: &mut [f32]) -> Result<[&mut [f32]; 3]> {
    let g = MlpGrad::from_flat(s, p).map_err(|e| anyhow::anyhow!("parameters do not match their shape: {e:?}"))?;
    Ok([g.w_in, g.w_hid, g.w_out])
}

impl DynFlow {
    /// The storage of this flow's conditioner weights.
    pub fn storage(&self) -> Storage {
        self.weights.storage()
    }

    /// This flow with its conditioner weights compressed to `to` (see the
    /// module docs). A flow already in `to` comes back unchanged; compressing
    /// a compressed flow again is refused (compress the `f32` model).
    pub fn compressed(&self, to: Storage) -> Result<DynFlow> {
        if self.storage() == to {
            return Ok(self.clone());
        }
        ensure!(
            self.storage() == Storage::F32,
            "the model's weights are already stored as {}; compress the f32 model to {} instead",
            self.storage().name(),
            to.name()
        );
        let mut out = self.clone();
        let mut i8s = Vec::with_capacity(out.layers.len());
        for layer in &mut out.layers {
            let shape = layer.compressible_net(self.dim);
            let (Some(s), Some(params)) = (shape, layer.params_mut()) else {
                i8s.push(None);
                continue;
            };
            let mut net = I8Net {
                q: Vec::with_capacity(matrix_weights(s)),
                scales: Vec::with_capacity(matrix_rows(s)),
            };
            for (m, (_, n)) in matrices_mut(s, params)?.into_iter().zip(matrices(s)) {
                match to {
                    Storage::F32 => {}
                    Storage::F16 => m.iter_mut().for_each(|w| *w = f16_to_f32(f32_to_f16(*w))),
                    Storage::I8 => {
                        for row in m.chunks_mut(n.max(1)) {
                            let mut q = vec![0i8; row.len()];
                            let scale = quantize_row_i8(row, &mut q);
                            for (w, v) in row.iter_mut().zip(&q) {
                                *w = *v as f32 * scale;
                            }
                            net.q.extend_from_slice(&q);
                            net.scales.push(scale);
                        }
                    }
                }
            }
            i8s.push(Some(net));
        }
        out.weights = match to {
            Storage::F32 => Weights::F32,
            Storage::F16 => Weights::F16,
            Storage::I8 => Weights::I8 { layers: i8s },
        };
        out.validate()?;
        Ok(out)
    }

    /// Bytes of flash the export's numbers take: conditioner matrices at
    /// the storage's bytes per weight (plus a 4-byte scale per row for
    /// `i8`), every other stored number (biases, ActNorm, LU, the
    /// continuous flow) as `f32`.
    pub fn weight_bytes(&self) -> usize {
        let storage = self.storage();
        self.layers
            .iter()
            .map(|l| {
                let spec = l.spec(self.dim);
                let floats = spec.params.len() + spec.fixed_floats;
                // The matrices at the storage's size, everything else f32;
                // i8 adds an f32 scale per row.
                match (storage, l.compressible_net(self.dim)) {
                    (Storage::F32, _) | (_, None) => 4 * floats,
                    (_, Some(s)) => {
                        let scales = if storage == Storage::I8 { 4 * matrix_rows(s) } else { 0 };
                        4 * floats - (4 - storage.bytes_per_weight()) * matrix_weights(s) + scales
                    }
                }
            })
            .sum()
    }

    /// The storage's invariants: `f16` weights are `f16` values; `i8` data
    /// for exactly the compressible layers, sized by their shapes, with
    /// finite non-negative scales.
    pub(super) fn validate_weights(&self) -> Result<()> {
        match &self.weights {
            Weights::F32 => {}
            Weights::F16 => {
                for (i, l) in self.layers.iter().enumerate() {
                    let (Some(s), Some(p)) = (l.compressible_net(self.dim), l.spec(self.dim).net.map(|_| l.params()))
                    else {
                        continue;
                    };
                    let mut p = p.to_vec();
                    let exact = matrices_mut(s, &mut p)?
                        .iter()
                        .all(|m| m.iter().all(|w| f16_to_f32(f32_to_f16(*w)).to_bits() == w.to_bits()));
                    ensure!(exact, "layer {i}: weights stored as f16 must be f16 values");
                }
            }
            Weights::I8 { layers } => {
                ensure!(
                    layers.len() == self.layers.len(),
                    "i8 weights for {} layers, the flow has {}",
                    layers.len(),
                    self.layers.len()
                );
                for (i, (l, q)) in self.layers.iter().zip(layers).enumerate() {
                    match (l.compressible_net(self.dim), q) {
                        (None, None) => {}
                        (Some(s), Some(q)) => {
                            ensure!(
                                q.q.len() == matrix_weights(s) && q.scales.len() == matrix_rows(s),
                                "layer {i}: expected {} i8 weights and {} scales, found {} and {}",
                                matrix_weights(s),
                                matrix_rows(s),
                                q.q.len(),
                                q.scales.len()
                            );
                            ensure!(
                                q.scales.iter().all(|v| v.is_finite() && *v >= 0.0),
                                "layer {i}: i8 scales must be finite and non-negative"
                            );
                        }
                        (Some(_), None) => anyhow::bail!("layer {i} ({}) has no i8 weights", l.describe()),
                        (None, Some(_)) => anyhow::bail!("layer {i} ({}) has no network to store as i8", l.describe()),
                    }
                }
            }
        }
        Ok(())
    }
}
