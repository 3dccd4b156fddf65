//! Device targets: the parts a model is trained for, what they hold and what
//! a score costs on them.
//!
//! A model is trained *for a target* (`flowmote train --target NAME`): the
//! kept model must fit the target's budget, by default at most
//! [`DEFAULT_MAX_WEIGHT_BYTES`] of weights in flash and [`DEFAULT_MAX_MS`] per
//! score at the part's clock. The time of a score is estimated from the
//! model's multiply-adds, activations, spline evaluations, `exp`s and
//! mixture members with the instruction costs measured on an emulated core
//! of the part's class (`benches/firmware-bench.sh`, see each profile's
//! [`Target::measured`]). Each cost is the most its measured rows show, so
//! the estimate has been above the counted instructions of every model
//! measured (by 16–35 % on the Cortex-M4F); it assumes one cycle per
//! instruction, and real parts add flash wait states on top.
//! `host` has no limits: the search keeps whatever validates best.

use crate::model::Storage;
use anyhow::{bail, Result};
use serde::Serialize;

/// Default flash budget of a target's kept model (weights only).
pub const DEFAULT_MAX_WEIGHT_BYTES: u64 = 64 * 1024;
/// Default time budget of one score, in milliseconds at the part's clock.
pub const DEFAULT_MAX_MS: f64 = 2.0;

/// A part a model can be trained for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// Name given to `--target`.
    pub name: &'static str,
    /// The part, its core and its board.
    pub part: &'static str,
    /// Core clock, Hz (0 for the host).
    pub clock_hz: u64,
    /// Whether the core has a single-precision FPU.
    pub fpu: bool,
    /// Flash, bytes (0 for the host: no limit).
    pub flash_bytes: u64,
    /// RAM, bytes (0 for the host: no limit).
    pub ram_bytes: u64,
    /// Instructions per multiply-add of a network layer.
    pub instr_per_mac: f64,
    /// Instructions per hidden-unit activation (tanh).
    pub instr_per_activation: f64,
    /// Instructions per multiply-add of a linear (LU or triangular) layer:
    /// its rows are short and each ends in a division or an exp, so they
    /// cost more per multiply-add than a network's.
    pub instr_per_linear_mac: f64,
    /// Instructions per spline evaluation (one coordinate of a spline layer:
    /// softmax and softplus of its bins, the bin search, the rational
    /// quadratic and its log-derivative), beyond its network's multiply-adds
    /// and activations.
    pub instr_per_spline: f64,
    /// Instructions per coordinate of an elementwise affine (ActNorm) layer,
    /// the base density's share included (the exported layer's scales are
    /// computed at compile time: a multiply-add and a share of the log-det).
    pub instr_per_elementwise: f64,
    /// Instructions per coordinate an affine coupling or MAF layer
    /// transforms (its soft clamp, `exp` and multiply-add), beyond its
    /// network's multiply-adds and activations.
    pub instr_per_affine: f64,
    /// Instructions per member a mixture combines (an `exp` and a share of
    /// a `log`).
    pub instr_per_member: f64,
    /// Extra instructions per multiply-add whose weight is stored as `i8`
    /// (loading and widening it; the row's scale is one multiply per row).
    pub extra_per_i8_mac: f64,
    /// Extra instructions per multiply-add whose weight is stored as `f16`.
    pub extra_per_f16_mac: f64,
    /// How the instruction costs were obtained.
    pub measured: &'static str,
}

/// The budget a kept model must meet: `None` = no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DeviceBudget {
    /// Most bytes of weights in flash.
    pub max_weight_bytes: Option<u64>,
    /// Most milliseconds per score (estimated, see [`Target::estimated_ms`]).
    pub max_ms: Option<f64>,
}

/// What a model costs on a device: the figures a [`DeviceBudget`] bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelCost {
    /// Trained parameters.
    pub parameters: usize,
    /// Bytes of weights in flash.
    pub weight_bytes: u64,
    /// Multiply-adds per score.
    pub macs: u64,
    /// Hidden-unit activations per score.
    pub activations: u64,
    /// How the conditioners' weights are stored.
    pub storage: Storage,
    /// The multiply-adds (of `macs`) whose weights are stored compressed.
    pub compressed_macs: u64,
    /// The multiply-adds (of `macs`) of linear (LU, triangular) layers.
    pub linear_macs: u64,
    /// Spline evaluations per score.
    pub splines: u64,
    /// Coordinates of elementwise affine (ActNorm) layers per score.
    pub elementwise: u64,
    /// Coordinates affine coupling and MAF layers transform per score.
    pub affine: u64,
    /// Members a score combines (0 for one flow).
    pub members: u64,
}

