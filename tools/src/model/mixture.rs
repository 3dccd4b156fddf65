//! A weighted mixture of flows: the host side of the core's `Mixture`.

use super::{par_blocks, DynFlow, FlowView, Workspace};
use anyhow::{ensure, Context, Result};
use flowmote::Error;
use rand_core::Rng;
use serde::{Deserialize, Serialize};

/// A model's density: one flow (`log_weights == [0.0]`), or the mixture
/// `p(x) = Σₖ exp(log_weights[k]) · pₖ(x)` of flows of the same dimension —
/// the host side of the core's `Mixture` (one flow exports as a plain `Flow`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynMixture {
    /// `ln wₖ` of every member; `Σ exp = 1`.
    pub log_weights: Vec<f32>,
    /// The members.
    pub flows: Vec<DynFlow>,
}

/// Number of stored weights of a model of `n` flows (none for one flow).
pub fn weights(n: usize) -> usize {
    if n > 1 {
        n
    } else {
        0
    }
}

/// Reusable buffers for [`DynMixture`] evaluation: one [`Workspace`] per
/// member and the members' log-densities.
#[derive(Debug, Default, Clone)]
pub struct MixWorkspace {
    members: Vec<Workspace>,
    lps: Vec<f32>,
}

impl DynMixture {
    /// Most members a mixture may have (the core's `Components` tuples).
    pub const MAX_MEMBERS: usize = flowmote::mixture::MAX_MEMBERS;

    /// A one-flow model.
    pub fn single(flow: DynFlow) -> Self {
        DynMixture {
            log_weights: vec![0.0],
            flows: vec![flow],
        }
    }

    /// The mixture `e^a·self + e^b·other` (`a`, `b` the natural logs of
    /// the two parts' weights, `e^a + e^b = 1`): every member's log-weight
    /// shifted by its part's, in f64, stored as f32.
    pub fn blend(&self, a: f64, other: &DynMixture, b: f64) -> DynMixture {
        let shift = |ls: &[f32], by: f64| ls.iter().map(move |l| (*l as f64 + by) as f32).collect::<Vec<_>>();
        DynMixture {
            log_weights: [shift(&self.log_weights, a), shift(&other.log_weights, b)].concat(),
            flows: self.flows.iter().chain(&other.flows).cloned().collect(),
        }
    }

    /// The only flow, when there is exactly one member.
    pub fn as_single(&self) -> Option<&DynFlow> {
        match self.flows.as_slice() {
            [f] => Some(f),
            _ => None,
        }
    }

    /// Dimension of the data.
    pub fn dim(&self) -> usize {
        self.flows.first().map_or(0, |f| f.dim)
    }

    /// The f32 numbers an export stores: every member's
    /// [`DynFlow::stored_floats`] and, for a mixture, its weights.
    pub fn stored_floats(&self) -> usize {
        self.flows.iter().map(DynFlow::stored_floats).sum::<usize>() + weights(self.flows.len())
    }

    /// Bytes of flash the export's weights take: every member's
    /// [`DynFlow::weight_bytes`] (conditioner matrices at their storage's
    /// size, everything else as f32) and, for a mixture, its f32 weights.
    pub fn weight_bytes(&self) -> usize {
        self.flows.iter().map(DynFlow::weight_bytes).sum::<usize>() + 4 * weights(self.flows.len())
    }

    /// The storage of the members' conditioner weights (that of the first
    /// member; [`DynMixture::validate`] checks that all agree).
    pub fn storage(&self) -> super::Storage {
        self.flows.first().map(DynFlow::storage).unwrap_or_default()
    }

    /// This model with every member's conditioner weights compressed to
    /// `to` ([`DynFlow::compressed`]).
    pub fn compressed(&self, to: super::Storage) -> Result<DynMixture> {
        Ok(DynMixture {
            log_weights: self.log_weights.clone(),
            flows: self.flows.iter().map(|f| f.compressed(to)).collect::<Result<_>>()?,
        })
    }

    /// Parameters as `flowmote train` counts them (and `--max-params`
    /// bounds them); see [`DynMixture::cost`].
    pub fn parameters(&self) -> usize {
        Self::cost(&self.flows).0
    }

