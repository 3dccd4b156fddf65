//! The export's on-device adaptation items: the sizes of the device's
//! gradient (`ADAPT_LAYERS`, `ADAPT_SCRATCH`) and a golden sequence of
//! adapter updates the host ran, which the device must reproduce bit for
//! bit (`GOLDEN_ADAPT_*`).

use super::*;
use crate::cli::adapt::{flow_view, with_target, with_views, HostAdapter, HELD};
use crate::model::{DynFlow, Storage};
use flowmote::adapt::{AdaptConfig, Tracked};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

/// Windows of the golden adaptation sequence: the first
/// [`GOLDEN_ADAPT_COMMISSION`] commission, the rest track.
pub const GOLDEN_ADAPT_WINDOWS: usize = 24;
/// Of those, commissioning windows.
pub const GOLDEN_ADAPT_COMMISSION: usize = 12;
/// Seed of the model samples the golden sequence drifts.
const GOLDEN_ADAPT_SEED: u64 = 11;

/// The model's flows, if a device can adapt it: a single flow or a mixture
/// of flows, each of whose first layer is its frozen standardisation, every
/// layer with a backward pass, f32 conditioners.
pub(super) fn adaptable(m: &ModelFile) -> Option<&[DynFlow]> {
    let flows = m.model.flows.as_slice();
    let ok = |flow: &DynFlow| {
        let standardised = matches!(flow.layers.first(), Some(Layer::ActNorm { frozen: true, .. }));
        standardised && flow.storage() == Storage::F32 && with_views(flow, |_| ()).is_ok()
    };
    (!flows.is_empty() && flows.iter().all(ok)).then_some(flows)
}

/// `AdaptGradient`, the type a board's adaptation builds with
/// `AdaptGradient::new(&MODEL)`: the device gradient of an `adaptable`
/// model, otherwise `flowmote::gradient::NoGradient`, whose `new` fails
/// (adaptation off), so that a board compiles with any model.
pub(super) fn gradient_item(s: &mut String, adaptable: Option<&[DynFlow]>, name: &str) {
    if let Some(flows) = adaptable {
        let _ = writeln!(
            s,
            "/// The device gradient on-device adaptation takes: `AdaptGradient::new(&{name})`."
        );
        let ty = if flows.len() == 1 {
            list(
                "flowmote::gradient::Gradient<",
                ">",
                ["'static", "DIM", "Layers", "ADAPT_LAYERS", "ADAPT_SCRATCH"]
                    .into_iter()
                    .map(atom)
                    .collect(),
            )
        } else {
            list(
                "flowmote::gradient::MixtureGradient<",
                ">",
                vec![
                    atom("'static"),
                    atom("DIM"),
                    atom(flows.len().to_string()),
                    atom("Members"),
                    atom("ADAPT_LAYERS"),
                    atom("ADAPT_SCRATCH"),
                ],
            )
        };
        let head = "pub type AdaptGradient = ";
        s.push_str(head);
        ty.write(s, 0, head.len(), 1);
        s.push_str(";\n");
    } else {
        let _ = writeln!(
            s,
            "/// A device cannot differentiate this model (only an f32 flow that\n\
             /// standardises first, or a mixture of such flows): `AdaptGradient::new(&{name})`\n\
             /// fails, adaptation stays off.\n\
             pub type AdaptGradient = flowmote::gradient::NoGradient<Model>;"
        );
    }
}

/// Outcome codes of `GOLDEN_ADAPT_OUTCOMES`.
fn code(t: &Tracked) -> u8 {
    match t {
        Tracked::NotNormal(_) => 1,
        Tracked::Held(_) => 2,
        Tracked::Updated(_) => 3,
        Tracked::RolledBack(_) => 4,
    }
}

