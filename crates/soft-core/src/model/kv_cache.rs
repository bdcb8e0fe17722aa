//! The key/value cache of incremental decoding: per layer, the keys and values of every position
//! so far, preallocated so that a step writes in place; and per row, the padding bias of every
//! key and the position the next token gets.
//!
//! A cache can freeze what it holds as a *shared prefix* ([`KvCache::share_prefix`]): beam search
//! does it after the prompts, whose keys and values are then the same for every beam of a prompt.
//! Reordering rows then copies only the keys and values written since (a few dozen positions
//! instead of the whole prompt), and attention reads each prompt's keys once for all its beams.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::kernels::host::{self, Array4};

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
    /// With a shared prefix, how many neighbouring rows read each prefix row: row `r` reads
    /// prefix row `r / group`.
    prefix_group: Option<usize>,
}

/// One layer's keys and values, `[B, Hkv, capacity, D]`, of which the first `len` positions are
/// filled. Preallocated so that appending a step writes in place instead of copying the past.
#[derive(Debug)]
pub(crate) struct LayerCache {
    /// The shared prefix's keys and values, `[P, Hkv, Lp, D]`: each of the `B / P` rows of a
    /// run reads the same prefix row.
    prefix: Option<(Tensor<4>, Tensor<4>)>,
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
    len: usize,
    capacity: usize,
}

/// What attention reads for one layer: the keys and values `[B, Hkv, S, D]` written since the
/// shared prefix (all of them when there is none), and the prefix `[P, Hkv, Lp, D]` that each
/// run of `B / P` neighbouring rows shares.
pub(crate) struct CachedKv {
    pub prefix: Option<(Tensor<4>, Tensor<4>)>,
    pub keys: Tensor<4>,
    pub values: Tensor<4>,
}

