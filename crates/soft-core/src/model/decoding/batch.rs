//! Batching token sequences of different lengths for the model. Left padding puts every row's
//! last token in the last column, where decoding and last-token embeddings read it.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::llama::Llama;
use crate::{Error, Result};

/// Left-pads `rows` into `(tokens, attention_mask)`, both `[B, longest]`, on the model's device.
/// Every id must be a token of the model's vocabulary or a slot of an item it embeds.
pub fn left_pad<S: AsRef<[u32]>>(model: &Llama, rows: &[S]) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
    let width = rows.iter().map(|r| r.as_ref().len()).max().ok_or_else(|| Error::Input("empty batch".into()))?;
    let mut tokens = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_ref();
        if row.is_empty() {
            return Err(Error::Input(format!("sequence {i} of the batch is empty")));
        }
        model.check_input_ids(row)?;
        let pad = width - row.len();
        tokens.extend(std::iter::repeat_n(0, pad).chain(row.iter().map(|&t| t as i64)));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, row.len())));
    }
    let device = model.device();
    let shape = [rows.len(), width];
    Ok((
        Tensor::from_data(TensorData::new(tokens, shape), &device),
        Tensor::from_data(TensorData::new(mask, shape), &device),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::small_model;

    #[test]
    fn rows_are_padded_on_the_left_and_bad_rows_refused() {
        let model = small_model(3);
        let (tokens, mask) = left_pad(&model, &[vec![5u32, 6, 7], vec![8]]).unwrap();
        assert_eq!(tokens.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [5, 6, 7, 0, 0, 8]);
        assert_eq!(mask.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [1, 1, 1, 0, 0, 1]);
        assert!(matches!(left_pad::<Vec<u32>>(&model, &[]), Err(Error::Input(_))));
        assert!(matches!(left_pad(&model, &[vec![1u32], vec![]]), Err(Error::Input(_))));
        assert!(matches!(left_pad(&model, &[vec![1_000u32]]), Err(Error::Input(_))));
    }
}