impl ModelCost {
    /// The cost of `m` as exported.
    pub fn of(m: &crate::model::DynMixture) -> Self {
        ModelCost {
            parameters: m.parameters(),
            weight_bytes: m.weight_bytes() as u64,
            macs: m.macs() as u64,
            activations: m.activations() as u64,
            storage: m.storage(),
            compressed_macs: m.compressed_macs() as u64,
            linear_macs: m.linear_macs() as u64,
            splines: m.splines() as u64,
            elementwise: m.elementwise() as u64,
            affine: m.affine() as u64,
            members: m.combined_members() as u64,
        }
    }

    /// The cost of an equal-weight mixture of `k` models costing this
    /// (a `k`-fold committee), counted as [`ModelCost::of`] counts it.
    pub fn repeated(&self, k: usize) -> Self {
        let w = crate::model::mixture_weights(k);
        let k64 = k as u64;
        ModelCost {
            parameters: self.parameters * k + w,
            weight_bytes: self.weight_bytes * k64 + 4 * w as u64,
            macs: self.macs * k64,
            activations: self.activations * k64,
            storage: self.storage,
            compressed_macs: self.compressed_macs * k64,
            linear_macs: self.linear_macs * k64,
            splines: self.splines * k64,
            elementwise: self.elementwise * k64,
            affine: self.affine * k64,
            members: w as u64,
        }
    }
}

impl Target {
    /// Whether this is the host profile (no device limits).
    pub fn is_host(&self) -> bool {
        self.clock_hz == 0
    }

    /// The default budget: 64 KB of weights and 2 ms per score on a device,
    /// nothing on the host.
    pub fn default_budget(&self) -> DeviceBudget {
        if self.is_host() {
            DeviceBudget::default()
        } else {
            DeviceBudget {
                max_weight_bytes: Some(DEFAULT_MAX_WEIGHT_BYTES.min(self.flash_bytes)),
                max_ms: Some(DEFAULT_MAX_MS),
            }
        }
    }

    /// Estimated instructions of one score: `macs` multiply-adds and
    /// `activations` hidden-unit activations.
    pub fn estimated_instructions(&self, macs: u64, activations: u64) -> f64 {
        macs as f64 * self.instr_per_mac + activations as f64 * self.instr_per_activation
    }

    /// [`Target::estimated_ms`] of a model's cost, with its linear layers'
    /// multiply-adds at [`Target::instr_per_linear_mac`], its compressed
    /// weights' extra instructions, and its splines, `exp`s and mixture
    /// members at their own costs.
    pub fn estimated_ms_of(&self, c: &ModelCost) -> Option<f64> {
        let extra = match c.storage {
            Storage::F32 => 0.0,
            Storage::F16 => self.extra_per_f16_mac,
            Storage::I8 => self.extra_per_i8_mac,
        };
        let more = c.compressed_macs as f64 * extra
            + c.linear_macs.min(c.macs) as f64 * (self.instr_per_linear_mac - self.instr_per_mac)
            + c.splines as f64 * self.instr_per_spline
            + c.elementwise as f64 * self.instr_per_elementwise
            + c.affine as f64 * self.instr_per_affine
            + c.members as f64 * self.instr_per_member;
        self.estimated_ms(c.macs, c.activations)
            .map(|ms| ms + 1e3 * more / self.clock_hz as f64)
    }

    /// Estimated milliseconds of one score at the part's clock, one cycle per
    /// instruction (`None` on the host).
    pub fn estimated_ms(&self, macs: u64, activations: u64) -> Option<f64> {
        (!self.is_host()).then(|| 1e3 * self.estimated_instructions(macs, activations) / self.clock_hz as f64)
    }
}