impl KvCache {
    pub fn new(n_layers: usize, capacity: usize) -> Self {
        let layer = || LayerCache { prefix: None, keys: None, values: None, len: 0, capacity: capacity.max(1) };
        Self {
            layers: (0..n_layers).map(|_| layer()).collect(),
            key_bias: None,
            next_position: None,
            len: 0,
            prefix_group: None,
        }
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

    /// True when every buffer the cache holds is an f32 tensor of the CPU backend whose
    /// positions the fused decoding step can read and write where they lie.
    pub(crate) fn is_on_host(&self) -> bool {
        self.layers.iter().all(|l| {
            let prefix = l.prefix.iter().flat_map(|(k, v)| [k, v]);
            prefix.chain(l.keys.iter()).chain(l.values.iter()).all(|t| Array4::new(t).is_some())
        })
    }

    /// With a shared prefix, how many neighbouring rows read each prefix row.
    pub(crate) fn prefix_group(&self) -> Option<usize> {
        self.prefix_group
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// Freezes every position cached so far as a prefix that rows share: later reorders copy only
    /// what is written after it, for which `capacity` positions are set aside. Does nothing on an
    /// empty cache or one that already has a prefix. A cache whose capacity the prefix fills
    /// exactly keeps it in one contiguous block that attention reads without a copy.
    pub fn share_prefix(&mut self, capacity: usize) {
        if self.is_empty() || self.prefix_group.is_some() || self.layers.iter().any(|l| l.len != self.len) {
            return;
        }
        for layer in &mut self.layers {
            let (Some(keys), Some(values)) = (layer.keys.take(), layer.values.take()) else { continue };
            let prefix = |t: Tensor<4>| if layer.len == layer.capacity { t } else { t.narrow(2, 0, layer.len) };
            layer.prefix = Some((prefix(keys), prefix(values)));
            layer.capacity = capacity.max(1);
            layer.len = 0;
        }
        self.prefix_group = Some(1);
    }

    /// Keeps row `rows[i]` as new row `i`; rows may repeat (beam expansion) or be left out.
    pub fn reorder(&mut self, rows: &[usize]) {
        let Some(device) = self.next_position.as_ref().map(|p| p.device()) else { return };
        let index = |rows: &[usize]| {
            let data: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(data, [rows.len()]), &device)
        };
        let selected = index(rows);
        if let Some(bias) = self.key_bias.as_mut() {
            bias.inplace(|bias| bias.select(0, selected.clone()));
        }
        if let Some(p) = self.next_position.as_mut() {
            p.inplace(|p| p.select(0, selected.clone()));
        }
        for layer in &mut self.layers {
            for t in [&mut layer.keys, &mut layer.values].into_iter().flatten() {
                t.inplace(|t| t.select(0, selected.clone()));
            }
        }
        let Some(old_group) = self.prefix_group else { return };
        // The prefix rows the new rows read, in runs of `group` equal ones; the prefix keeps one
        // row per run (a copy only when prompts finish or leave their order).
        let owners: Vec<usize> = rows.iter().map(|&r| r / old_group).collect();
        let group = shared_run_length(&owners);
        let kept: Vec<usize> = owners.iter().step_by(group).copied().collect();
        let prefix_rows = self.layers.iter().find_map(|l| l.prefix.as_ref()).map_or(0, |(k, _)| k.dims()[0]);
        if kept.len() != prefix_rows || kept.iter().enumerate().any(|(i, &p)| i != p) {
            let kept = index(&kept);
            for (keys, values) in self.layers.iter_mut().filter_map(|l| l.prefix.as_mut()) {
                keys.inplace(|k| k.select(0, kept.clone()));
                values.inplace(|v| v.select(0, kept.clone()));
            }
        }
        self.prefix_group = Some(group);
    }
}

/// The largest `g` such that `owners` is made of runs of `g` equal values (1 at least).
fn shared_run_length(owners: &[usize]) -> usize {
    let mut g = 0;
    let mut start = 0;
    for i in 1..=owners.len() {
        if i == owners.len() || owners[i] != owners[start] {
            g = gcd(g, i - start);
            start = i;
        }
    }
    g.max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl LayerCache {
    /// Appends `k`, `v` `[B, Hkv, T, D]` and returns what attention reads: all keys and values
    /// since the shared prefix, and the prefix.
    pub(crate) fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> CachedKv {
        let [b, hkv, t, d] = k.dims();
        let end = self.len + t;
        self.reserve(end, [b, hkv, d], &k.device());
        let start = self.len;
        let write = |buf: &mut Option<Tensor<4>>, new: Tensor<4>| {
            let full = buf.as_mut().expect("reserved");
            full.inplace(|full| full.slice_assign([0..b, 0..hkv, start..end, 0..d], new));
            full.clone().narrow(2, 0, end)
        };
        let keys = write(&mut self.keys, k);
        let values = write(&mut self.values, v);
        self.len = end;
        let prefix = self.prefix.clone();
        CachedKv { prefix, keys, values }
    }

    /// Makes room for `end` positions of `[B, Hkv, ·, D]` keys and values (`dims` = `[B, Hkv,
    /// D]`), allocating the buffers on the first append and doubling them when full.
    fn reserve(&mut self, end: usize, [b, hkv, d]: [usize; 3], device: &Device) {
        if end > self.capacity {
            let capacity = end.max(2 * self.capacity);
            for buf in [&mut self.keys, &mut self.values].into_iter().flatten() {
                buf.inplace(|buf| {
                    Tensor::cat(vec![buf, Tensor::zeros([b, hkv, capacity - self.capacity, d], device)], 2)
                });
            }
            self.capacity = capacity;
        }
        for buf in [&mut self.keys, &mut self.values] {
            buf.get_or_insert_with(|| Tensor::zeros([b, hkv, self.capacity, d], device));
        }
    }

    /// The fused decoding step's append (CPU backend): one position per row, `k`, `v` `[B, Hkv,
    /// D]` (`dims` = `[B, Hkv, D]`), written into the buffers in place. Returns what attention
    /// reads, as views of the buffers: `None` (with nothing written) when they are not on the
    /// CPU backend in f32.
    pub(crate) fn append_on_host(&mut self, k: &[f32], v: &[f32], dims: [usize; 3], device: &Device) -> Option<HostKv> {
        let [b, hkv, d] = dims;
        let prefix = match &self.prefix {
            Some((kp, vp)) => Some((Array4::new(kp)?, Array4::new(vp)?)),
            None => None,
        };
        let end = self.len + 1;
        self.reserve(end, dims, device);
        let (position, capacity) = (self.len, self.capacity);
        for (buf, new) in [(&mut self.keys, k), (&mut self.values, v)] {
            host::write(buf.as_mut().expect("reserved"), |all| {
                for (i, x) in new.chunks_exact(d).enumerate() {
                    // Row r, head j of [B, Hkv, capacity, D] at `position`.
                    let (r, j) = (i / hkv, i % hkv);
                    let at = ((r * hkv + j) * capacity + position) * d;
                    all[at..at + d].copy_from_slice(x);
                }
            })?;
        }
        self.len = end;
        debug_assert_eq!(k.len(), b * hkv * d);
        let view = |t: &Option<Tensor<4>>| Array4::new(t.as_ref().expect("reserved"));
        Some(HostKv { prefix, keys: view(&self.keys)?, values: view(&self.values)?, len: end })
    }
}

/// [`CachedKv`] as views of the CPU backend's buffers (the fused decoding step): keys and
/// values `[B, Hkv, ·, D]` of which the first `len` positions are written, and the shared
/// prefix `[P, Hkv, Lp, D]`.
pub(crate) struct HostKv {
    pub prefix: Option<(Array4, Array4)>,
    pub keys: Array4,
    pub values: Array4,
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::shared_run_length;
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
        cache.reorder(&[1, 0, 0]);
        let next =
            model.forward(int_tensor(vec![9, 9, 10], [3, 1], &device), ones_mask(3, 1, &device), Some(&mut cache));
        let alone = |seq: Vec<i64>| {
            model.forward(int_tensor(seq, [1, 4], &device), ones_mask(1, 4, &device), None).narrow(1, 3, 1)
        };
        assert!(max_abs_diff(next.clone().narrow(0, 0, 1), alone(vec![6, 7, 8, 9])) < 1e-4);
        assert!(max_abs_diff(next.clone().narrow(0, 1, 1), alone(vec![3, 4, 5, 9])) < 1e-4);
        assert!(max_abs_diff(next.narrow(0, 2, 1), alone(vec![3, 4, 5, 10])) < 1e-4);
    }

    #[test]
    fn a_shared_prefix_changes_no_output() {
        // Left-padded prompts, then the reorders beam search makes: expansion to beams, beams
        // changing parent, a prompt finishing, and an order no run of beams explains.
        let model = small_model(23);
        let device = Device::flex();
        let prompts = int_tensor(vec![0, 0, 5, 6, 7, 11, 12, 13, 14, 15, 0, 21, 22, 23, 24], [3, 5], &device);
        let mask = int_tensor(vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], [3, 5], &device);
        let steps: [&[usize]; 5] = [&[0, 0, 1, 1, 2, 2], &[1, 0, 4, 5], &[2, 3, 2, 1], &[3, 2, 1], &[2, 2, 0]];
        let mut outputs = Vec::new();
        for shared in [false, true] {
            let mut cache = model.new_cache(6);
            let mut out = vec![model.forward(prompts.clone(), mask.clone(), Some(&mut cache))];
            if shared {
                cache.share_prefix(2);
            }
            for (i, rows) in steps.iter().enumerate() {
                cache.reorder(rows);
                let tokens: Vec<i64> = (0..rows.len() as i64).map(|r| 30 + r + i as i64).collect();
                let n = rows.len();
                out.push(model.forward(
                    int_tensor(tokens, [n, 1], &device),
                    ones_mask(n, 1, &device),
                    Some(&mut cache),
                ));
            }
            outputs.push(out);
        }
        for (step, (plain, shared)) in outputs[0].iter().zip(&outputs[1]).enumerate() {
            let diff = max_abs_diff(plain.clone(), shared.clone());
            assert!(diff < 1e-4, "step {step}: logits differ by {diff}");
        }
    }

    #[test]
    fn run_lengths_of_prefix_owners() {
        assert_eq!(shared_run_length(&[0, 0, 0, 0, 1, 1, 1, 1]), 4);
        assert_eq!(shared_run_length(&[0, 0, 1, 1, 1, 1]), 2);
        assert_eq!(shared_run_length(&[1, 0, 0]), 1);
        assert_eq!(shared_run_length(&[2, 2, 2]), 3);
        assert_eq!(shared_run_length(&[]), 1);
    }
}