    /// [`DynFlow::macs`] of every member: a mixture evaluates them all.
    pub fn macs(&self) -> usize {
        Self::cost(&self.flows).1
    }

    /// [`DynFlow::activations`] of every member.
    pub fn activations(&self) -> usize {
        self.flows.iter().map(DynFlow::activations).sum()
    }

    /// [`DynFlow::linear_macs`] of every member.
    pub fn linear_macs(&self) -> usize {
        self.flows.iter().map(DynFlow::linear_macs).sum()
    }

    /// [`DynFlow::splines`] of every member.
    pub fn splines(&self) -> usize {
        self.flows.iter().map(DynFlow::splines).sum()
    }

    /// [`DynFlow::affine`] of every member.
    pub fn affine(&self) -> usize {
        self.flows.iter().map(DynFlow::affine).sum()
    }

    /// [`DynFlow::elementwise`] of every member.
    pub fn elementwise(&self) -> usize {
        self.flows.iter().map(DynFlow::elementwise).sum()
    }

    /// Members a score combines (`0` for one flow): each costs an `exp`
    /// and a share of a `log`.
    pub fn combined_members(&self) -> usize {
        weights(self.flows.len())
    }

    /// [`DynFlow::compressed_macs`] of every member.
    pub fn compressed_macs(&self) -> usize {
        self.flows.iter().map(DynFlow::compressed_macs).sum()
    }

    /// `(parameters, multiply-adds per score)` of the model made of `flows`:
    /// every member's [`DynFlow::parameters`] plus, from two members on, the
    /// weights; every member's [`DynFlow::macs`].
    pub fn cost<'a>(flows: impl IntoIterator<Item = &'a DynFlow>) -> (usize, usize) {
        let (mut params, mut macs, mut n) = (0, 0, 0);
        for f in flows {
            params += f.parameters();
            macs += f.macs();
            n += 1;
        }
        (params + weights(n), macs)
    }

    /// Buffers for [`DynMixture::log_prob`] and sampling.
    pub fn workspace(&self) -> MixWorkspace {
        MixWorkspace {
            members: self.flows.iter().map(Workspace::new).collect(),
            lps: vec![0.0; self.flows.len()],
        }
    }

    /// Check every member, equal dimensions, and weights that are finite and
    /// sum to 1.
    pub fn validate(&self) -> Result<()> {
        let n = self.flows.len();
        ensure!(
            (1..=Self::MAX_MEMBERS).contains(&n),
            "a model holds 1 to {} flows, not {n}",
            Self::MAX_MEMBERS
        );
        ensure!(
            self.log_weights.len() == n,
            "{} mixture weights for {n} flows",
            self.log_weights.len()
        );
        ensure!(
            self.log_weights.iter().all(|w| w.is_finite()),
            "non-finite mixture weight"
        );
        let total: f64 = self.log_weights.iter().map(|w| (*w as f64).exp()).sum();
        ensure!((total - 1.0).abs() < 1e-4, "mixture weights sum to {total}, not 1");
        let d = self.dim();
        for (k, f) in self.flows.iter().enumerate() {
            ensure!(f.dim == d, "mixture member {k} has dimension {}, not {d}", f.dim);
            ensure!(
                f.storage() == self.storage(),
                "mixture member {k} stores its weights as {}, member 0 as {}",
                f.storage().name(),
                self.storage().name()
            );
            f.validate().with_context(|| format!("mixture member {k}"))?;
        }
        Ok(())
    }

    /// Every member compiled into its views, once.
    pub fn view(&self) -> Result<MixView<'_>, Error> {
        let flows = self.flows.iter().map(DynFlow::view).collect::<Result<_, _>>()?;
        Ok(MixView {
            log_weights: &self.log_weights,
            flows,
        })
    }

    /// [`MixView::log_prob`] of [`DynMixture::view`] (compile once with
    /// [`DynMixture::view`], or use [`DynMixture::log_probs`], for many rows).
    pub fn log_prob(&self, x: &[f32], ws: &mut MixWorkspace) -> Result<f32, Error> {
        self.view()?.log_prob(x, ws)
    }

    /// [`MixView::sample`] of [`DynMixture::view`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, ws: &mut MixWorkspace) -> Result<Vec<f32>, Error> {
        self.view()?.sample(rng, ws)
    }

    /// [`MixView::sample_with_log_prob`] of [`DynMixture::view`].
    pub fn sample_with_log_prob<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        ws: &mut MixWorkspace,
    ) -> Result<(Vec<f32>, f32), Error> {
        self.view()?.sample_with_log_prob(rng, ws)
    }

    /// `log p` of every row, in parallel (the views compiled once per
    /// worker), in blocks of rows ([`MixView::log_prob_block`]: bit for bit
    /// [`MixView::log_prob`]).
    pub fn log_probs(&self, rows: &[Vec<f32>]) -> Vec<Result<f32, Error>> {
        par_blocks(
            rows,
            || (self.view(), self.workspace(), Vec::new()),
            |(view, ws, tmp), xs, out| match view.as_ref() {
                Ok(v) => v.log_prob_block(xs, out, ws, tmp),
                Err(e) => out.extend(xs.iter().map(|_| Err(*e))),
            },
        )
    }
}