/// `ADAPT_LAYERS`, `ADAPT_SCRATCH`, `ADAPT_HELD` and the golden sequence.
pub(super) fn adapt_items(s: &mut String, m: &ModelFile, flows: &[DynFlow], name: &str) -> Result<()> {
    let d = m.model.dim();
    let mut scratch = 0;
    for flow in flows {
        let view = flow_view(flow)?;
        // Each layer's forward and backward scratch (the frozen
        // standardisation's view asks room for its discarded gradient; the
        // device's ActNorm needs none).
        for (l, v) in flow.layers.iter().zip(&view.layers) {
            scratch = scratch.max(match (l, v) {
                (Layer::ActNorm { .. }, _) => 0,
                (_, crate::model::View::Likelihood(b)) => b.scratch_len().max(b.train_scratch_len()),
                _ => 0,
            });
        }
    }
    let layers = flows.iter().map(|f| f.layers.len()).max().unwrap_or(0);
    s.push_str(
        "/// Layers whose inputs the device's adaptation gradient (`AdaptGradient`) keeps\n\
         /// (of the largest member, for a mixture).\n",
    );
    let _ = writeln!(s, "pub const ADAPT_LAYERS: usize = {layers};");
    s.push_str("/// Scratch floats of that gradient's forward and backward passes.\n");
    let _ = writeln!(s, "pub const ADAPT_SCRATCH: usize = {scratch};");
    s.push_str("/// Held-back windows of the golden adaptation sequence's `flowmote::Adapter`.\n");
    let _ = writeln!(s, "pub const ADAPT_HELD: usize = {HELD};");

    // The sequence: model samples under a gain/offset drift, commissioned,
    // then tracked at the threshold, with `AdaptConfig::DEFAULT`.
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(GOLDEN_ADAPT_SEED);
    // A single flow's own sampler (one draw fewer than the mixture's), each
    // with one workspace for every draw.
    type Draw<'f> = Box<dyn FnMut(&mut Xoshiro128PlusPlus) -> Result<Vec<f32>> + 'f>;
    let mut sample: Draw = match flows {
        [flow] => {
            let mut ws = flow_view(flow)?.workspace();
            Box::new(move |rng| Ok(flow.sample_with_log_prob(rng, &mut ws)?.0))
        }
        _ => {
            let mut ws = m.model.workspace();
            Box::new(move |rng| Ok(m.model.sample_with_log_prob(rng, &mut ws)?.0))
        }
    };
    let mut windows = Vec::new();
    for _ in 0..4 * GOLDEN_ADAPT_WINDOWS {
        if windows.len() == GOLDEN_ADAPT_WINDOWS {
            break;
        }
        if let Ok(x) = sample(&mut rng) {
            let k = windows.len();
            // Every fifth tracked window is an anomaly: 8 standard deviations off.
            let jump = if k >= GOLDEN_ADAPT_COMMISSION && k % 5 == 4 {
                8.0
            } else {
                0.0
            };
            let x: Vec<f32> = (0..d)
                .map(|i| m.mean[i] + 1.25 * (x[i] - m.mean[i]) + (0.5 + jump) * m.std[i])
                .collect();
            windows.push(x);
        }
    }
    let threshold = m.threshold.as_ref().map_or(f32::INFINITY, |t| t.score);
    let config = AdaptConfig::DEFAULT;
    let (scores, outcomes, params) = with_target(&m.model, |v| {
        let mut a = HostAdapter::new(&config, &m.mean, &m.std);
        let (mut scores, mut outcomes) = (Vec::new(), Vec::new());
        for (k, x) in windows.iter().enumerate() {
            let (score, outcome) = if k < GOLDEN_ADAPT_COMMISSION {
                match a.view().commission(v, x) {
                    Ok(nll) => (nll, 0),
                    Err(_) => (0.0, 5),
                }
            } else {
                match a.view().track(v, x, threshold) {
                    Ok(t) => {
                        let (Tracked::NotNormal(s) | Tracked::Held(s) | Tracked::Updated(s) | Tracked::RolledBack(s)) =
                            t;
                        (s, code(&t))
                    }
                    Err(_) => (0.0, 5),
                }
            };
            scores.push(score);
            outcomes.push(outcome);
        }
        (scores, outcomes, a.params)
    })?;
    let k = windows.len();
    item(
        s,
        &format!(
            "Golden adaptation sequence: windows ({name}'s samples, gain 1.25 about `MEAN`, offset\n\
             +0.5 `STD`, every fifth tracked window 8 `STD` further). The first\n\
             `GOLDEN_ADAPT_COMMISSION` go through `Adapter::commission`, the rest through\n\
             `Adapter::track` at `THRESHOLD` (`AdaptConfig::DEFAULT`, `ADAPT_HELD` windows held back)."
        ),
        "static",
        "GOLDEN_ADAPT_WINDOWS",
        &format!("[[f32; DIM]; {k}]"),
        &list("[", "]", windows.iter().map(|x| floats(x)).collect()),
    );
    let _ = writeln!(s, "/// Commissioning windows at the start of `GOLDEN_ADAPT_WINDOWS`.");
    let _ = writeln!(
        s,
        "pub const GOLDEN_ADAPT_COMMISSION: usize = {};",
        GOLDEN_ADAPT_COMMISSION.min(k)
    );
    item(
        s,
        "Each window's adapted score before its update, as the host computed it (0 with outcome\n5: an error).",
        "static",
        "GOLDEN_ADAPT_SCORES",
        &format!("[f32; {k}]"),
        &floats(&scores),
    );
    item(
        s,
        "Each window's outcome: 0 commissioned, 1 not normal, 2 held, 3 updated, 4 rolled back, 5 error.",
        "static",
        "GOLDEN_ADAPT_OUTCOMES",
        &format!("[u8; {k}]"),
        &list("[", "]", outcomes.iter().map(|o| atom(o.to_string())).collect()),
    );
    item(
        s,
        "The correction's shift `u` after the sequence.",
        "static",
        "GOLDEN_ADAPT_SHIFT",
        "[f32; DIM]",
        &floats(&params[..d]),
    );
    item(
        s,
        "The correction's log-scale `ℓ` after the sequence.",
        "static",
        "GOLDEN_ADAPT_LOG_SCALE",
        "[f32; DIM]",
        &floats(&params[d..]),
    );
    Ok(())
}
