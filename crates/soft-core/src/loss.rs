//! The negative log-likelihood head every trained model shares (language models over the
//! vocabulary, SASRec over the items).

pub use crate::kernels::nll;

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Int, Tensor, TensorData};

    use super::*;

    #[test]
    fn nll_is_minus_the_log_probability_of_the_target() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 2.0f32.ln(), 0.0], [2, 2]), &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        let got = nll(logits, targets).into_data().convert::<f32>();
        // Row 0: uniform over two, p = 1/2; row 1: p(0) = 2/3.
        let want = [2f32.ln(), 1.5f32.ln()];
        for (g, w) in got.as_slice::<f32>().unwrap().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
