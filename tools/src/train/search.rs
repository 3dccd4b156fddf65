//! One search on one split: noise, family and size chosen by validation
//! NLL, then stacking.

use super::config::{auto_candidates, default_size, Budget, FlowKind, TrainConfig, NOISE_LEVELS};
use super::fit::train_one;
use super::stack::stack;
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::ModelFile;
use crate::provenance::Candidate;
use crate::target::ModelCost;
use anyhow::Result;
use std::time::Instant;

/// The best candidate so far: its model, summary and settings.
type Best = Option<(ModelFile, TrainSummary, TrainConfig)>;

/// A search in progress: every candidate tried (for the provenance's
/// `search`) and trained (for stacking), and the best so far.
struct Search<'a> {
    ds: &'a Dataset,
    progress: bool,
    tried: Vec<Candidate>,
    /// Every trained candidate: its number in `tried` (0-based) and model.
    trained: Vec<(usize, ModelFile)>,
    best: Best,
}

impl Search<'_> {
    /// Train candidate `c`; `true` if it is the best so far.
    fn run(&mut self, c: TrainConfig) -> Result<bool> {
        let (m, s) = train_one(self.ds, &c, self.progress)?;
        let (layers, hidden) = (
            m.provenance.settings.config.layers.unwrap_or(0),
            m.provenance.settings.config.hidden.unwrap_or(0),
        );
        self.tried.push(Candidate {
            flow: c.flow.name().into(),
            noise: c.noise,
            layers,
            hidden,
            parameters: s.parameters,
            macs: m.model.macs(),
            val_nll: Some(s.best_val_nll),
            seconds: Some(s.seconds),
            ..Candidate::default()
        });
        let better = match &self.best {
            None => true,
            Some((_, b, _)) => s.best_val_nll < b.best_val_nll || !b.best_val_nll.is_finite(),
        };
        if self.progress {
            eprintln!(
                "candidate {}: {} {}×{} noise {:.1}: validation NLL {:.3} ({:.0} s){}",
                self.tried.len(),
                c.flow.name(),
                layers,
                hidden,
                c.noise.unwrap_or(0.0),
                s.best_val_nll,
                s.seconds,
                if better { "  ← best so far" } else { "" }
            );
        }
        self.trained.push((self.tried.len() - 1, m.clone()));
        if better {
            self.best = Some((m, s, c));
        }
        Ok(better)
    }

    /// 1. noise: `first` at each level in turn, stopping at the first that
    ///    does worse than the one before.
    fn noise(&mut self, cfg: &TrainConfig, first: FlowKind) -> Result<()> {
        let noises: Vec<f32> = match cfg.noise {
            Some(v) => vec![v],
            None => NOISE_LEVELS.to_vec(),
        };
        for (k, &noise) in noises.iter().enumerate() {
            let c = TrainConfig {
                flow: first,
                noise: Some(noise),
                ..cfg.clone()
            };
            if !self.run(c)? && k > 0 {
                break;
            }
        }
        Ok(())
    }

    /// 2. family: the other candidates at the chosen noise.
    fn family(&mut self, cfg: &TrainConfig) -> Result<()> {
        if cfg.flow == FlowKind::Auto {
            let noise = self.best.as_ref().expect("a candidate").2.noise;
            for kind in auto_candidates(self.ds.dim()).into_iter().skip(1) {
                self.run(TrainConfig {
                    flow: kind,
                    noise,
                    ..cfg.clone()
                })?;
            }
        }
        Ok(())
    }

    /// 3. size (not for cnf): the winner with two more layers and twice the
    ///    hidden units — unless the winner is already over the device
    ///    `budget` (a teacher to be distilled: a bigger one only takes longer).
    fn size(&mut self, cfg: &TrainConfig, budget: Option<&Budget>) -> Result<()> {
        let (m, s, c) = self.best.as_ref().expect("a candidate");
        if cfg.layers.is_some() || cfg.hidden.is_some() || c.flow == FlowKind::Cnf {
            return Ok(());
        }
        if let Some(why) = budget.and_then(|b| b.exceeded(&ModelCost::of(&m.model))) {
            if self.progress {
                eprintln!("size: no bigger candidate, the best is over the budget already ({why})");
            }
            return Ok(());
        }
        let (l, h) = default_size(c.flow, s.train_rows, self.ds.dim());
        let bigger = TrainConfig {
            layers: Some(l + 2),
            hidden: Some(2 * h),
            ..c.clone()
        };
        self.run(bigger)?;
        Ok(())
    }

    /// 4. stacking: replace the best single flow by the candidates' stacked
    ///    mixture when that wins ([`stack`](super::stack)).
    fn stack_into(&self, m: &mut ModelFile, s: &mut TrainSummary, max_members: usize) {
        let Some(st) = stack(&self.trained, &s.validation, s.best_val_nll, max_members) else {
            if self.progress {
                eprintln!("stacked: no mixture of the candidates beats the best single one on validation");
            }
            return;
        };
        if self.progress {
            eprintln!(
                "stacked: a mixture of {} candidates ({}) has validation NLL {:.3} (best single {:.3}); kept",
                st.members.len(),
                st.members
                    .iter()
                    .map(|(i, w)| format!("{} × {w:.2}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", "),
                st.val_nll,
                s.best_val_nll
            );
        }
        let members: Vec<Candidate> = st
            .members
            .iter()
            .map(|&(i, w)| Candidate {
                candidate: Some(i + 1),
                weight: Some(w),
                ..self.tried[i].clone()
            })
            .collect();
        m.provenance.settings.members = Some(members);
        m.provenance.val_nll = st.val_nll;
        m.kind = "mixture".into();
        s.best_val_nll = st.val_nll;
        s.parameters = st.model.parameters();
        m.model = st.model;
    }
}

/// One search on one split (see [`train`](super::train)); a stacked
/// mixture holds at most `max_members` flows. With a device `budget` (a
/// teacher's search) the size step is left out when the best candidate is
/// over it already.
pub(super) fn search(
    ds: &Dataset,
    cfg: &TrainConfig,
    progress: bool,
    max_members: usize,
    budget: Option<&Budget>,
) -> Result<(ModelFile, TrainSummary)> {
    let start = Instant::now();
    let first = if cfg.flow == FlowKind::Auto {
        auto_candidates(ds.dim())[0]
    } else {
        cfg.flow
    };
    let mut search = Search {
        ds,
        progress,
        tried: Vec::new(),
        trained: Vec::new(),
        best: None,
    };
    search.noise(cfg, first)?;
    search.family(cfg)?;
    search.size(cfg, budget)?;
    let (mut m, mut s, _) = search.best.take().expect("at least one candidate");
    if cfg.mixture && search.trained.len() > 1 {
        search.stack_into(&mut m, &mut s, max_members);
    }
    if search.tried.len() > 1 {
        m.provenance.settings.search = Some(search.tried);
        s.seconds = start.elapsed().as_secs_f64();
    }
    Ok((m, s))
}
