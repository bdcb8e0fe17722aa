//! What the product benches share: SmolLM2's projection shapes and their timing rounds.

/// One block's projections `[in, out]`: q, k, v, o, gate, up, down.
pub const SHAPES: [(usize, usize); 7] =
    [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)];
pub const ROUNDS: usize = 9;

/// The median of `t` (seconds), in ms.
pub fn median_ms(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2] * 1e3
}
