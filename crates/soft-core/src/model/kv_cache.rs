//! The key/value cache of incremental decoding: per layer, the keys and values of every position
//! so far, preallocated so that a step writes in place; and per row, the padding bias of every
//! key and the position the next token gets.

use burn::tensor::{Int, Tensor};

/// Keys, values, padding mask and next positions of the sequences decoded so far, for
/// incremental decoding. Rows are sequences; [`KvCache::reorder`] picks, repeats or drops rows
/// (beam search, finished sequences).
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    /// `[B, len]`: 0 for real keys, `MASKED` (see `llama.rs`) for padding.
    key_bias: Option<Tensor<2>>,
    /// `[B, 1]`: the position id the next real token of each row gets.
    next_position: Option<Tensor<2, Int>>,
    len: usize,
}

/// One layer's keys and values, `[B, Hkv, capacity, D]`, of which the first `len` positions are
/// filled. Preallocated so that appending a step writes in place instead of copying the past.
#[derive(Debug)]
pub(crate) struct LayerCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, capacity: usize) -> Self {
        let layer = || LayerCache { keys: None, values: None, len: 0, capacity: capacity.max(1) };
        Self { layers: (0..n_layers).map(|_| layer()).collect(), key_bias: None, next_position: None, len: 0 }
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of cached sequences (rows); 0 before the first forward.
    pub fn batch_size(&self) -> usize {
        self.next_position.as_ref().map_or(0, |p| p.dims()[0])
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records one forward step of `mask` `[B, T]` whose keys' padding bias is `new_keys`
    /// `[B, T]`. Returns how many positions were cached before it, the position id of each row's
    /// first new real token `[B, 1]`, and the bias of every key so far `[B, past + T]`.
    pub(crate) fn advance(&mut self, mask: Tensor<2, Int>, new_keys: Tensor<2>) -> (usize, Tensor<2, Int>, Tensor<2>) {
        let [b, t] = mask.dims();
        let past = self.len;
        let start = self.next_position.take().unwrap_or_else(|| Tensor::zeros([b, 1], &mask.device()));
        self.next_position = Some(start.clone() + mask.sum_dim(1));
        let key_bias = match self.key_bias.take() {
            Some(old) => Tensor::cat(vec![old, new_keys], 1),
            None => new_keys,
        };
        self.key_bias = Some(key_bias.clone());
        self.len += t;
        (past, start, key_bias)
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// Keeps row `rows[i]` as new row `i`; rows may repeat (beam expansion) or be left out.
    pub fn reorder(&mut self, rows: Tensor<1, Int>) {
        if let Some(bias) = self.key_bias.as_mut() {
            bias.inplace(|bias| bias.select(0, rows.clone()));
        }
        if let Some(p) = self.next_position.as_mut() {
            p.inplace(|p| p.select(0, rows.clone()));
        }
        for layer in &mut self.layers {
            for t in [&mut layer.keys, &mut layer.values].into_iter().flatten() {
                t.inplace(|t| t.select(0, rows.clone()));
            }
        }
    }
}

impl LayerCache {
    /// Appends `k`, `v` `[B, Hkv, T, D]` and returns all keys and values so far.
    pub(crate) fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, hkv, t, d] = k.dims();
        let end = self.len + t;
        if end > self.capacity {
            let capacity = end.max(2 * self.capacity);
            for buf in [&mut self.keys, &mut self.values].into_iter().flatten() {
                let device = buf.device();
                buf.inplace(|buf| {
                    Tensor::cat(vec![buf, Tensor::zeros([b, hkv, capacity - self.capacity, d], &device)], 2)
                });
            }
            self.capacity = capacity;
        }
        let (start, capacity) = (self.len, self.capacity);
        let write = |buf: &mut Option<Tensor<4>>, new: Tensor<4>| {
            let mut full = buf.take().unwrap_or_else(|| Tensor::zeros([b, hkv, capacity, d], &new.device()));
            full.inplace(|full| full.slice_assign([0..b, 0..hkv, start..end, 0..d], new));
            let seen = full.clone().narrow(2, 0, end);
            *buf = Some(full);
            seen
        };
        let keys = write(&mut self.keys, k);
        let values = write(&mut self.values, v);
        self.len = end;
        (keys, values)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::llama::tests::{int_tensor, max_abs_diff, ones_mask, small_model};
    use burn::tensor::{Device, Tensor};

    #[test]
    fn kv_cache_steps_equal_the_full_sequence() {
        let model = small_model(7);
        let device = Device::flex();
        let seq: Vec<i64> = vec![5, 17, 3, 88, 42, 9, 61, 30, 2];
        let full = model.forward(int_tensor(seq.clone(), [1, 9], &device), ones_mask(1, 9, &device), None);

        // Prefill four tokens into a cache too small for the sequence (it must grow), then one
        // token at a time.
        let mut cache = model.new_cache(5);
        let mut parts = vec![model.forward(
            int_tensor(seq[..4].to_vec(), [1, 4], &device),
            ones_mask(1, 4, &device),
            Some(&mut cache),
        )];
        for &token in &seq[4..] {
            parts.push(model.forward(
                int_tensor(vec![token], [1, 1], &device),
                ones_mask(1, 1, &device),
                Some(&mut cache),
            ));
        }
        assert_eq!(cache.len(), 9);
        let incremental = Tensor::cat(parts, 1);
        assert!(max_abs_diff(full, incremental) < 1e-4);
    }

    #[test]
    fn cache_reorder_follows_rows() {
        let model = small_model(17);
        let device = Device::flex();
        let tokens = int_tensor(vec![3, 4, 5, 6, 7, 8], [2, 3], &device);
        let mut cache = model.new_cache(4);
        model.forward(tokens, ones_mask(2, 3, &device), Some(&mut cache));
        // Three rows: second sequence, then the first twice.
        cache.reorder(int_tensor(vec![1, 0, 0], [3], &device));
        let next =
            model.forward(int_tensor(vec![9, 9, 10], [3, 1], &device), ones_mask(3, 1, &device), Some(&mut cache));
        let alone = |seq: Vec<i64>| {
            model.forward(int_tensor(seq, [1, 4], &device), ones_mask(1, 4, &device), None).narrow(1, 3, 1)
        };
        assert!(max_abs_diff(next.clone().narrow(0, 0, 1), alone(vec![6, 7, 8, 9])) < 1e-4);
        assert!(max_abs_diff(next.clone().narrow(0, 1, 1), alone(vec![3, 4, 5, 9])) < 1e-4);
        assert!(max_abs_diff(next.narrow(0, 2, 1), alone(vec![3, 4, 5, 10])) < 1e-4);
    }
}