/// The built-in targets; the first is the default (the firmware's board).
pub const TARGETS: &[Target] = &[
    Target {
        name: "nrf52840",
        part: "Nordic nRF52840 (Cortex-M4F, nRF52840-DK)",
        clock_hz: 64_000_000,
        fpu: true,
        flash_bytes: 1024 * 1024,
        ram_bytes: 256 * 1024,
        instr_per_mac: 2.9,
        instr_per_activation: 30.0,
        instr_per_linear_mac: 7.2,
        instr_per_spline: 2149.0,
        instr_per_elementwise: 7.9,
        instr_per_affine: 93.1,
        instr_per_member: 93.5,
        extra_per_i8_mac: 2.0,
        extra_per_f16_mac: 11.2,
        measured: "emulated Cortex-M4F (QEMU mps2-an386): MLP 8-64-64-16 relu row and the tanh row's extra of benches/firmware-bench.sh, the f16 and i8 rows' extra over the f32 ones, the most per multiply-add of its LU and triangular rows, the most per spline of its spline rows and of the exported models counted below, its ActNorm row per coordinate, the most per transformed coordinate of its MAF and coupling rows, and its two-member mixture row per member: at or above the most each model counted on its 8 held-out golden inputs (bundled nsf 4×32 model: 54 285 estimated, 52 984 counted; daphnet_gait's nsf 4×24 student 89 206 and 84 571; with 24 Gaussians beside it 101 025 and 92 665; japanese_vowels' nsf 4×4 with 3 tied Gaussians 129 420 and 129 375; digits' maf 4×12 with 6 diagonal Gaussians 84 687 and 75 373)",
    },
    Target {
        name: "stm32f411",
        part: "ST STM32F411CE (Cortex-M4F, Black Pill)",
        clock_hz: 100_000_000,
        fpu: true,
        flash_bytes: 512 * 1024,
        ram_bytes: 128 * 1024,
        instr_per_mac: 2.9,
        instr_per_activation: 30.0,
        instr_per_linear_mac: 7.2,
        instr_per_spline: 2149.0,
        instr_per_elementwise: 7.9,
        instr_per_affine: 93.1,
        instr_per_member: 93.5,
        extra_per_i8_mac: 2.0,
        extra_per_f16_mac: 11.2,
        measured: "same core as nrf52840: emulated Cortex-M4F (QEMU mps2-an386)",
    },
    Target {
        name: "rp2040",
        part: "Raspberry Pi RP2040 (dual Cortex-M0+, no FPU, Pico)",
        clock_hz: 133_000_000,
        fpu: false,
        flash_bytes: 2 * 1024 * 1024,
        ram_bytes: 264 * 1024,
        instr_per_mac: 186.0,
        instr_per_activation: 3460.0,
        instr_per_linear_mac: 279.0,
        instr_per_spline: 110530.0,
        instr_per_elementwise: 489.3,
        instr_per_affine: 4643.0,
        instr_per_member: 3567.0,
        extra_per_i8_mac: 72.0,
        extra_per_f16_mac: 130.0,
        measured: "emulated Cortex-M0, soft float (QEMU microbit): MLP 8-32-32-16 relu and tanh rows of benches/firmware-bench.sh --m0, the MLP 8-16-16-16 f16 and i8 rows' extra over its f32 row, the most per multiply-add of its LU and triangular rows, and the spline, ActNorm, MAF, coupling and mixture rows as for nrf52840 (on the held-out golden inputs: bundled nsf 4×32 model 3 654 811 estimated and at most 3 654 811 counted; japanese_vowels' nsf 4×4 with 3 tied Gaussians 6 758 197 and 5 987 087; digits' maf 4×12 with 6 diagonal Gaussians 4 571 679 and 4 293 090)",
    },
    Target {
        name: "esp32c3",
        part: "Espressif ESP32-C3 (RV32IMC, no FPU)",
        clock_hz: 160_000_000,
        fpu: false,
        flash_bytes: 4 * 1024 * 1024,
        ram_bytes: 400 * 1024,
        instr_per_mac: 102.8,
        instr_per_activation: 1701.0,
        instr_per_linear_mac: 159.4,
        instr_per_spline: 58487.0,
        instr_per_elementwise: 263.3,
        instr_per_affine: 2604.0,
        instr_per_member: 2013.0,
        extra_per_i8_mac: 57.7,
        extra_per_f16_mac: 60.6,
        measured: "emulated RV32IMC, soft float (QEMU riscv32 virt; the ESP32-C3's instruction set, not its timing): the rows of benches/firmware-bench.sh --rv32 as for rp2040 (on the held-out golden inputs: bundled nsf 4×32 model 1 945 091 estimated and at most 1 945 091 counted; japanese_vowels' model 3 610 693 and 3 257 777; digits' 2 528 966 and 2 314 709)",
    },
    Target {
        name: "host",
        part: "the machine running flowmote (no device limits)",
        clock_hz: 0,
        fpu: true,
        flash_bytes: 0,
        ram_bytes: 0,
        instr_per_mac: 0.0,
        instr_per_activation: 0.0,
        instr_per_linear_mac: 0.0,
        instr_per_spline: 0.0,
        instr_per_elementwise: 0.0,
        instr_per_affine: 0.0,
        instr_per_member: 0.0,
        extra_per_i8_mac: 0.0,
        extra_per_f16_mac: 0.0,
        measured: "not a device",
    },
];

