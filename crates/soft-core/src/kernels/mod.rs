//! Fused CPU kernels: softmax and log-softmax over the last dimension, SiLU, and the NLL head,
//! each one pass over its rows with a vectorised `exp` ([`rows`]), with hand-written backward
//! passes, plugged into burn through its backend extension. On the CPU backend (burn-flex) they
//! replace burn's spelled-out ops: burn-flex's `exp` is scalar libm (12 % of a default run's
//! samples) and on an autodiff device burn composes softmax from five ops, each a pass over the
//! scores and a node with its own backward. On any other device (wgpu) the functions here are
//! burn's own ops.

pub mod bf16_dot;
pub mod blocks;
mod few_rows;
pub(crate) mod host;
pub mod int8_dot;
mod rows;
pub(crate) mod step;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, DispatchDevice};
use burn::tensor::{activation, Bytes, DType, FloatDType, Int, Tensor};

/// Operations with a fused CPU implementation. Only tensors on the CPU backend (with or without
/// autodiff) are routed here: the public functions below check.
#[backend_extension(Autodiff, Flex)]
pub trait FusedOps: Backend {
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Log-softmax over the last dimension.
    fn log_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x · sigmoid(x)`.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Negative log-likelihood of each row's target: `logits` `[N, V]`, `targets` `[N]` -> `[N]`.
    fn nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
    /// `x` `[m, in]` times `weight` `[in, out]` (f32, f16 or bf16) for a few rows `m` (a decoding
    /// step's).
    fn few_rows_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x` `[m, in]` (f32) times a frozen `weight` `[in, out]` stored in half precision, widened
    /// to f32 for the product; on autodiff the backward pass widens it again rather than keeping
    /// the f32 copy ([`half_weight_product`]).
    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x` `[m, in]` (f32) times a frozen bf16 `weight` `[in, out]` in bf16 dot products
    /// ([`bf16_dot`]); on autodiff the backward pass multiplies the same way.
    fn bf16_dot_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// True when `x` runs on the CPU backend in f32: the tensors the fused kernels take.
fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_cpu(&x.device())
}

/// True for the CPU backend's device, with or without autodiff.
pub fn is_cpu(device: &burn::tensor::Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// Softmax over the last dimension of `x`.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(Dispatch::softmax_last(x.into_dispatch()))
}

/// Log-softmax over the last dimension of `x`.
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return activation::log_softmax(x, D - 1);
    }
    Tensor::from_dispatch(Dispatch::log_softmax_last(x.into_dispatch()))
}

/// `x · sigmoid(x)`, elementwise.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return activation::silu(x);
    }
    Tensor::from_dispatch(Dispatch::silu(x.into_dispatch()))
}

/// Negative log-likelihood of each row's target under the softmax of its logits: `logits`
/// `[N, V]`, `targets` `[N]` (indices into V) -> `[N]`. Panics on a target outside `0..V` (the
/// callers index a vocabulary or a catalog they built).
pub fn nll(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let n = targets.dims()[0];
    if !fused(&logits) {
        return activation::log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n]).neg();
    }
    Tensor::from_dispatch(Dispatch::nll(logits.into_dispatch(), targets.into_dispatch()))
}

/// Multiply-adds below which burn-flex runs a matrix product on one thread (its
/// `PARALLEL_THRESHOLD`, 192³).
#[cfg(not(target_arch = "wasm32"))]
const FLEX_THREADED_PRODUCT: usize = 192 * 192 * 192;

/// Rows up to which [`linear`] takes the few-row product ([`few_rows`]) for a row-major weight:
/// past 8, burn-flex's packed `gemm` split by columns is faster (`benches/few_rows.rs`,
/// BENCHMARKS.md).
pub const FEW_ROWS: usize = 8;

/// Rows up to which [`linear_transposed`] takes the few-row product: reading each output's
/// weights contiguously, it beats `gemm` up to a decoding step of 8 prompts x 4 beams (the same
/// bench).
pub const FEW_ROWS_OUTPUT_MAJOR: usize = 32;

/// burn's `linear` (`x` `[..., in]` times `weight` `[in, out]`, plus `bias`), except on the CPU
/// backend off autodiff, where the products of a decoding step (a few rows against a large
/// weight, bound by reading the weight from memory) go through [`few_rows`], or, when burn-flex
/// would leave them on one thread, are split by output columns across the cores.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    product(x, weight, bias, FEW_ROWS)
}

/// `x` `[..., in]` times `weight`ᵀ for `weight` `[out, in]` (an LM head tied to the embedding
/// table): [`linear`] for a weight stored output by output.
pub fn linear_transposed<const D: usize>(x: Tensor<D>, weight: Tensor<2>) -> Tensor<D> {
    product(x, weight.transpose(), None, FEW_ROWS_OUTPUT_MAJOR)
}

/// `x` `[..., in]` times a frozen weight kept in quantized blocks `[out, in]` ([`blocks`]),
/// plus `bias`. On the CPU backend off autodiff, up to `few_rows` rows (a decoding step), the
/// blocks are read as they lie; more rows (a prompt) multiply an f32 copy of the blocks made
/// for this product only, through [`product`]. On the CPU backend with autodiff (training) the
/// same, and the backward pass dequantizes again: no f32 copy outlives a product, as over
/// half-precision weights. On another device burn's `linear` over an f32 copy (which autodiff
/// would keep until the backward pass; the model refuses blocks off the CPU backend).
pub fn block_linear<const D: usize>(
    x: Tensor<D>,
    weight: &blocks::BlockMatrix,
    bias: Option<Tensor<1>>,
    few_rows: usize,
) -> Tensor<D> {
    if !fused(&x) {
        return burn::tensor::module::linear(x.clone(), weight.to_tensor(&x.device()).transpose(), bias);
    }
    by_rows(x, weight.dims().0, bias, |x| match x.device().is_autodiff() {
        // Training: the forward pass here, and a backward one that dequantizes again.
        true => block_matmul_autodiff(x, weight, few_rows),
        false => host::tensor(block_matmul_flex(host::flex(&x).expect("a CPU-backend tensor"), weight, few_rows)),
    })
}

/// `x` `[m, in]` (on the CPU backend) times the blocks `[out, in]` transposed: up to
/// `few_rows` rows from the blocks as they lie, more through an f32 copy of the weight made for
/// this product only.
fn block_matmul_flex(x: FloatTensor<Flex>, weight: &blocks::BlockMatrix, few_rows: usize) -> FloatTensor<Flex> {
    let (d_out, d_in) = weight.dims();
    let (x, _) = contiguous(&x);
    let m = x.layout().num_elements() / d_in;
    if m <= few_rows {
        let out = weight.product(elements(&x), m);
        return FlexTensor::new(Bytes::from_elems(out), Layout::contiguous([m, d_out].into()), DType::F32);
    }
    Flex::float_matmul(x, Flex::float_transpose(dense_blocks(weight)))
}

/// The blocks dequantized, `[out, in]` row-major.
fn dense_blocks(weight: &blocks::BlockMatrix) -> FloatTensor<Flex> {
    let (d_out, d_in) = weight.dims();
    FlexTensor::new(Bytes::from_elems(weight.dequantize()), Layout::contiguous([d_out, d_in].into()), DType::F32)
}

/// [`block_linear`]'s product on an autodiff device over the CPU backend: the weight is frozen,
/// so only `x` is a parent, and the node keeps the blocks, not an f32 copy
/// ([`BlockWeightBackward`]).
fn block_matmul_autodiff(x: Tensor<2>, weight: &blocks::BlockMatrix, few_rows: usize) -> Tensor<2> {
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    use burn::backend::{BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};
    let dispatch = x.into_dispatch();
    let (DispatchTensorKind::Autodiff(kind), DispatchAutodiffContext::Enabled(strategy)) =
        (dispatch.kind, dispatch.autodiff)
    else {
        unreachable!("block_matmul_autodiff takes an autodiff tensor of the CPU backend")
    };
    let DispatchTensorKind::Flex(BackendTensor::Autodiff(x)) = *kind else {
        unreachable!("block_matmul_autodiff takes an autodiff tensor of the CPU backend")
    };
    fn tracked<C: CheckpointStrategy>(
        x: FloatTensor<Autodiff<Flex>>,
        weight: &blocks::BlockMatrix,
        few_rows: usize,
    ) -> FloatTensor<Autodiff<Flex>> {
        let forward = |x: FloatTensor<Autodiff<Flex>>| block_matmul_flex(x.into_primitive(), weight, few_rows);
        match BlockWeightBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(weight.clone(), forward(x)),
            OpsKind::UnTracked(prep) => prep.finish(forward(x)),
        }
    }
    let y = match strategy {
        burn::backend::GradientCheckpointingStrategy::Balanced => tracked::<BalancedCheckpointing>(x, weight, few_rows),
        burn::backend::GradientCheckpointingStrategy::Disabled => tracked::<NoCheckpointing>(x, weight, few_rows),
    };
    Tensor::from_dispatch(DispatchTensor {
        kind: DispatchTensorKind::Autodiff(Box::new(DispatchTensorKind::Flex(BackendTensor::Autodiff(y)))),
        autodiff: DispatchAutodiffContext::Enabled(strategy),
    })
}

/// Backward of [`block_matmul_autodiff`]: the input's gradient `grad · W` (`W` `[out, in]`),
/// the blocks dequantized again here.
#[derive(Debug)]
struct BlockWeightBackward;

impl Backward<Flex, 1> for BlockWeightBackward {
    /// The frozen weight's blocks.
    type State = blocks::BlockMatrix;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = &ops.parents[0] {
            grads.register::<Flex>(parent.id, Flex::float_matmul(grad, dense_blocks(&ops.state)));
        }
    }
}

/// A frozen `weight` stored in f16 or bf16 (`Llama::with_base_dtype`) in [`product`]: the
/// product computes in f32. On the CPU backend it widens the weight for the forward pass and
/// again for the backward one, so no f32 copy of it outlives the product (burn's ops would keep
/// the widened weight for the backward pass: the whole model in f32 during a training step);
/// elsewhere burn's ops on the widened weight.
fn half_weight_product<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if !fused(&x) {
        return burn::tensor::module::linear(x, weight.cast(FloatDType::F32), bias);
    }
    let d_out = weight.dims()[1];
    by_rows(x, d_out, bias, |x| {
        Tensor::from_dispatch(Dispatch::half_weight_matmul(x.into_dispatch(), weight.into_dispatch()))
    })
}

/// [`product`] over a frozen bf16 `weight` `[in, out]`, except in a training step on the CPU
/// backend (autodiff), where the product and its backward one run in bf16 dot products
/// ([`bf16_dot`]: `x` and the output's gradient rounded to bf16, sums in f32). Only a model
/// made for it calls this (`Llama::with_bf16_products`, which checks the CPU has them).
pub fn bf16_dot_linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    few_rows: usize,
) -> Tensor<D> {
    if !(fused(&x) && x.device().is_autodiff() && weight.dtype() == DType::BF16) {
        return product(x, weight, bias, few_rows);
    }
    let d_out = weight.dims()[1];
    by_rows(x, d_out, bias, |x| {
        Tensor::from_dispatch(Dispatch::bf16_dot_matmul(x.into_dispatch(), weight.into_dispatch()))
    })
}

/// `x` `[..., in]` as rows `[rows, in]` through `product` to `[rows, out]`, plus `bias`, back
/// to `[..., out]`.
fn by_rows<const D: usize>(
    x: Tensor<D>,
    d_out: usize,
    bias: Option<Tensor<1>>,
    product: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    dims[D - 1] = d_out;
    let out = product(x.reshape([rows, d_in]));
    let out = match bias {
        Some(bias) => out + bias.unsqueeze::<2>(),
        None => out,
    };
    out.reshape(dims)
}

/// [`linear`] with the few-row product up to `few_rows` rows (0: never), which reads a weight
/// stored in half precision as it lies; more rows over such a weight go through
/// [`half_weight_product`]. Public for `benches/few_rows.rs`, which
/// measures where it pays.
#[doc(hidden)]
pub fn product<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>, few_rows: usize) -> Tensor<D> {
    let [d_in, d_out] = weight.dims();
    let rows = x.dims()[..D - 1].iter().product::<usize>();
    // The CPU backend off autodiff: decoding and evaluation, where the fused products apply.
    let inference = fused(&x) && !x.device().is_autodiff();
    // Below 64k weights the product is no longer bound by reading them. In wasm every f32
    // product takes it: its SIMD128 tiles beat `gemm`, which multiplies scalar there (the gemm
    // crate has no SIMD128 kernel), at any size.
    let few = inference
        && ((rows <= few_rows && d_in * d_out >= 1 << 16)
            || (cfg!(target_arch = "wasm32") && weight.dtype() == DType::F32));
    if weight.dtype() != DType::F32 && !few {
        return half_weight_product(x, weight, bias);
    }
    if !inference {
        return burn::tensor::module::linear(x, weight, bias);
    }
    if few {
        return by_rows(x, d_out, bias, |x| {
            Tensor::from_dispatch(Dispatch::few_rows_matmul(x.into_dispatch(), weight.into_dispatch()))
        });
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Columns per part: at least 64 (a few cache lines per weight row).
        let parts = rayon::current_num_threads().min(d_out / 64);
        if parts > 1 && rows * d_in * d_out < FLEX_THREADED_PRODUCT && d_in * d_out >= 1 << 16 {
            use rayon::prelude::*;
            let width = d_out.div_ceil(parts);
            return by_rows(x, d_out, bias, |x| {
                let columns: Vec<Tensor<2>> = (0..d_out.div_ceil(width))
                    .into_par_iter()
                    .map(|p| {
                        let start = p * width;
                        x.clone().matmul(weight.clone().narrow(1, start, width.min(d_out - start)))
                    })
                    .collect();
                Tensor::cat(columns, 1)
            });
        }
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// `a` `[B, H, M, K]` times `b` `[B, H, K, N]` (attention's scores and weighted values): burn's
/// `matmul`, except in wasm on the CPU backend off autodiff, where each of the `B·H` products
/// goes through the few-row product over `b` where it lies (row-major, or the keys transposed):
/// burn-flex's `gemm` multiplies scalar in wasm (a page's prompt).
pub fn matmul(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if !cfg!(target_arch = "wasm32") || !fused(&a) || a.device().is_autodiff() || b.dtype() != DType::F32 {
        return a.matmul(b);
    }
    let ([bs, h, m, k], n) = (a.dims(), b.dims()[3]);
    let (Some(fa), Some(fb)) = (host::flex(&a), host::flex(&b)) else { return a.matmul(b) };
    let (fa, _) = contiguous(&fa);
    let x = elements(&fa);
    // Slice (i, j) of `b` as a [K, N] matrix where it lies, when it lies row- or column-major
    // (the keys transposed); any other layout is made contiguous first.
    let slice = |t: &FlexTensor, i: usize, j: usize| {
        let (l, st) = (t.layout(), t.layout().strides());
        let at = usize::try_from(l.start_offset() as isize + i as isize * st[0] + j as isize * st[1]).ok()?;
        host::Matrix::of(t.clone().with_layout(Layout::new([k, n].into(), vec![st[2], st[3]], at)))
    };
    let fb = match slice(&fb, 0, 0).is_some() && fb.layout().strides()[..2].iter().all(|&s| s >= 0) {
        true => fb,
        false => fb.to_contiguous(),
    };
    let mut out = Vec::with_capacity(bs * h * m * n);
    for i in 0..bs {
        for j in 0..h {
            let w = slice(&fb, i, j).expect("slices of one layout, row- or column-major");
            out.extend(w.product(&x[(i * h + j) * m * k..][..m * k], m));
        }
    }
    host::from_values(out, [bs, h, m, n])
}

// --- The CPU backend ------------------------------------------------------------------------

/// The f32 elements of `x` in row-major order (copied only when `x` is a strided view), and
/// its row length (last dimension).
fn contiguous(x: &FlexTensor) -> (FlexTensor, usize) {
    assert_eq!(x.dtype(), DType::F32, "fused kernels take f32 tensors");
    let x = x.to_contiguous();
    let len = x.layout().shape().last().copied().unwrap_or(1).max(1);
    (x, len)
}

fn elements(x: &FlexTensor) -> &[f32] {
    let (start, end) = x.layout().contiguous_offsets().expect("made contiguous");
    &x.storage::<f32>()[start..end]
}

/// A new f32 tensor of `shape`, filled by `fill` with the whole output slice.
fn output(shape: burn::tensor::Shape, fill: impl FnOnce(&mut [f32])) -> FlexTensor {
    let mut out = vec![0f32; shape.num_elements()];
    fill(&mut out);
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(shape), DType::F32)
}

/// Runs `f(first_row, chunk)` over chunks of `out` made of whole rows of `len` (`width` output
/// elements per row), on every core natively (burn-flex's rayon pool) and serially in wasm.
fn for_row_chunks(out: &mut [f32], len: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    // ~16k input elements per task: enough work to amortise the task, enough tasks to balance.
    let rows_per_chunk = (16_384 / len).max(1);
    let chunk = rows_per_chunk * width;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| f(i * rows_per_chunk, o));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(chunk).enumerate().for_each(|(i, o)| f(i * rows_per_chunk, o));
}

/// A row-wise kernel `kernel(input rows, output rows, len)` over one input.
fn rowwise(x: FloatTensor<Flex>, kernel: fn(&[f32], &mut [f32], usize)) -> FloatTensor<Flex> {
    let (x, len) = contiguous(&x);
    let xs = elements(&x);
    output(x.layout().shape().clone(), |out| {
        for_row_chunks(out, len, len, |row, o| kernel(&xs[row * len..row * len + o.len()], o, len))
    })
}

/// [`rowwise`] over two inputs of the same shape (a saved tensor and its output's gradient).
fn rowwise2(
    a: FloatTensor<Flex>,
    b: FloatTensor<Flex>,
    kernel: fn(&[f32], &[f32], &mut [f32], usize),
) -> FloatTensor<Flex> {
    let ((a, len), (b, _)) = (contiguous(&a), contiguous(&b));
    assert_eq!(a.layout().shape(), b.layout().shape(), "fused kernel inputs of different shapes");
    let (xa, xb) = (elements(&a), elements(&b));
    output(a.layout().shape().clone(), |out| {
        for_row_chunks(out, len, len, |row, o| {
            let r = row * len..row * len + o.len();
            kernel(&xa[r.clone()], &xb[r], o, len)
        })
    })
}

/// Target indices as `usize`, checked against the row length.
fn target_indices(targets: IntTensor<Flex>, len: usize) -> Vec<usize> {
    let data = targets.into_data().convert::<i64>();
    let targets = data.as_slice::<i64>().expect("converted to i64");
    targets
        .iter()
        .map(|&t| {
            assert!((0..len as i64).contains(&t), "nll: target {t} outside 0..{len}");
            t as usize
        })
        .collect()
}

impl FusedOps for Flex {
    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Flex::float_matmul(x, widened(weight))
    }

    fn bf16_dot_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        bf16_dot_product(&x, &weight)
    }

    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        rowwise(x, rows::dispatch::softmax)
    }

    fn log_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        rowwise(x, rows::dispatch::log_softmax)
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // Elementwise: any row length will do for the chunking.
        rowwise(x, |x, out, _| rows::dispatch::silu(x, out))
    }

    fn nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let (x, len) = contiguous(&logits);
        let targets = target_indices(targets, len);
        let xs = elements(&x);
        output([targets.len()].into(), |out| {
            for_row_chunks(out, len, 1, |row, o| {
                let mut scratch = vec![0f32; len];
                rows::dispatch::nll(
                    &xs[row * len..(row + o.len()) * len],
                    &targets[row..row + o.len()],
                    o,
                    &mut scratch,
                    len,
                )
            })
        })
    }

    fn few_rows_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, d_in) = contiguous(&x);
        let m = x.layout().num_elements() / d_in;
        let weight = host::Matrix::of(weight.clone()).unwrap_or_else(|| {
            host::Matrix::of(weight.to_contiguous()).expect("few_rows_matmul: an f32, f16 or bf16 weight [in, out]")
        });
        let d_out = weight.d_out;
        assert_eq!(weight.d_in, d_in, "few_rows_matmul: x [{m}, {d_in}] against weight [{}, {d_out}]", weight.d_in);
        let out = weight.product(elements(&x), m);
        FlexTensor::new(Bytes::from_elems(out), Layout::contiguous([m, d_out].into()), DType::F32)
    }
}

/// A half-precision `weight` widened to f32 in the same layout, by [`few_rows::widen`] (burn's
/// cast converts one value at a time on one core: most of a prompt's forward pass over an f16
/// model). A layout other than row- or column-major takes burn's cast.
fn widened(weight: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let layout = weight.layout().clone();
    let &[rows, cols] = layout.shape().as_slice() else { return Flex::float_cast(weight, FloatDType::F32) };
    let dense = matches!(layout.strides(), [s, 1] if *s == cols as isize)
        || matches!(layout.strides(), [1, s] if *s == rows as isize);
    if !dense {
        return Flex::float_cast(weight, FloatDType::F32);
    }
    let range = layout.start_offset()..layout.start_offset() + rows * cols;
    let mut out = vec![0f32; rows * cols];
    match weight.dtype() {
        DType::F16 => few_rows::widen(&weight.storage::<half::f16>()[range], &mut out),
        DType::BF16 => few_rows::widen(&weight.storage::<half::bf16>()[range], &mut out),
        _ => return Flex::float_cast(weight, FloatDType::F32),
    }
    let strides = layout.strides().to_vec();
    FlexTensor::new(Bytes::from_elems(out), Layout::new(layout.shape().clone(), strides, 0), DType::F32)
}

/// `x` `[m, k]` (f32) times a bf16 `weight` `[k, n]` (any non-negative strides) in bf16 dot
/// products ([`bf16_dot`]).
fn bf16_dot_product(x: &FloatTensor<Flex>, weight: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    assert_eq!(weight.dtype(), DType::BF16, "bf16 dot products take a bf16 weight");
    let layout = weight.layout();
    let (&[k, n], &[sk, sn]) = (layout.shape().as_slice(), layout.strides()) else {
        panic!("bf16 dot products take a matrix, not {:?}", layout.shape())
    };
    let stride = |s: isize| usize::try_from(s).expect("a weight laid out with non-negative strides");
    let data = &weight.storage::<half::bf16>()[layout.start_offset()..];
    let (x, d_in) = contiguous(x);
    assert_eq!(d_in, k, "bf16 dot products: x [.., {d_in}] against weight [{k}, {n}]");
    let m = x.layout().num_elements() / k;
    let b = bf16_dot::Bf16Matrix { data, k, n, sk: stride(sk), sn: stride(sn) };
    let out = bf16_dot::matmul(elements(&x), m, b);
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous([m, n].into()), DType::F32)
}

/// Gradients on the CPU backend, for the autodiff nodes below.
fn softmax_last_backward(y: FloatTensor<Flex>, grad: FloatTensor<Flex>) -> FloatTensor<Flex> {
    rowwise2(y, grad, rows::dispatch::softmax_backward)
}

fn log_softmax_last_backward(y: FloatTensor<Flex>, grad: FloatTensor<Flex>) -> FloatTensor<Flex> {
    rowwise2(y, grad, rows::dispatch::log_softmax_backward)
}

fn silu_backward(x: FloatTensor<Flex>, grad: FloatTensor<Flex>) -> FloatTensor<Flex> {
    rowwise2(x, grad, |x, g, out, _| rows::dispatch::silu_backward(x, g, out))
}

fn nll_backward(
    logits: FloatTensor<Flex>,
    targets: IntTensor<Flex>,
    nll: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
) -> FloatTensor<Flex> {
    let (x, len) = contiguous(&logits);
    let targets = target_indices(targets, len);
    let ((nll, _), (grad, _)) = (contiguous(&nll), contiguous(&grad));
    let (xs, ls, gs) = (elements(&x), elements(&nll), elements(&grad));
    output(x.layout().shape().clone(), |out| {
        for_row_chunks(out, len, len, |row, o| {
            let r = row..row + o.len() / len;
            rows::dispatch::nll_backward(
                &xs[r.start * len..r.end * len],
                &targets[r.clone()],
                &ls[r.clone()],
                &gs[r],
                o,
                len,
            )
        })
    })
}

// --- Autodiff: each op one node whose backward is the fused gradient kernel -----------------

/// Backward of an op whose gradient is `backward(saved, grad)`, `saved` the tensor the forward
/// kept (its output or its input).
#[derive(Debug)]
struct Unary(fn(FloatTensor<Flex>, FloatTensor<Flex>) -> FloatTensor<Flex>);

impl Backward<Flex, 1> for Unary {
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = &ops.parents[0] {
            grads.register::<Flex>(parent.id, (self.0)(ops.state, grad));
        }
    }
}

/// A unary op on autodiff: `forward` on the CPU backend, and a node that keeps the input
/// (`keep_input`) or the output for `backward`.
fn unary<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    forward: fn(FloatTensor<Flex>) -> FloatTensor<Flex>,
    backward: fn(FloatTensor<Flex>, FloatTensor<Flex>) -> FloatTensor<Flex>,
    keep_input: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    match Unary(backward).prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let input = x.into_primitive();
            if keep_input {
                let y = forward(input.clone());
                prep.finish(input, y)
            } else {
                let y = forward(input);
                prep.finish(y.clone(), y)
            }
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

#[derive(Debug)]
struct NllBackward;

impl Backward<Flex, 1> for NllBackward {
    /// The logits, the targets and the forward's output.
    type State = (FloatTensor<Flex>, IntTensor<Flex>, FloatTensor<Flex>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = &ops.parents[0] {
            let (logits, targets, nll) = ops.state;
            grads.register::<Flex>(parent.id, nll_backward(logits, targets, nll, grad));
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary::<C>(x, Flex::softmax_last, softmax_last_backward, false)
    }

    fn log_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary::<C>(x, Flex::log_softmax_last, log_softmax_last_backward, false)
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        unary::<C>(x, <Flex as FusedOps>::silu, silu_backward, true)
    }

    fn nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        match NllBackward.prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let out = <Flex as FusedOps>::nll(logits.clone(), targets.clone());
                prep.finish((logits, targets, out.clone()), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(<Flex as FusedOps>::nll(logits.into_primitive(), targets)),
        }
    }

    fn few_rows_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        // Decoding does not run on autodiff; were it called there, burn's product keeps the graph.
        Self::float_matmul(x, weight)
    }

    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        frozen_weight_product::<C>(x, weight, <Flex as FusedOps>::half_weight_matmul)
    }

    fn bf16_dot_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        frozen_weight_product::<C>(x, weight, <Flex as FusedOps>::bf16_dot_matmul)
    }
}

/// A product of the CPU backend, `x` `[m, in]` times a frozen half-precision weight
/// `[in, out]`.
type FrozenProduct = fn(FloatTensor<Flex>, FloatTensor<Flex>) -> FloatTensor<Flex>;

/// `product(x, weight)` as a node of the graph: the weight is frozen, so only `x` is a parent,
/// and the node keeps the weight as stored, not an f32 copy ([`FrozenWeightBackward`]).
fn frozen_weight_product<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    product: FrozenProduct,
) -> FloatTensor<Autodiff<Flex, C>> {
    let weight = weight.into_primitive();
    match (FrozenWeightBackward { product }).prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = product(x.into_primitive(), weight.clone());
            prep.finish(weight, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(product(x.into_primitive(), weight)),
    }
}

/// Backward of [`frozen_weight_product`]: the input's gradient `grad · weightᵀ`, by the same
/// product (the half-precision weight widened again, or bf16 dot products).
#[derive(Debug)]
struct FrozenWeightBackward {
    product: FrozenProduct,
}

impl Backward<Flex, 1> for FrozenWeightBackward {
    /// The frozen weight `[in, out]` in its stored precision.
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = &ops.parents[0] {
            grads.register::<Flex>(parent.id, (self.product)(grad, Flex::float_transpose(ops.state)));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, TensorData};

    use super::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Each fused op against burn's own spelling on the autodiff CPU device: values and
    /// gradients of a weighted sum of the output, on a strided (transposed) input.
    #[test]
    fn fused_ops_equal_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let base = Tensor::<3>::random([3, 37, 21], Distribution::Normal(0.0, 4.0), &device.clone().inner());
        let weights = Tensor::<3>::random([3, 21, 37], Distribution::Normal(0.0, 1.0), &device);
        type Op = fn(Tensor<3>) -> Tensor<3>;
        let cases: [(&str, Op, Op); 3] = [
            ("softmax", softmax, |x| activation::softmax(x, 2)),
            ("log_softmax", log_softmax, |x| activation::log_softmax(x, 2)),
            ("silu", silu, activation::silu),
        ];
        for (name, fused_op, reference) in cases {
            let run = |op: Op| {
                let x = Tensor::<3>::from_data(base.to_data(), &device).require_grad();
                let y = op(x.clone().swap_dims(1, 2));
                let grads = (y.clone() * weights.clone()).sum().backward();
                (y, x.grad(&grads).expect("x is tracked"))
            };
            let ((y, gx), (want_y, want_gx)) = (run(fused_op), run(reference));
            let (dy, dg) = (max_diff(y.inner(), want_y.inner()), max_diff(gx, want_gx));
            assert!(dy < 2e-5 && dg < 2e-5, "{name}: value off by {dy}, gradient by {dg}");
        }
    }

    #[test]
    fn fused_nll_equals_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let (n, v) = (9, 300);
        let logits = Tensor::<2>::random([n, v], Distribution::Normal(0.0, 5.0), &device.clone().inner());
        let targets = Tensor::<1, Int>::from_data(
            TensorData::new((0..n as i64).map(|i| i * 31 % v as i64).collect(), [n]),
            &device,
        );
        let weights = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused_path: bool| {
            let x = Tensor::<2>::from_data(logits.to_data(), &device).require_grad();
            let out = if fused_path {
                nll(x.clone(), targets.clone())
            } else {
                activation::log_softmax(x.clone(), 1).gather(1, targets.clone().reshape([n, 1])).reshape([n]).neg()
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            (out, x.grad(&grads).expect("x is tracked"))
        };
        let ((y, g), (want_y, want_g)) = (run(true), run(false));
        let (dy, dg) = (max_diff(y.inner(), want_y.inner()), max_diff(g, want_g));
        assert!(dy < 2e-5 && dg < 1e-5, "nll: value off by {dy}, gradient by {dg}");
    }

    #[test]
    fn off_autodiff_the_fused_ops_equal_burns() {
        let device = Device::flex();
        // Rows of 4,097: a vocabulary-sized row, not a multiple of the vector lanes. burn sums a
        // row serially, off by up to ~2e-5 on the largest probability (once in a few hundred
        // random draws past 1e-5).
        let x = Tensor::<2>::random([5, 4097], Distribution::Normal(0.0, 3.0), &device);
        let diffs = [
            ("softmax", max_diff(softmax(x.clone()), activation::softmax(x.clone(), 1)), 5e-5),
            ("log_softmax", max_diff(log_softmax(x.clone()), activation::log_softmax(x.clone(), 1)), 5e-5),
            ("silu", max_diff(silu(x.clone()), activation::silu(x)), 1e-5),
        ];
        for (name, diff, tolerance) in diffs {
            assert!(diff < tolerance, "{name}: off by {diff}");
        }
    }

    #[test]
    fn batched_matmul_equals_burns_for_row_major_transposed_and_strided_right_factors() {
        let device = Device::flex();
        let normal = |dims: [usize; 4]| Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        // Attention's shapes: scores against the keys transposed, then the probabilities times
        // the values; and a right factor that is neither (a narrowed view).
        let (q, keys) = (normal([2, 3, 10, 64]), normal([2, 3, 37, 64]));
        let scores = matmul(q.clone(), keys.clone().swap_dims(2, 3));
        assert!(max_diff(scores.clone(), q.matmul(keys.clone().swap_dims(2, 3))) < 1e-4);
        assert!(max_diff(matmul(scores.clone(), keys.clone()), scores.clone().matmul(keys.clone())) < 1e-2);
        let narrowed = normal([2, 3, 37, 80]).narrow(3, 5, 64);
        assert!(max_diff(matmul(scores.clone(), narrowed.clone()), scores.matmul(narrowed)) < 1e-2);
    }

    #[test]
    fn linear_equals_burns_on_each_path() {
        let device = Device::flex();
        let normal = |dims: [usize; 2]| Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let (w, b) = (normal([576, 1000]), Tensor::<1>::random([1000], Distribution::Normal(0.0, 1.0), &device));
        // Outputs are sums of 576 products of unit normals (|y| up to ~100), added in another
        // order than burn's: they differ by a few hundred f32 ulps of 1.
        let tolerance = 2e-3;
        // 2 x 3 rows: the few-row product; 3 x 4 rows: under burn-flex's threading threshold, so
        // split by columns; 4 x 60: burn's own.
        for (batch, t) in [(2, 3), (3, 4), (4, 60)] {
            let x = Tensor::<3>::random([batch, t, 576], Distribution::Normal(0.0, 1.0), &device);
            let want = burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()));
            let got = linear(x, w.clone(), Some(b.clone()));
            assert_eq!(got.dims(), [batch, t, 1000]);
            let diff = max_diff(got, want);
            assert!(diff < tolerance, "{batch} x {t} rows: off by {diff}");
        }
        // A tied LM head `[vocab, hidden]`: 32 rows (8 prompts x 4 beams) through the few-row
        // product over its rows, and past that through burn's.
        let head = normal([3000, 576]);
        for rows in [1, 5, 32, 40] {
            let x = Tensor::<3>::random([rows, 1, 576], Distribution::Normal(0.0, 1.0), &device);
            let want = burn::tensor::module::linear(x.clone(), head.clone().transpose(), None);
            let got = linear_transposed(x, head.clone());
            assert_eq!(got.dims(), [rows, 1, 3000]);
            let diff = max_diff(got, want);
            assert!(diff < tolerance, "head, {rows} rows: off by {diff}");
        }
    }

    /// `block_linear` equals burn's product on the blocks' f32 copy on each of its paths (the
    /// blocks as they lie, the copy), in value and, on autodiff, in the input's gradient.
    #[test]
    fn linear_over_blocks_equals_burns_on_their_f32_copy_on_each_path_in_value_and_gradient() {
        use blocks::{random_blocks, BlockMatrix, BlockType};
        let (d_out, d_in) = (40, 64);
        let w = BlockMatrix::new(BlockType::Q4_1, d_out, d_in, random_blocks(BlockType::Q4_1, d_out * d_in / 32, 8))
            .unwrap();
        for device in [Device::flex(), Device::flex().autodiff()] {
            let dense = w.to_tensor(&device).transpose();
            let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 0.1), &device);
            let raw = Tensor::<3>::random([2, 5, d_in], Distribution::Normal(0.0, 1.0), &device.clone().inner());
            let upstream = Tensor::<3>::random([2, 5, d_out], Distribution::Normal(0.0, 1.0), &device);
            // The blocks as they lie (10 rows <= 64), through the f32 copy (0), and burn's.
            let run = |few_rows: Option<usize>| {
                let x = Tensor::<3>::from_data(raw.to_data(), &device);
                let x = if device.is_autodiff() { x.require_grad() } else { x };
                let y = match few_rows {
                    Some(few) => block_linear(x.clone(), &w, Some(bias.clone()), few),
                    None => burn::tensor::module::linear(x.clone(), dense.clone(), Some(bias.clone())),
                };
                let grad = device.is_autodiff().then(|| {
                    let grads = (y.clone() * upstream.clone()).sum().backward();
                    x.grad(&grads).unwrap()
                });
                (y.detach(), grad)
            };
            let (y_burn, g_burn) = run(None);
            // Relative to the largest value: the sums differ in order only.
            let tolerance = |t: &Tensor<3>| 1e-5 * t.clone().abs().max().into_scalar::<f32>();
            for few in [64, 0] {
                let (y, g) = run(Some(few));
                assert!(max_diff(y, y_burn.clone()) <= tolerance(&y_burn), "{device:?}, few rows {few}");
                if let (Some(g), Some(g_burn)) = (g, g_burn.clone()) {
                    assert!(max_diff(g, g_burn.clone()) <= tolerance(&g_burn), "{device:?}, few rows {few}");
                }
            }
        }
    }

    /// `linear` over a weight stored in f16 equals burn's product on the widened weight, in value
    /// and in the input's gradient, for a 3-d input with a bias.
    #[test]
    fn linear_over_a_half_weight_equals_burns_on_the_widened_weight_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let plain = device.clone().inner();
        let raw = Tensor::<3>::random([2, 5, 24], Distribution::Normal(0.0, 1.0), &plain);
        let weight = Tensor::<2>::random([24, 40], Distribution::Normal(0.0, 0.3), &device).cast(FloatDType::F16);
        let bias = Tensor::<1>::random([40], Distribution::Normal(0.0, 0.1), &device);
        let upstream = Tensor::<3>::random([2, 5, 40], Distribution::Normal(0.0, 1.0), &device);
        let run = |half: bool| {
            let x = Tensor::<3>::from_data(raw.to_data(), &device).require_grad();
            let y = if half {
                linear(x.clone(), weight.clone(), Some(bias.clone()))
            } else {
                burn::tensor::module::linear(x.clone(), weight.clone().cast(FloatDType::F32), Some(bias.clone()))
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (y.detach(), x.grad(&grads).unwrap())
        };
        let ((y_half, g_half), (y_burn, g_burn)) = (run(true), run(false));
        assert_eq!(y_half.dtype(), DType::F32);
        assert!(max_diff(y_half, y_burn) < 1e-5);
        assert!(max_diff(g_half, g_burn) < 1e-5);
    }
}
