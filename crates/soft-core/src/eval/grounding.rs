//! Grounding: embed texts as the model's last-layer hidden state at their last token, and rank
//! every item by the L2 distance between its embedding and a query embedding (a generated
//! answer's), nearest first.

use std::cmp::Reverse;

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::decoding::batch::left_pad;
use crate::model::llama::Llama;
use crate::model::weights::host_values_async;
use crate::progress::{Event, Progress};
use crate::{Error, Result};

/// The last-layer hidden state (after the final norm) at the last token of each text,
/// `[texts, hidden]`, computed `batch_size` texts at a time. Texts are batched longest first so
/// that little padding is computed; rows come back in input order.
pub fn embed_last_token<S: AsRef<[u32]>>(
    model: &Llama,
    texts: &[S],
    batch_size: usize,
    progress: Progress,
) -> Result<Tensor<2>> {
    if texts.is_empty() || batch_size == 0 {
        return Err(Error::Input("embed_last_token: no texts, or batch_size 0".into()));
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| Reverse(texts[i].as_ref().len()));
    let mut parts = Vec::with_capacity(order.len().div_ceil(batch_size));
    progress(Event::Begin { what: "embedding titles", total: Some(order.len().div_ceil(batch_size) as u64) });
    for batch in order.chunks(batch_size) {
        let rows: Vec<&[u32]> = batch.iter().map(|&i| texts[i].as_ref()).collect();
        let (tokens, mask) = left_pad(model, &rows)?;
        let hidden = model.hidden_states(tokens, mask, None);
        let [b, t, d] = hidden.dims();
        parts.push(hidden.narrow(1, t - 1, 1).reshape([b, d]));
        progress(Event::Step { loss: None });
    }
    progress(Event::End);
    // Row i of the sorted result is text order[i]; gather it back into input order.
    let mut inverse = vec![0i64; order.len()];
    for (sorted, &original) in order.iter().enumerate() {
        inverse[original] = sorted as i64;
    }
    let sorted = Tensor::cat(parts, 0);
    let inverse = Tensor::<1, Int>::from_data(TensorData::new(inverse, [order.len()]), &sorted.device());
    Ok(sorted.select(0, inverse))
}

/// Indices of the `k` smallest values, smallest first; ties go to the lower index so rankings
/// are deterministic. NaN sorts last.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    top_k_of(values.iter().copied(), k)
}

/// [`top_k`] over values as they are computed: each becomes one integer, its
/// [`total_order_key`] above its index, so a selection and a sort of plain integers rank by
/// value then index (no comparisons through an index, no second buffer: the selection was the
/// slower half of grounding a batch).
fn top_k_of(values: impl Iterator<Item = f32>, k: usize) -> Vec<usize> {
    let mut keys: Vec<i64> =
        values.enumerate().map(|(i, v)| ((total_order_key(v) as i64) << 32) | i as u32 as i64).collect();
    let k = k.min(keys.len());
    if k == 0 {
        return Vec::new();
    }
    keys.select_nth_unstable(k - 1);
    keys.truncate(k);
    keys.sort_unstable();
    keys.into_iter().map(|key| (key & 0xFFFF_FFFF) as usize).collect()
}

/// `f32::total_cmp`'s order as an integer: negative values' magnitude bits flipped.
fn total_order_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Squared L2 distances `[Q, N]` between query rows `[Q, D]` and table rows `[N, D]`,
/// as |q|² - 2 q·t + |t|²: one matrix product instead of Q×N differences.
pub fn squared_l2(queries: Tensor<2>, table: Tensor<2>) -> Tensor<2> {
    let q2 = queries.clone().powf_scalar(2.0).sum_dim(1); // [Q, 1]
    let t2 = table.clone().powf_scalar(2.0).sum_dim(1).transpose(); // [1, N]
    let cross = queries.matmul(table.transpose()); // [Q, N]
    (q2 + t2 - cross.mul_scalar(2.0)).clamp_min(0.0)
}

/// For each query, the `k` nearest table rows, nearest first. Ranks each row by |t|² - 2 q·t:
/// a query's own |q|² shifts its whole row of distances and cannot change their order, so only
/// the product and the table's norms are computed on the device, and the `[Q, N]` scores are
/// formed while reading them back (no elementwise passes over the matrix; BENCHMARKS.md).
pub fn rank_by_l2(queries: Tensor<2>, table: Tensor<2>, k: usize) -> Vec<Vec<usize>> {
    let (norms, cross) = l2_parts(queries, table);
    let norms = norms.into_data().convert::<f32>();
    let cross = cross.into_data().convert::<f32>();
    rank_on_host(norms.as_slice::<f32>().expect("f32 data"), cross.as_slice::<f32>().expect("f32 data"), k)
}