/// The target named `name`; an unknown name is an error listing the known ones.
pub fn find(name: &str) -> Result<&'static Target> {
    match TARGETS.iter().find(|t| t.name.eq_ignore_ascii_case(name)) {
        Some(t) => Ok(t),
        None => bail!(
            "unknown target {name:?}; the known targets are {} (`flowmote list-targets` describes them)",
            TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The default target: the firmware's board.
pub fn default_target() -> &'static Target {
    &TARGETS[0]
}

/// A table of the targets for `flowmote list-targets`.
pub fn describe_all() -> String {
    let mut s = String::new();
    for t in TARGETS {
        if t.is_host() {
            s.push_str(&format!("{:<10} {} — trains without a budget\n", t.name, t.part));
            continue;
        }
        let b = t.default_budget();
        s.push_str(&format!(
            "{:<10} {}: {} MHz, {}, {} KB flash, {} KB RAM\n{:<10} {:.1} instructions per multiply-add ({:.1} in a linear layer), {:.0} per activation, {:.0} per spline evaluation, {:.1} per ActNorm coordinate, {:.0} per affine (MAF, coupling) coordinate, {:.0} per mixture member ({})\n{:<10} default budget: {} KB of weights, {} ms per score (≈ {:.0} multiply-adds)\n",
            t.name,
            t.part,
            t.clock_hz / 1_000_000,
            if t.fpu { "FPU" } else { "soft float" },
            t.flash_bytes / 1024,
            t.ram_bytes / 1024,
            "",
            t.instr_per_mac,
            t.instr_per_linear_mac,
            t.instr_per_activation,
            t.instr_per_spline,
            t.instr_per_elementwise,
            t.instr_per_affine,
            t.instr_per_member,
            t.measured,
            "",
            b.max_weight_bytes.unwrap_or(0) / 1024,
            b.max_ms.unwrap_or(0.0),
            b.max_ms.unwrap_or(0.0) * 1e-3 * t.clock_hz as f64 / t.instr_per_mac,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_targets_list_the_known_ones() {
        let e = find("atmega328").unwrap_err().to_string();
        for t in TARGETS {
            assert!(e.contains(t.name), "{e}");
        }
        assert_eq!(find("NRF52840").unwrap().name, "nrf52840");
        assert_eq!(default_target().name, "nrf52840");
    }

    #[test]
    fn estimates_scale_with_work_and_clock() {
        let t = find("nrf52840").unwrap();
        // 64 MHz, 2.9 instructions per MAC: 22 069 MACs ≈ 1 ms.
        let ms = t.estimated_ms(22_069, 0).unwrap();
        assert!((ms - 1.0).abs() < 1e-3, "{ms}");
        assert!(t.estimated_ms(22_069, 100).unwrap() > ms);
        assert_eq!(find("host").unwrap().estimated_ms(1 << 20, 0), None);
        assert_eq!(find("host").unwrap().default_budget(), DeviceBudget::default());
        let b = t.default_budget();
        assert_eq!(b.max_weight_bytes, Some(64 * 1024));
        assert_eq!(b.max_ms, Some(2.0));
        assert!(describe_all().contains("rp2040"));
    }

    #[test]
    fn linear_layers_cost_their_own_instructions() {
        let net = ModelCost {
            macs: 10_000,
            activations: 100,
            ..ModelCost::default()
        };
        for t in TARGETS.iter().filter(|t| !t.is_host()) {
            assert!(t.instr_per_linear_mac > t.instr_per_mac, "{}", t.name);
            let base = t.estimated_ms_of(&net).unwrap();
            let c = ModelCost {
                linear_macs: 900,
                ..net
            };
            let ms = t.estimated_ms_of(&c).unwrap();
            let want = base + 1e3 * 900.0 * (t.instr_per_linear_mac - t.instr_per_mac) / t.clock_hz as f64;
            assert!((ms - want).abs() < 1e-9 && ms > base, "{}: {ms} vs {want}", t.name);
        }
    }

    #[test]
    fn splines_transformed_coordinates_and_mixture_members_cost_their_own_instructions() {
        let net = ModelCost {
            macs: 10_000,
            activations: 100,
            ..ModelCost::default()
        };
        for t in TARGETS.iter().filter(|t| !t.is_host()) {
            let base = t.estimated_ms_of(&net).unwrap();
            for (c, per) in [
                (ModelCost { splines: 20, ..net }, t.instr_per_spline),
                (ModelCost { elementwise: 20, ..net }, t.instr_per_elementwise),
                (ModelCost { affine: 20, ..net }, t.instr_per_affine),
                (ModelCost { members: 20, ..net }, t.instr_per_member),
            ] {
                assert!(per > t.instr_per_mac, "{}", t.name);
                let ms = t.estimated_ms_of(&c).unwrap();
                let want = base + 1e3 * 20.0 * per / t.clock_hz as f64;
                assert!((ms - want).abs() < 1e-9, "{}: {ms} vs {want}", t.name);
            }
        }
        // What a model counts: a spline coupling's transformed coordinates,
        // an ActNorm's coordinates, a mixture's members (and below, an affine
        // coupling's transformed coordinates).
        use crate::model::{DynFlow, DynMixture, Layer, Net};
        let flow = DynFlow::new(
            3,
            vec![
                Layer::ActNorm {
                    log_scale: vec![0.0; 3],
                    shift: vec![0.0; 3],
                    frozen: true,
                },
                Layer::SplineCoupling {
                    a: 1,
                    b: 2,
                    bins: 4,
                    tail_bound: 3.0,
                    net: Net {
                        hidden: 4,
                        depth: 1,
                        act: crate::model::Act::Tanh,
                    },
                    params: vec![0.0; 4 + 4 + 2 * 11 * 4 + 2 * 11],
                },
            ],
        );
        flow.validate().unwrap();
        let one = ModelCost::of(&DynMixture::single(flow.clone()));
        assert_eq!((one.splines, one.elementwise, one.members), (2, 3, 0));
        let two = DynMixture {
            log_weights: vec![0.5f32.ln(); 2],
            flows: vec![flow.clone(), flow],
        };
        let c = ModelCost::of(&two);
        assert_eq!((c.splines, c.elementwise, c.members), (4, 6, 2));
        assert_eq!(one.repeated(2), c);
        // An affine coupling: its transformed coordinates.
        let affine = DynFlow::new(
            3,
            vec![Layer::AffineCoupling {
                a: 1,
                b: 2,
                net: Net {
                    hidden: 4,
                    depth: 1,
                    act: crate::model::Act::Tanh,
                },
                clamp: 3.0,
                params: vec![0.0; 4 + 4 + 4 * 4 + 4],
            }],
        );
        affine.validate().unwrap();
        let c = ModelCost::of(&DynMixture::single(affine));
        assert_eq!((c.affine, c.splines, c.elementwise), (2, 0, 0));
        assert_eq!(one.affine, 0);
    }

    #[test]
    fn compressed_weights_cost_their_extra_instructions() {
        let f32_cost = ModelCost {
            macs: 10_000,
            activations: 100,
            ..ModelCost::default()
        };
        for t in TARGETS.iter().filter(|t| !t.is_host()) {
            let base = t.estimated_ms_of(&f32_cost).unwrap();
            assert_eq!(Some(base), t.estimated_ms(10_000, 100));
            for (storage, extra) in [(Storage::I8, t.extra_per_i8_mac), (Storage::F16, t.extra_per_f16_mac)] {
                let c = ModelCost {
                    storage,
                    compressed_macs: 8_000,
                    ..f32_cost
                };
                let ms = t.estimated_ms_of(&c).unwrap();
                let want = base + 1e3 * 8_000.0 * extra / t.clock_hz as f64;
                assert!((ms - want).abs() < 1e-9 && ms > base, "{}: {ms} vs {want}", t.name);
            }
        }
    }
}
