//! The CPU backend's tensors where they lie: read-only views of weights and a writable view of
//! a KV-cache buffer, for the fused decoding step (`model/decoding/fused_step.rs`), which runs a
//! whole step on these slices instead of as ~30 burn ops per layer. Every function returns
//! `None` for a tensor that is not an f32/f16/bf16 tensor of the CPU backend off autodiff, so
//! the callers can keep burn's path for it.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};
use burn::tensor::{Bytes, DType, Shape, Tensor};

use super::few_rows::{self, WeightLayout};

/// The CPU backend's tensor behind `t`, when it is one (off autodiff).
pub(crate) fn flex<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let dispatch = t.clone().into_dispatch();
    match (dispatch.kind, dispatch.autodiff) {
        (DispatchTensorKind::Flex(BackendTensor::Float(t)), DispatchAutodiffContext::Disabled) => Some(t),
        _ => None,
    }
}

/// A CPU-backend tensor as a burn tensor.
pub(crate) fn tensor<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_dispatch(DispatchTensor {
        kind: DispatchTensorKind::Flex(BackendTensor::Float(t)),
        autodiff: DispatchAutodiffContext::Disabled,
    })
}

/// An f32 tensor of `shape` holding `values` (row-major), on the CPU backend.
pub(crate) fn from_values<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    assert_eq!(values.len(), shape.iter().product::<usize>(), "from_values: {} values for {shape:?}", values.len());
    tensor(FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(Shape::from(shape)), DType::F32))
}

/// The f32 values of a CPU-backend vector (a norm's gain, a bias), copied.
pub(crate) fn values(t: &Tensor<1>) -> Option<Vec<f32>> {
    let t = flex(t)?;
    (t.dtype() == DType::F32).then(|| t.to_contiguous().as_slice::<f32>().map(<[f32]>::to_vec)).flatten()
}

/// A matrix `[d_in, d_out]` of the CPU backend read where it lies: row- or column-major, in
/// f32, f16 or bf16 (widened as read).
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    t: FlexTensor,
    layout: WeightLayout,
    start: usize,
    pub(crate) d_in: usize,
    pub(crate) d_out: usize,
}

impl Matrix {
    /// `t` `[d_in, d_out]`, when its elements lie row- or column-major.
    pub(crate) fn new(t: &Tensor<2>) -> Option<Self> {
        Self::of(flex(t)?)
    }

    /// A CPU-backend matrix; `None` for another element type or a layout neither row- nor
    /// column-major.
    pub(crate) fn of(t: FlexTensor) -> Option<Self> {
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return None;
        }
        let l = t.layout();
        let &[d_in, d_out] = l.shape().as_slice() else { return None };
        let layout = match l.strides() {
            // A single row or column needs only its own elements adjacent.
            [s, 1] if *s == d_out as isize || d_in == 1 => WeightLayout::InOut,
            [1, s] if *s == d_in as isize || d_out == 1 => WeightLayout::OutIn,
            _ if d_in == 1 && d_out == 1 => WeightLayout::InOut,
            _ => return None,
        };
        let start = l.start_offset();
        Some(Self { t, layout, start, d_in, d_out })
    }

    /// `x` `[m, d_in]` times this matrix: `[m, d_out]` ([`few_rows::product`]).
    pub(crate) fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let range = self.start..self.start + self.d_in * self.d_out;
        let (layout, d_in, d_out) = (self.layout, self.d_in, self.d_out);
        match self.t.dtype() {
            DType::F16 => few_rows::product(x, m, &self.t.storage::<half::f16>()[range], layout, d_in, d_out),
            DType::BF16 => few_rows::product(x, m, &self.t.storage::<half::bf16>()[range], layout, d_in, d_out),
            _ => few_rows::product(x, m, &self.t.storage::<f32>()[range], layout, d_in, d_out),
        }
    }

    /// Row `i` (`d_out` values) widened to f32 into `out`: an embedding table's lookup.
    pub(crate) fn row(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.d_in && out.len() == self.d_out, "row {i} of a [{}, {}] matrix", self.d_in, self.d_out);
        fn read<W: few_rows::Weight>(w: &[W], start: usize, step: usize, out: &mut [f32]) {
            out.iter_mut().enumerate().for_each(|(j, o)| *o = w[start + j * step].widen());
        }
        let (start, step) = match self.layout {
            WeightLayout::InOut => (self.start + i * self.d_out, 1),
            WeightLayout::OutIn => (self.start + i, self.d_in),
        };
        match self.t.dtype() {
            DType::F16 => read(self.t.storage::<half::f16>(), start, step, out),
            DType::BF16 => read(self.t.storage::<half::bf16>(), start, step, out),
            _ => read(self.t.storage::<f32>(), start, step, out),
        }
    }
}

