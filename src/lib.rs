//! # flowmote — normalizing flows for microcontrollers
//!
//! A normalizing flow gives an *exact* log-likelihood,
//! `log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x|`,
//! where `f` is a stack of invertible layers with cheap log-determinants.
//! This crate is the core: `#![no_std]`, no allocator, `f32` arrays with
//! const-generic sizes, every model instantiable in a `static` so its weights
//! live in flash.
//!
//! ## The contract
//! * [`Bijector::forward`] maps data → latent and returns `log|det ∂forward/∂x|`;
//!   [`Bijector::inverse`] maps latent → data and returns the log-det of *that* map.
//! * A [`Mixture`] of flows, `p(x) = Σₖ wₖ pₖ(x)`, is a density too; both
//!   implement [`Density`], which the anomaly [`Detector`] scores with.
//! * [`Flow::log_prob`] never panics: NaN/Inf inputs, inputs outside a layer's
//!   domain and results that overflow come back as an [`Error`].
//! * Each layer's maths is written once, as a slice-level *view* (`…Ref` types)
//!   that works for any size chosen at run time; the const-generic layer types
//!   only hold the weights and call their view, so with inlining the device gets
//!   fixed-size loops and the host trainer differentiates the very same code
//!   (every trainable view has an allocation-free `backward`).
//! * Every view also implements one object-safe slice interface,
//!   [`SliceBijector`] (one flat scratch slice), and the layers trained by
//!   maximum likelihood [`SliceBackward`]: run-time-sized code loops over
//!   layers without knowing their kinds.
//!
//! ## Example: score a point with a tiny hand-built flow
//! ```
//! use flowmote::{ActNorm, Flow, Reverse};
//!
//! // Standardise (mean 1, std 2 on both axes), then swap the coordinates.
//! static MODEL: Flow<2, (ActNorm<2>, Reverse)> = Flow::new((
//!     ActNorm::new([-core::f32::consts::LN_2; 2], [-0.5; 2]),
//!     Reverse,
//! ));
//!
//! let lp = MODEL.log_prob(&[1.0, 1.0]).unwrap();
//! // N((1,1); mean 1, std 2) = 1 / (2π · 4)
//! let expected = -(2.0 * core::f32::consts::PI * 4.0).ln();
//! assert!((lp - expected).abs() < 1e-5);
//!
//! // Garbage in, an error out — never a panic.
//! assert!(MODEL.log_prob(&[f32::NAN, 0.0]).is_err());
//! ```
#![cfg_attr(not(test), no_std)]
// The only `unsafe` is the host-only AVX2 dispatch of `block` (feature
// `std`); the device build forbids it outright.
#![cfg_attr(not(feature = "std"), forbid(unsafe_code))]
#![cfg_attr(feature = "std", allow(unsafe_code))]
#![deny(missing_docs)]
#![warn(clippy::all)]
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]

pub mod activation;
pub mod actnorm;
pub mod adapt;
pub mod anomaly;
pub mod bijector;
pub mod block;
pub mod cnf;
pub mod coupling;
pub mod error;
pub mod features;
pub mod flow;
pub mod gradient;
pub mod layer;
pub mod linear;
pub mod maf;
pub mod mixture;
pub mod mlp;
pub mod normal;
pub mod permutation;
pub mod quantile;
pub mod sigmoid;
pub mod spline;
pub mod triangular;
pub mod weights;

#[cfg(feature = "std")]
extern crate std;

pub use activation::Activation;
pub use actnorm::{ActNorm, ActNormRef};
pub use adapt::{AdaptConfig, AdaptTarget, Adapter, Corrected, Tracked};
pub use anomaly::{Detector, KOfN, Verdict};
pub use bijector::Bijector;
pub use cnf::{Cnf, ContinuousFlowRef, Solver};
pub use coupling::{AffineCoupling, AffineCouplingRef};
pub use error::Error;
pub use flow::Flow;
pub use layer::{Frozen, SliceBackward, SliceBijector};
pub use linear::{LuLinear, LuLinearRef};
pub use maf::{Maf, MafRef};
pub use mixture::{Density, Mixture};
pub use mlp::{Mlp, MlpGrad, MlpI8, MlpRef, MlpShape};
pub use permutation::{Permutation, PermutationRef, Reverse};
pub use sigmoid::{Logit, Sigmoid};
pub use spline::{SplineAutoregressive, SplineAutoregressiveRef, SplineCoupling, SplineCouplingRef};
pub use triangular::{TriLinear, TriLinearRef};
pub use weights::{MlpStore, Weight, F16};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
