//! The layer trait and its composition by tuples.

use crate::Error;

/// An invertible map of `[f32; D]` with a tractable log-determinant.
///
/// Implemented by every layer and by tuples of layers (applied left to right
/// in `forward`, right to left in `inverse`), so a model is a plain value with
/// static dispatch and no allocation.
pub trait Bijector<const D: usize> {
    /// Data → latent, in place. Returns `log|det ∂forward/∂x|`.
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error>;
    /// Latent → data, in place. Returns `log|det ∂inverse/∂z|`
    /// (the negative of the forward log-det at the result).
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error>;
}

impl<const D: usize, T: Bijector<D> + ?Sized> Bijector<D> for &T {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        (**self).forward(x)
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        (**self).inverse(z)
    }
}

impl<const D: usize> Bijector<D> for () {
    #[inline(always)]
    fn forward(&self, _: &mut [f32; D]) -> Result<f32, Error> {
        Ok(0.0)
    }
    #[inline(always)]
    fn inverse(&self, _: &mut [f32; D]) -> Result<f32, Error> {
        Ok(0.0)
    }
}

macro_rules! tuple_bijector {
    ($(($($name:ident $idx:tt),+) rev ($($ridx:tt),+);)+) => {$(
        impl<const D: usize, $($name: Bijector<D>),+> Bijector<D> for ($($name,)+) {
            #[inline(always)]
            fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
                let mut ld = 0.0;
                $( ld += self.$idx.forward(x)?; )+
                Ok(ld)
            }
            #[inline(always)]
            fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
                let mut ld = 0.0;
                $( ld += self.$ridx.inverse(z)?; )+
                Ok(ld)
            }
        }
    )+};
}

tuple_bijector! {
    (A 0) rev (0);
    (A 0, B 1) rev (1, 0);
    (A 0, B 1, C 2) rev (2, 1, 0);
    (A 0, B 1, C 2, E 3) rev (3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4) rev (4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5) rev (5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6) rev (6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7) rev (7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8) rev (8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9) rev (9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10) rev (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11) rev (11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12) rev (12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13) rev (13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13, Q 14) rev (14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13, Q 14, R 15) rev (15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}
