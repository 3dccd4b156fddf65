//! Fixed permutations of the coordinates (log-det 0).

use crate::layer::{SliceBackward, SliceBijector};
use crate::{Bijector, Error};

/// `y[i] = x[perm[i]]` for a permutation given as a slice; the one
/// implementation, used by [`Permutation`] and by run-time-sized models.
/// `tmp` must be at least as long as `x` (else it panics); an index out of
/// range (not a permutation) reads 0 instead of panicking.
#[inline(always)]
pub fn permute_forward(perm: &[usize], x: &mut [f32], tmp: &mut [f32]) {
    let n = x.len();
    tmp[..n].copy_from_slice(x);
    for (y, &p) in x.iter_mut().zip(perm) {
        // `get` instead of indexing: no panic branch on the scoring path
        // (`perm` is a valid permutation for every constructed layer).
        *y = tmp.get(p).copied().unwrap_or(0.0);
    }
}

/// Inverse of [`permute_forward`]: `x[perm[i]] = y[i]`.
#[inline(always)]
pub fn permute_inverse(perm: &[usize], y: &mut [f32], tmp: &mut [f32]) {
    let n = y.len();
    tmp[..n].copy_from_slice(y);
    for (&t, &p) in tmp[..n].iter().zip(perm) {
        if let Some(v) = y.get_mut(p) {
            *v = t;
        }
    }
}

/// `true` if `perm` is a permutation of `0..perm.len()`.
pub const fn is_permutation(perm: &[usize]) -> bool {
    let n = perm.len();
    let mut i = 0;
    while i < n {
        if perm[i] >= n {
            return false;
        }
        let mut j = i + 1;
        while j < n {
            if perm[j] == perm[i] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// A permutation given as a slice, `y[i] = x[perm[i]]`: the slice-level view
/// of [`Permutation`]. Scratch: `d` floats.
#[derive(Clone, Copy, Debug)]
pub struct PermutationRef<'a> {
    /// The permutation of `0..d`.
    pub perm: &'a [usize],
}

impl SliceBijector for PermutationRef<'_> {
    fn scratch_len(&self) -> usize {
        self.perm.len()
    }
    fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32 {
        permute_forward(self.perm, x, scratch);
        0.0
    }
    fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32 {
        permute_inverse(self.perm, z, scratch);
        0.0
    }
}

/// `y = P x`, so `∂L/∂x = Pᵀ ∂L/∂y`; no parameters.
impl SliceBackward for PermutationRef<'_> {
    fn param_len(&self) -> usize {
        0
    }
    fn train_scratch_len(&self) -> usize {
        self.perm.len()
    }
    fn backward_flat(&self, _: &[f32], g: &mut [f32], _: f32, _: &mut [f32], scratch: &mut [f32]) {
        permute_inverse(self.perm, g, scratch);
    }
    fn backward_input(&self, _: &[f32], g: &mut [f32], _: f32, scratch: &mut [f32]) {
        permute_inverse(self.perm, g, scratch);
    }
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}

/// A fixed permutation: `y[i] = x[perm[i]]`. Orthogonal, log-det 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation<const D: usize> {
    perm: [usize; D],
}

impl<const D: usize> Permutation<D> {
    /// Build from `perm`. In a `static` an invalid permutation is a compile
    /// error; at run time it panics (use [`Permutation::try_new`] instead).
    pub const fn new(perm: [usize; D]) -> Self {
        assert!(is_permutation(&perm), "not a permutation of 0..D");
        Permutation { perm }
    }

    /// Build from `perm`, or `None` if it is not a permutation of `0..D`.
    pub const fn try_new(perm: [usize; D]) -> Option<Self> {
        if is_permutation(&perm) {
            Some(Permutation { perm })
        } else {
            None
        }
    }

    /// The permutation, `y[i] = x[perm[i]]`.
    pub const fn indices(&self) -> &[usize; D] {
        &self.perm
    }

    /// Borrow as the slice-level view.
    pub fn view(&self) -> PermutationRef<'_> {
        PermutationRef { perm: &self.perm }
    }
}

impl<const D: usize> Bijector<D> for Permutation<D> {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        permute_forward(&self.perm, x, &mut tmp);
        Ok(0.0)
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        permute_inverse(&self.perm, z, &mut tmp);
        Ok(0.0)
    }
}

/// Reverses the coordinates, for any `D`; needs no storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reverse;

impl<const D: usize> Bijector<D> for Reverse {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        x.reverse();
        Ok(0.0)
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        z.reverse();
        Ok(0.0)
    }
}

impl SliceBijector for Reverse {
    fn scratch_len(&self) -> usize {
        0
    }
    fn forward_flat(&self, x: &mut [f32], _: &mut [f32]) -> f32 {
        x.reverse();
        0.0
    }
    fn inverse_flat(&self, z: &mut [f32], _: &mut [f32]) -> f32 {
        z.reverse();
        0.0
    }
}

/// Its own transpose; no parameters.
impl SliceBackward for Reverse {
    fn param_len(&self) -> usize {
        0
    }
    fn train_scratch_len(&self) -> usize {
        0
    }
    fn backward_flat(&self, _: &[f32], g: &mut [f32], _: f32, _: &mut [f32], _: &mut [f32]) {
        g.reverse();
    }
    fn backward_input(&self, _: &[f32], g: &mut [f32], _: f32, _: &mut [f32]) {
        g.reverse();
    }
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}
