//! The plain CPU reference of the kernel, and the input checks both share.

use crate::error::{GpuError, Result};
use crate::{Neighbor, K_MAX};
use std::cmp::Ordering;

/// Squared L2 distance, summed in f32 in column order.
pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| {
        let d = x - y;
        acc + d * d
    })
}

/// The order of the ranking: smaller distance first, then smaller item index.
pub fn neighbor_order(a: &Neighbor, b: &Neighbor) -> Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

/// For each of the `n_queries` rows of `queries` (`[n_queries, dim]`, row-major), the `k` rows of
/// `table` (`[n_items, dim]`) nearest in squared L2 distance, as `(item index, squared distance)`,
/// ascending by distance with ties going to the smaller item index: exactly the contract of
/// [`crate::GpuGrounder::top_k`], checked the same way.
pub fn cpu_top_k(
    table: &[f32],
    n_items: usize,
    dim: usize,
    queries: &[f32],
    n_queries: usize,
    k: usize,
) -> Result<Vec<Vec<Neighbor>>> {
    check_table(table, n_items, dim)?;
    check_queries(queries, n_queries, dim, n_items, k)?;
    Ok(queries
        .chunks_exact(dim)
        .map(|q| {
            let mut all: Vec<Neighbor> =
                table.chunks_exact(dim).enumerate().map(|(i, row)| (i as u32, squared_l2(q, row))).collect();
            if k < all.len() {
                all.select_nth_unstable_by(k - 1, neighbor_order);
                all.truncate(k);
            }
            all.sort_unstable_by(neighbor_order);
            all
        })
        .collect())
}

fn check_shape(what: &'static str, got: usize, rows: usize, dim: usize) -> Result<()> {
    if rows.checked_mul(dim) == Some(got) {
        Ok(())
    } else {
        Err(GpuError::ShapeMismatch { what, rows, dim, got })
    }
}

fn check_finite(what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(GpuError::NonFinite { what, index, value: values[index] }),
        None => Ok(()),
    }
}

/// The catalog table: non-empty, `n_items * dim` finite values, row indices below u32::MAX.
pub(crate) fn check_table(table: &[f32], n_items: usize, dim: usize) -> Result<()> {
    if n_items == 0 || dim == 0 {
        return Err(GpuError::EmptyTable { n_items, dim });
    }
    check_shape("catalog table", table.len(), n_items, dim)?;
    // Flat indices are u32 in the kernel, and u32::MAX marks "no candidate".
    if table.len() >= u32::MAX as usize {
        return Err(GpuError::TooLarge {
            what: "catalog table",
            bytes: table.len() as u64 * 4,
            limit: u64::from(u32::MAX) * 4,
        });
    }
    check_finite("catalog table", table)
}

/// A batch of queries against a table of `n_items` rows: shape, `k`, finiteness.
pub(crate) fn check_queries(queries: &[f32], n_queries: usize, dim: usize, n_items: usize, k: usize) -> Result<()> {
    check_shape("queries", queries.len(), n_queries, dim)?;
    let max = K_MAX.min(n_items);
    if k == 0 || k > max {
        return Err(GpuError::KOutOfRange { k, max });
    }
    check_finite("queries", queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_distance_then_index() {
        // Rows 0 and 2 are equally far from the query: the smaller index comes first.
        let table = [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 1.5];
        let got = cpu_top_k(&table, 4, 2, &[1.0, 0.0], 1, 4).unwrap();
        assert_eq!(got, vec![vec![(1, 0.0), (0, 1.0), (2, 1.0), (3, 2.25)]]);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let table = [0.0; 6];
        assert!(matches!(cpu_top_k(&table, 0, 2, &[], 0, 1), Err(GpuError::EmptyTable { .. })));
        assert!(matches!(cpu_top_k(&table, 4, 2, &[0.0; 2], 1, 1), Err(GpuError::ShapeMismatch { .. })));
        assert!(matches!(cpu_top_k(&table, 3, 2, &[0.0; 3], 1, 1), Err(GpuError::ShapeMismatch { .. })));
        assert!(matches!(cpu_top_k(&table, 3, 2, &[0.0; 2], 1, 4), Err(GpuError::KOutOfRange { k: 4, max: 3 })));
        assert!(matches!(cpu_top_k(&table, 3, 2, &[0.0; 2], 1, 0), Err(GpuError::KOutOfRange { .. })));
        assert!(matches!(
            cpu_top_k(&table, 3, 2, &[0.0, f32::NAN], 1, 1),
            Err(GpuError::NonFinite { what: "queries", index: 1, .. })
        ));
        assert!(matches!(cpu_top_k(&table, usize::MAX, 2, &[], 0, 1), Err(GpuError::ShapeMismatch { .. })));
        assert_eq!(cpu_top_k(&table, 3, 2, &[], 0, 2).unwrap(), Vec::<Vec<Neighbor>>::new());
    }
}
