//! The model file: what it holds, loading (older versions included),
//! checking and atomic saving.

use super::{DynMixture, Provenance, Storage, FORMAT, VERSION, VERSION_WITH_FEATURES, VERSION_WITH_WEIGHTS};
use crate::features::FeatureSpec;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Anomaly threshold stored by `flowmote calibrate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Threshold on the score `−log p(x)` (nats): above it, a row is anomalous.
    pub score: f32,
    /// The false-alarm rate it was calibrated for.
    pub false_alarm_rate: f64,
    /// Rows of normal data it was calibrated on.
    pub rows: usize,
    /// SHA-256 of the calibration file.
    pub data_sha256: String,
}

/// Everything `model.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`], [`VERSION_WITH_FEATURES`] when the file holds a
    /// feature pipeline, [`VERSION_WITH_WEIGHTS`] when its weights are
    /// compressed (version 1 files are converted on loading).
    pub version: u32,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// Flow family (`maf`, `coupling`, `cnf`, …; `mixture` for several flows).
    pub kind: String,
    /// Feature (column) names, in order.
    pub features: Vec<String>,
    /// The feature pipeline applied to raw sensor CSVs (`--window`, `--hop`,
    /// `--features`), when the model was trained on windowed features; then
    /// `features` are its `<channel>_<stat>` names. Absent in files of
    /// version 1 and 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_pipeline: Option<FeatureSpec>,
    /// Per-feature training mean (folded into the first, frozen layer).
    pub mean: Vec<f32>,
    /// Per-feature training standard deviation (folded into the first layer).
    pub std: Vec<f32>,
    /// The density (each flow includes the standardisation, so `log_prob`
    /// takes raw rows).
    pub model: DynMixture,
    /// Anomaly threshold, once calibrated.
    pub threshold: Option<Threshold>,
    /// Provenance and training history.
    pub provenance: Provenance,
}

impl ModelFile {
    /// Read and check a model file: format, version, sizes, finite weights.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model file {}", path.display()))?;
        let head: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a flowmote model file (not valid JSON)", path.display()))?;
        ensure!(
            head.get("format").and_then(|f| f.as_str()) == Some(FORMAT),
            "{} is not a flowmote model file (missing \"format\": \"{FORMAT}\")",
            path.display()
        );
        let version = head.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        ensure!(
            (1..=VERSION_WITH_WEIGHTS as u64).contains(&version),
            "{} is model format version {version}; this build of flowmote reads versions 1 to {VERSION_WITH_WEIGHTS} — re-train or use the matching tool",
            path.display()
        );
        let mut head = head;
        if version == 1 {
            // Version 1 held one `flow`: it is a one-member mixture.
            if let Some(obj) = head.as_object_mut() {
                if let Some(flow) = obj.remove("flow") {
                    obj.insert(
                        "model".into(),
                        serde_json::json!({ "log_weights": [0.0], "flows": [flow] }),
                    );
                }
                obj.insert("version".into(), VERSION.into());
            }
        }
        let m: ModelFile =
            serde_json::from_value(head).with_context(|| format!("{}: malformed model file", path.display()))?;
        m.validate()
            .with_context(|| format!("{}: invalid model", path.display()))?;
        Ok(m)
    }

    /// The format version this file must have: [`VERSION_WITH_WEIGHTS`]
    /// for compressed weights, else [`VERSION_WITH_FEATURES`] with a
    /// feature pipeline, else [`VERSION`].
    pub fn required_version(&self) -> u32 {
        if self.model.storage() != Storage::F32 {
            VERSION_WITH_WEIGHTS
        } else if self.features_pipeline.is_some() {
            VERSION_WITH_FEATURES
        } else {
            VERSION
        }
    }

    /// Compress the model's conditioner weights to `to`
    /// ([`DynMixture::compressed`]) and set the format version it needs.
    /// The threshold is kept: calibrate again for the compressed model's own.
    pub fn compress(&mut self, to: Storage) -> Result<()> {
        self.model = self.model.compressed(to)?;
        self.version = self.required_version();
        Ok(())
    }

    /// Consistency checks shared by `load` and `save`.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let compressed = self.model.storage() != Storage::F32;
        ensure!(
            compressed == (self.version == VERSION_WITH_WEIGHTS),
            "format version {} with weights stored as {} (compressed weights are version {VERSION_WITH_WEIGHTS}, only they)",
            self.version,
            self.model.storage().name()
        );
        match &self.features_pipeline {
            Some(spec) => {
                ensure!(
                    self.version == VERSION_WITH_FEATURES || compressed,
                    "a model with a feature pipeline is format version {VERSION_WITH_FEATURES}, not {}",
                    self.version
                );
                spec.check().context("features_pipeline")?;
                ensure!(
                    spec.feature_names() == self.features,
                    "the feature names ({}) are not those of the feature pipeline ({})",
                    self.features.join(", "),
                    spec.feature_names().join(", ")
                );
            }
            None => ensure!(
                self.version <= VERSION || compressed,
                "format version {} needs a feature pipeline (features_pipeline)",
                self.version
            ),
        }
        let d = self.model.dim();
        ensure!(
            self.features.len() == d && self.mean.len() == d && self.std.len() == d,
            "feature names, mean and std must all have {d} entries"
        );
        ensure!(
            self.mean.iter().chain(&self.std).all(|v| v.is_finite()),
            "non-finite standardisation"
        );
        if let Some(t) = &self.threshold {
            ensure!(!t.score.is_nan(), "threshold is NaN");
        }
        Ok(())
    }

    /// Validate, then write through [`crate::output::write`] (atomic for
    /// regular files): a failure leaves no partial file.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.validate()?;
        ensure!(
            self.provenance.val_nll.is_finite(),
            "refusing to write {}: the model's validation NLL is {} (no held-out row could be scored)",
            path.display(),
            self.provenance.val_nll
        );
        let text = serde_json::to_string_pretty(self)?;
        // What is written must load: read it back the way `load` does.
        let back: ModelFile = serde_json::from_str(&text)
            .with_context(|| format!("refusing to write {}: the model would not load back", path.display()))?;
        back.validate()
            .with_context(|| format!("refusing to write {}: the model would not load back", path.display()))?;
        crate::output::write(path, text.as_bytes())
    }
}