/// A 4-d f32 tensor `[rows, heads, positions, head_dim]` of the CPU backend read where it lies,
/// each (row, head)'s positions contiguous: the keys or values of a KV cache.
#[derive(Debug)]
pub(crate) struct Array4 {
    t: FlexTensor,
    start: usize,
    strides: [usize; 2],
    d: usize,
}

impl Array4 {
    /// `t`, when it is an f32 tensor of the CPU backend whose last two dimensions lie
    /// row-major (any strides, non-negative, for the first two).
    pub(crate) fn new(t: &Tensor<4>) -> Option<Self> {
        let t = flex(t)?;
        let l = t.layout();
        let (&[.., d], &[s0, s1, s2, 1]) = (l.shape().as_slice(), l.strides()) else { return None };
        if t.dtype() != DType::F32 || s0 < 0 || s1 < 0 || s2 != d as isize {
            return None;
        }
        let start = l.start_offset();
        Some(Self { start, strides: [s0 as usize, s1 as usize], d, t })
    }

    /// The first `n` positions of row `i`, head `j`: `[n, head_dim]` row-major.
    #[inline]
    pub(crate) fn block(&self, i: usize, j: usize, n: usize) -> &[f32] {
        let o = self.start + i * self.strides[0] + j * self.strides[1];
        &self.t.storage::<f32>()[o..o + n * self.d]
    }
}

/// Runs `write` on the elements of `t` (an f32 CPU-backend tensor, made contiguous and sole
/// owner of its buffer first: a shared buffer is copied, as burn's in-place ops do) and gives
/// the tensor back; `None`, leaving `t` untouched, for a tensor of another kind.
pub(crate) fn write<const D: usize>(t: &mut Tensor<D>, write: impl FnOnce(&mut [f32])) -> Option<()> {
    let mut flex = flex(t).filter(|f| f.dtype() == DType::F32)?;
    // Drop `t`'s own reference, so that an unshared buffer is written in place.
    *t = Tensor::empty([0; D], &t.device());
    if !flex.is_contiguous() || flex.layout().start_offset() != 0 {
        flex = flex.to_contiguous();
    }
    write(flex.storage_mut::<f32>());
    *t = tensor(flex);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view is read where it lies only when its elements lie row- or column-major: a single
    /// column of a wider matrix (its elements a row apart) is refused, not misread.
    #[test]
    fn only_row_or_column_major_views_are_read_where_they_lie() {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let t = FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(Shape::from([3, 4])), DType::F32);
        let whole = Matrix::of(t.clone()).expect("row-major");
        assert_eq!(whole.product(&[1.0, 0.0, 0.0], 1), vec![0.0, 1.0, 2.0, 3.0]);
        let transposed = Matrix::of(t.transpose(0, 1)).expect("column-major");
        assert_eq!(transposed.product(&[0.0, 1.0, 0.0, 0.0], 1), vec![1.0, 5.0, 9.0]);
        // Column 1: [3, 1] with strides [4, 1], and row 1 of the transpose: [1, 3] with [1, 4].
        assert!(Matrix::of(t.narrow(1, 1, 1)).is_none());
        assert!(Matrix::of(t.transpose(0, 1).narrow(0, 1, 1)).is_none());
        // A row of the row-major matrix and a column of its transpose lie adjacent.
        assert_eq!(Matrix::of(t.narrow(0, 1, 1)).expect("a row").product(&[2.0], 1), vec![8.0, 10.0, 12.0, 14.0]);
        assert_eq!(Matrix::of(t.transpose(0, 1).narrow(1, 2, 1)).expect("a column").product(&[1.0, 1.0, 1.0, 1.0], 1), vec![38.0]);
    }
}
