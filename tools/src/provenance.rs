//! Where a model came from: the provenance stored in the model file,
//! typed. The JSON keys are those the trainer has always written (the
//! resolved [`TrainConfig`] flattened, `dequantized`, and after a search
//! `search`, `members`, `fold_results`), so older files load.

use crate::train::TrainConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One epoch of the training history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Mean training NLL (nats/row, data units) over the epoch's steps.
    pub train_nll: f64,
    /// Mean validation NLL (nats/row, data units) at the epoch's end, of
    /// the averaged weights when `average` > 0 (what is kept).
    pub val_nll: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Where a model came from and how it trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// Training data file, as given.
    pub data_file: String,
    /// SHA-256 of the training data file.
    pub data_sha256: String,
    /// Rows used for training.
    pub train_rows: usize,
    /// Rows held out for validation.
    pub val_rows: usize,
    /// Best validation NLL (nats/row, data units) — the kept model's.
    pub val_nll: f64,
    /// Training settings, as resolved (flags and chosen defaults), and what
    /// the search tried. `null` in a file reads as the defaults.
    #[serde(deserialize_with = "null_default")]
    pub settings: Settings,
    /// Per-epoch history.
    pub history: Vec<Epoch>,
}

/// Training settings as resolved, and what the search did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    /// The settings, with the sizes, batch, epochs and patience as used.
    #[serde(flatten)]
    pub config: TrainConfig,
    /// Columns dequantised (names) and their quantisation step.
    #[serde(serialize_with = "steps_wide")]
    pub dequantized: Vec<(String, f32)>,
    /// Every candidate of the search, in order (when it tried several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<Candidate>>,
    /// The members of a kept mixture, in model order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Candidate>>,
    /// Each fold's result, for a cross-validation committee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold_results: Option<Vec<FoldResult>>,
    /// Columns of the training file that are not features, and why
    /// (constant, not numeric, a time or index column).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_columns: Vec<DroppedColumn>,
    /// How a model for a device target was made: the teacher, the students
    /// tried and which was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distillation: Option<Distillation>,
    /// Weight of the broad Gaussian mixed into a device model, the last
    /// member (`--defensive-weight`; 0: none — a host model, not asked
    /// for, or over the budget).
    pub broad_weight: f64,
}

/// Teacher → student distillation for a device budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Distillation {
    /// The budget, e.g. "nrf52840: ≤ 64.0 KB of weights, ≤ 2 ms per score".
    pub budget: String,
    /// Its flash limit, bytes of weights (`None`: flash not bounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_weight_bytes: Option<u64>,
    /// The teacher.
    pub teacher: TeacherRecord,
    /// Every student trained, in order (empty when the teacher fits).
    pub students: Vec<Candidate>,
    /// Teacher samples in each epoch of a student's training.
    pub samples_per_epoch: usize,
    /// Teacher samples drawn.
    pub pool: usize,
    /// What was kept and why, in one line.
    pub kept: String,
    /// The Gaussian mixture tried beside the kept student (`None`: not
    /// tried — the teacher fit, `--no-gaussians`, or none within the
    /// reserve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaussians: Option<GaussiansRecord>,
    /// The Gaussian mixture tried alone, within the whole budget, against
    /// the kept student (`None`: not tried — the teacher fit, the flow was
    /// pinned, `--no-gaussians`, or none fits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaussians_alone: Option<GaussiansAloneRecord>,
}

/// A Gaussian mixture as the whole model (`train::gaussians`), tried
/// against the students.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GaussiansAloneRecord {
    /// Covariance shape: `full`, `tied` or `diagonal`.
    pub covariance: String,
    /// Components.
    pub components: usize,
    /// BIC on the training rows (standardised), which chose the shape.
    pub bic: f64,
    /// Bytes of weights.
    pub weight_bytes: u64,
    /// Their validation NLL as they would be kept (with the broad Gaussian
    /// where it fits the budget): what the choice compared.
    pub val_nll: f64,
    /// Validation NLL of the model they had to beat, the kept student
    /// (with the Gaussians beside it if those were kept), as it would be
    /// kept; `None` when no flow fits the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_val_nll: Option<f64>,
    /// Whether they are the model kept.
    pub kept: bool,
}