/// [`rank_by_l2`] reading back with an await (WebGPU in a browser; no device top-k), with each
/// item's L2 distance to its query: per query, `(row, distance)`, nearest first.
pub async fn rank_by_l2_async(queries: Tensor<2>, table: Tensor<2>, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    let q = queries.dims()[0];
    let query_norms = (queries.clone() * queries.clone()).sum_dim(1).reshape([q]);
    let (norms, cross) = l2_parts(queries, table);
    let query_norms: Vec<f32> = host_values_async(query_norms).await?;
    let norms: Vec<f32> = host_values_async(norms).await?;
    let cross: Vec<f32> = host_values_async(cross).await?;
    let n = norms.len();
    Ok(rank_on_host(&norms, &cross, k)
        .into_iter()
        .enumerate()
        .map(|(i, rows)| {
            rows.into_iter()
                .map(|j| (j, (query_norms[i] + norms[j] - 2.0 * cross[i * n + j]).max(0.0).sqrt()))
                .collect()
        })
        .collect())
}

/// The device half of the ranking: the table's squared norms `[N]` and the products `[Q, N]`.
fn l2_parts(queries: Tensor<2>, table: Tensor<2>) -> (Tensor<1>, Tensor<2>) {
    let n = table.dims()[0];
    let norms = (table.clone() * table.clone()).sum_dim(1).reshape([n]);
    (norms, queries.matmul(table.transpose()))
}

/// The host half: per query row of `cross`, the `k` smallest |t|² - 2 q·t. Natively the rows
/// are ranked on every core (the selection was a quarter of grounding's time on one).
fn rank_on_host(norms: &[f32], cross: &[f32], k: usize) -> Vec<Vec<usize>> {
    let rank_row = |products: &[f32]| top_k_of(norms.iter().zip(products).map(|(&t2, &c)| t2 - 2.0 * c), k);
    let n = norms.len().max(1);
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        cross.par_chunks_exact(n).map(rank_row).collect()
    }
    #[cfg(target_arch = "wasm32")]
    {
        cross.chunks_exact(n).map(rank_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::{int_tensor, max_abs_diff, small_model};
    use burn::tensor::Device;

    #[test]
    fn embeddings_are_the_last_real_token_of_each_text_alone() {
        let model = small_model(37);
        let texts = vec![vec![5, 6, 7], vec![8], vec![9, 10, 11, 12, 13], vec![14, 15]];
        let embedded = embed_last_token(&model, &texts, 3, &mut crate::progress::silent).unwrap();
        assert_eq!(embedded.dims(), [4, 64]);
        let device = model.device();
        for (i, text) in texts.iter().enumerate() {
            let n = text.len();
            let ids = text.iter().map(|&t| t as i64).collect();
            let hidden = model.hidden_states(int_tensor(ids, [1, n], &device), Tensor::ones([1, n], &device), None);
            let alone = hidden.narrow(1, n - 1, 1).reshape([1, 64]);
            assert!(max_abs_diff(embedded.clone().narrow(0, i, 1), alone) < 1e-4, "text {i}");
        }
        assert!(embed_last_token(&model, &[vec![1u32]], 0, &mut crate::progress::silent).is_err());
        assert!(embed_last_token::<Vec<u32>>(&model, &[], 4, &mut crate::progress::silent).is_err());
    }

    #[test]
    fn top_k_is_stable_on_ties() {
        assert_eq!(top_k(&[3.0, 1.0, 2.0, 1.0, 0.5], 3), vec![4, 1, 3]);
        assert_eq!(top_k(&[1.0, f32::NAN, 0.0], 5), vec![2, 0, 1]);
        assert!(top_k(&[], 3).is_empty());
    }

    #[test]
    fn top_k_agrees_with_a_full_sort() {
        // Many ties (multiples of 0.25), every kind of k.
        let values: Vec<f32> = (0..500u32).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 40) as f32 * 0.25).collect();
        let mut sorted: Vec<usize> = (0..values.len()).collect();
        sorted.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        for k in [1, 7, 50, 499, 500, 600] {
            assert_eq!(top_k(&values, k), sorted[..k.min(500)], "k = {k}");
        }
    }

    #[test]
    fn ranking_queries_together_equals_ranking_each_alone() {
        let device = Device::flex();
        let queries = Tensor::<2>::random([300, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let table = Tensor::<2>::random([90, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let all = rank_by_l2(queries.clone(), table.clone(), 10);
        assert_eq!(all.len(), 300);
        for i in [0, 1, 149, 150, 151, 299] {
            assert_eq!(all[i], rank_by_l2(queries.clone().narrow(0, i, 1), table.clone(), 10)[0], "query {i}");
        }
    }

    /// The async ranking (the page's) gives the same rows as the sync one, with true distances.
    #[test]
    fn async_ranking_equals_sync_ranking() {
        let device = Device::flex();
        let queries = Tensor::<2>::random([5, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let table = Tensor::<2>::random([70, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let sync = rank_by_l2(queries.clone(), table.clone(), 10);
        let ranked = crate::block_on(rank_by_l2_async(queries.clone(), table.clone(), 10)).unwrap();
        let d = squared_l2(queries, table).into_data().convert::<f32>();
        let d = d.as_slice::<f32>().unwrap();
        for (i, (rows, expected)) in ranked.iter().zip(&sync).enumerate() {
            assert_eq!(&rows.iter().map(|r| r.0).collect::<Vec<_>>(), expected, "query {i}");
            for &(j, dist) in rows {
                assert!((dist * dist - d[i * 70 + j]).abs() < 1e-3, "query {i}, row {j}");
            }
        }
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
