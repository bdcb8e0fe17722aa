//! Grounding: rank every item by the L2 distance between its embedding and a query embedding
//! (a generated answer's), nearest first.

use burn::tensor::Tensor;

/// Indices of the `k` smallest values, smallest first; ties go to the lower index so rankings
/// are deterministic. NaN sorts last.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let cmp = |&a: &usize, &b: &usize| values[a].total_cmp(&values[b]).then(a.cmp(&b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

/// Squared L2 distances `[Q, N]` between query rows `[Q, D]` and table rows `[N, D]`,
/// as |q|² - 2 q·t + |t|²: one matrix product instead of Q×N differences.
pub fn squared_l2(queries: Tensor<2>, table: Tensor<2>) -> Tensor<2> {
    let q2 = queries.clone().powf_scalar(2.0).sum_dim(1); // [Q, 1]
    let t2 = table.clone().powf_scalar(2.0).sum_dim(1).transpose(); // [1, N]
    let cross = queries.matmul(table.transpose()); // [Q, N]
    (q2 + t2 - cross.mul_scalar(2.0)).clamp_min(0.0)
}

/// For each query, the `k` nearest table rows, nearest first.
pub fn rank_by_l2(queries: Tensor<2>, table: Tensor<2>, k: usize) -> Vec<Vec<usize>> {
    let [q, n] = [queries.dims()[0], table.dims()[0]];
    let d = squared_l2(queries, table).into_data().convert::<f32>();
    let flat = d.as_slice::<f32>().expect("f32 data");
    (0..q).map(|i| top_k(&flat[i * n..(i + 1) * n], k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn top_k_is_stable_on_ties() {
        assert_eq!(top_k(&[3.0, 1.0, 2.0, 1.0, 0.5], 3), vec![4, 1, 3]);
        assert_eq!(top_k(&[1.0, f32::NAN, 0.0], 5), vec![2, 0, 1]);
        assert!(top_k(&[], 3).is_empty());
    }

    #[test]
    fn ranks_a_small_table_by_distance() {
        let device = Device::flex();
        // Items on a line and one off it; distances from query (1, 0):
        // item0 (0,0) -> 1, item1 (1,0) -> 0, item2 (3,0) -> 4, item3 (1,1.5) -> 2.25.
        let table =
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 1.0, 0.0, 3.0, 0.0, 1.0, 1.5], [4, 2]), &device);
        let queries = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 3.0, 0.1], [2, 2]), &device);
        let d = squared_l2(queries.clone(), table.clone()).into_data().convert::<f32>();
        let d = d.as_slice::<f32>().unwrap();
        assert!((d[3] - 2.25).abs() < 1e-5);
        let ranked = rank_by_l2(queries, table, 4);
        assert_eq!(ranked[0], vec![1, 0, 3, 2]);
        assert_eq!(ranked[1], vec![2, 1, 3, 0]);
    }
}