/// The Gaussian mixture fitted beside a distilled student
/// (`train::gaussians`). Its `*_val_nll` figures are without the broad
/// Gaussian; the choice compares the mixture and the full budget's best
/// student as each would be kept, with it where it fits
/// (`train::defence`), and those two figures are `judged_val_nll` and
/// `judged_alone_val_nll`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GaussiansRecord {
    /// Covariance shape: `full`, `tied` or `diagonal`.
    pub covariance: String,
    /// Components.
    pub components: usize,
    /// BIC on the training rows (standardised), which chose the shape.
    pub bic: f64,
    /// What they add to the student's flash, bytes.
    pub weight_bytes: u64,
    /// Their weight in the mixture with the student, `1 − w`.
    pub weight: f64,
    /// Validation NLL of the student alone.
    pub student_val_nll: f64,
    /// Validation NLL of the student with the Gaussians.
    pub val_nll: f64,
    /// Validation NLL of the full budget's best student alone, which the
    /// Gaussians had to beat (`student_val_nll` is that of the student
    /// sized for the budget they leave).
    pub alone_val_nll: f64,
    /// The figures the choice compared: the mixture's validation NLL as it
    /// would be kept (with the broad Gaussian in place where it fits the
    /// budget; the NLLs above are without it), `None` when the mixture was
    /// not judged (over the budget, or the Gaussians' weight under one
    /// held-out row's worth).
    pub judged_val_nll: Option<f64>,
    /// The full budget's best student's validation NLL as it would be kept,
    /// which `judged_val_nll` had to beat by more than 1/rows nats.
    pub judged_alone_val_nll: Option<f64>,
    /// Whether the model kept them.
    pub kept: bool,
}

/// The teacher of a distillation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TeacherRecord {
    /// What it is ("a 5-fold committee of 22 flows (maf ×18, nsf ×4)").
    pub kept: String,
    /// Flows in it.
    pub flows: usize,
    /// Parameters.
    pub parameters: usize,
    /// Bytes of weights as f32.
    pub weight_bytes: u64,
    /// Multiply-adds per score.
    pub macs: u64,
    /// Estimated milliseconds per score on the target.
    pub estimated_ms: Option<f64>,
    /// Its validation NLL on its own search's rows (folds).
    pub own_val_nll: Option<f64>,
    /// Its NLL on the students' validation rows, which it never trained on
    /// (`None` without validation rows).
    pub val_nll: Option<f64>,
    /// Training time (s).
    pub seconds: f64,
}

/// A column of the training file left out of the features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct DroppedColumn {
    /// Column name.
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

impl Settings {
    /// Folds of the cross-validation committee (1 for one split).
    pub fn folds(&self) -> usize {
        self.config.folds.unwrap_or(1)
    }
}

/// One candidate of a search, or one member of a mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Candidate {
    /// Flow family (`maf`, `nsf`, …).
    pub flow: String,
    /// Noise level it was trained with.
    #[serde(serialize_with = "opt_f32_wide")]
    pub noise: Option<f32>,
    /// Flow layers.
    pub layers: usize,
    /// Hidden units per conditioner layer.
    pub hidden: usize,
    /// Parameters ([`crate::model::DynMixture::parameters`]).
    pub parameters: usize,
    /// Multiply-adds per score.
    pub macs: usize,
    /// Why it was not trained (over the budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Bytes of weights in flash (students).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_bytes: Option<u64>,
    /// Trained without the whitening LU layer (a student on wide data,
    /// where that layer alone takes most of the budget).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_whitening: bool,
    /// Trained with the lower-triangular whitening layer instead of the LU
    /// one (a student where the LU layer takes most of the budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub triangular_whitening: bool,
    /// How its conditioners' weights are stored (students: `i8` on wide
    /// data, see `--student-weights`).
    #[serde(default, skip_serializing_if = "crate::model::Storage::is_f32")]
    pub storage: crate::model::Storage,
    /// Teacher samples per epoch it trained with (students; 0 = real rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_samples: Option<usize>,
    /// Estimated milliseconds per score on the target (students).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_ms: Option<f64>,
    /// Its validation NLL (nats/row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_nll: Option<f64>,
    /// A student's validation NLL as it would be kept — with the broad
    /// Gaussian where it fits the budget (`--defensive-weight`) — which is
    /// the figure the choice among students compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_val_nll: Option<f64>,
    /// Training time (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// As a mixture member: its number in the search (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<usize>,
    /// As a committee member: its fold (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold: Option<usize>,
    /// A student that is a committee: this many flows of its shape, one per
    /// fold of the teacher's rows, averaged with equal weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committee: Option<usize>,
    /// As a mixture member: its weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// One fold of a cross-validation committee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FoldResult {
    /// Fold number (1-based).
    pub fold: usize,
    /// Kind of the fold's model (`maf`, …, `mixture`).
    pub kind: String,
    /// Rows it validated on.
    pub val_rows: usize,
    /// Its validation NLL (nats/row).
    pub val_nll: f64,
    /// Its search's candidates (`null` when it trained one).
    pub search: Option<Vec<Candidate>>,
}

/// An `f32` written as the `f64` it widens to, as the provenance has always
/// been written (through `serde_json::Value`): `0.1f32` is
/// `0.10000000149011612`, and reads back as the same `f32`.
pub(crate) fn f32_wide<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*v as f64)
}

/// [`f32_wide`] for an optional value.
pub(crate) fn opt_f32_wide<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    v.map(f64::from).serialize(s)
}

/// [`f32_wide`] for the dequantisation steps.
fn steps_wide<S: Serializer>(v: &[(String, f32)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(n, x)| (n, f64::from(*x))))
}

/// `null` reads as the default.
fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
