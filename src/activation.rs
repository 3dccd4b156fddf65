//! Activation functions of the conditioner networks.

/// A pointwise nonlinearity. Each one's derivative can be computed from its
/// *output*, so backward passes need to keep only post-activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `tanh(x)`: smooth, bounded; the default.
    #[default]
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `0.01·x`.
    LeakyRelu,
    /// `x` for `x > 0`, else `eˣ − 1`.
    Elu,
}

/// Slope of [`Activation::LeakyRelu`] for negative inputs.
pub const LEAKY_SLOPE: f32 = 0.01;

impl Activation {
    /// Apply the function.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Tanh => libm::tanhf(x),
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu => {
                if x > 0.0 {
                    x
                } else {
                    LEAKY_SLOPE * x
                }
            }
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    libm::expm1f(x)
                }
            }
        }
    }

    /// Derivative at the point whose *output* is `y`.
    #[inline(always)]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - y * y,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu => {
                if y > 0.0 {
                    1.0
                } else {
                    LEAKY_SLOPE
                }
            }
            Activation::Elu => {
                if y > 0.0 {
                    1.0
                } else {
                    y + 1.0
                }
            }
        }
    }

    /// Second derivative at the point whose output is `y` (used by the exact
    /// divergence's gradient of continuous flows).
    #[inline(always)]
    pub fn second_derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => -2.0 * y * (1.0 - y * y),
            Activation::Relu => 0.0,
            Activation::LeakyRelu => 0.0,
            Activation::Elu => {
                if y > 0.0 {
                    0.0
                } else {
                    y + 1.0
                }
            }
        }
    }
}