/// A [`DynMixture`] compiled into its members' views.
pub struct MixView<'a> {
    /// `ln wₖ` of every member.
    pub log_weights: &'a [f32],
    /// The members' views.
    pub flows: Vec<FlowView<'a>>,
}

impl MixView<'_> {
    /// Exact `log p(x)`, computed as the core's `Flow::log_prob` (one member)
    /// or `Mixture::log_prob` does.
    pub fn log_prob(&self, x: &[f32], ws: &mut MixWorkspace) -> Result<f32, Error> {
        if let ([f], Some(w)) = (self.flows.as_slice(), ws.members.first_mut()) {
            return f.log_prob(x, w);
        }
        flowmote::error::check_finite(x)?;
        for ((f, w), lp) in self.flows.iter().zip(&mut ws.members).zip(&mut ws.lps) {
            *lp = flowmote::mixture::member_term(f.log_prob(x, w))?;
        }
        flowmote::mixture::combine(self.log_weights, &ws.lps)
    }

    /// [`MixView::log_prob`] of every row of `rows`, pushed onto `out`; each
    /// member scores the rows in blocks ([`FlowView::log_prob_block`]).
    /// `tmp` is scratch (the members' results).
    pub fn log_prob_block<R: AsRef<[f32]>>(
        &self,
        rows: &[R],
        out: &mut Vec<Result<f32, Error>>,
        ws: &mut MixWorkspace,
        tmp: &mut Vec<Result<f32, Error>>,
    ) {
        if let ([f], Some(w)) = (self.flows.as_slice(), ws.members.first_mut()) {
            return f.log_prob_block(rows, out, w);
        }
        let n = rows.len();
        tmp.clear();
        for (f, w) in self.flows.iter().zip(&mut ws.members) {
            f.log_prob_block(rows, tmp, w);
        }
        for (r, x) in rows.iter().enumerate() {
            let one = |lps: &mut [f32]| {
                flowmote::error::check_finite(x.as_ref())?;
                for (k, lp) in lps.iter_mut().enumerate() {
                    *lp = flowmote::mixture::member_term(tmp[k * n + r])?;
                }
                flowmote::mixture::combine(self.log_weights, lps)
            };
            out.push(one(&mut ws.lps));
        }
    }

    /// One sample, drawing exactly as the exported model's `sample` does
    /// (one member: `Flow::sample`; more: `Mixture::sample`).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, ws: &mut MixWorkspace) -> Result<Vec<f32>, Error> {
        let k = if self.flows.len() > 1 {
            flowmote::mixture::pick(self.log_weights, rng.next_u32())
        } else {
            0
        };
        match (self.flows.get(k), ws.members.get_mut(k)) {
            (Some(f), Some(w)) => f.sample_with_log_prob(rng, w).map(|(x, _)| x),
            _ => Err(Error::OutOfDomain),
        }
    }

    /// One sample and its `log p` under the whole model.
    pub fn sample_with_log_prob<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        ws: &mut MixWorkspace,
    ) -> Result<(Vec<f32>, f32), Error> {
        if let ([f], Some(w)) = (self.flows.as_slice(), ws.members.first_mut()) {
            return f.sample_with_log_prob(rng, w);
        }
        let x = self.sample(rng, ws)?;
        let lp = self.log_prob(&x, ws)?;
        Ok((x, lp))
    }
}
