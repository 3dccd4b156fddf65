//! Windows of readings (fixed capacity, `heapless`) and the map from a window
//! to the model's feature vector.

use heapless::Vec;

/// One accelerometer reading, milli-g per axis (X, Y, Z).
pub type Reading = [i16; 3];

/// A tumbling window of up to `W` readings.
#[derive(Clone, Debug, Default)]
pub struct Window<const W: usize> {
    buf: Vec<Reading, W>,
}

impl<const W: usize> Window<W> {
    /// An empty window. `W ≥ 1` is checked at compile time.
    pub const fn new() -> Self {
        const { assert!(W >= 1, "a window holds at least one reading") };
        Window { buf: Vec::new() }
    }

    /// Add a reading; returns `true` when the window is full (ready to score).
    /// A reading pushed into a full window is dropped (call
    /// [`Window::clear`] after scoring).
    pub fn push(&mut self, r: Reading) -> bool {
        let _ = self.buf.push(r);
        self.is_full()
    }

    /// Whether the window holds `W` readings.
    pub fn is_full(&self) -> bool {
        self.buf.is_full()
    }

    /// The readings so far, oldest first.
    pub fn readings(&self) -> &[Reading] {
        &self.buf
    }

    /// Start a new window.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Maps a window of readings to the `D` features a model scores.
pub trait FeatureMap<const D: usize> {
    /// The feature vector of `window` (never empty when called by
    /// [`crate::Monitor`]). Must not panic.
    fn features(&self, window: &[Reading]) -> [f32; D];
}

/// Feature `i` is the window mean of axis `i mod 3`, in milli-g.
///
/// For a 3-feature model of one accelerometer (`FEATURES = ["ax", "ay", "az"]`
/// in data units, which is what the bundled model expects) this is exactly the
/// per-axis mean. For a `D = 3k` model trained on `k` sensors it repeats the one
/// sensor's means — a stand-in until a board has `k` sensors; replace the map,
/// not the monitor.
#[derive(Clone, Copy, Debug, Default)]
pub struct AxisMeans;

impl<const D: usize> FeatureMap<D> for AxisMeans {
    fn features(&self, window: &[Reading]) -> [f32; D] {
        let mut sum = [0i32; 3];
        for r in window {
            for (s, v) in sum.iter_mut().zip(r) {
                *s += i32::from(*v);
            }
        }
        let n = window.len().max(1) as f32;
        let mut out = [0.0f32; D];
        for (i, o) in out.iter_mut().enumerate() {
            *o = sum[i % 3] as f32 / n;
        }
        out
    }
}
