//! The ggml tensor types small quantized Llamas use (F32, F16, BF16, Q4_0, Q4_1, Q8_0), and
//! their dequantization to f32.

use crate::kernels::blocks::{block_values, BlockType, BLOCK};
use crate::model::weights::FloatEncoding;

/// Elements in one block of every quantized type read here.
pub(crate) const QK: usize = BLOCK;

/// A ggml tensor type. `Other` keeps the id of a type this reader cannot dequantize, so that
/// the file still opens and the error comes only when such a tensor is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Other(u32),
}

impl GgmlType {
    pub(super) fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The block type of a quantized type (`kernels/blocks.rs` defines their values).
    pub(crate) fn block_type(self) -> Option<BlockType> {
        match self {
            GgmlType::Q4_0 => Some(BlockType::Q4_0),
            GgmlType::Q4_1 => Some(BlockType::Q4_1),
            GgmlType::Q8_0 => Some(BlockType::Q8_0),
            _ => None,
        }
    }

    /// (elements, bytes) of one block; plain types are blocks of one element.
    pub(super) fn block_layout(self) -> Option<(usize, usize)> {
        if let Some(block) = self.block_type() {
            return Some((QK, block.bytes()));
        }
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            _ => None,
        }
    }
}

/// `data` as f32. Its length is a whole number of blocks of `ty` (checked by the caller).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => FloatEncoding::F32.decode(data),
        GgmlType::F16 => FloatEncoding::F16.decode(data),
        GgmlType::BF16 => FloatEncoding::BF16.decode(data),
        GgmlType::Other(_) => unreachable!("checked by GgufFile::tensor"),
        quantized => {
            let block = quantized.block_type().expect("a quantized type");
            data.chunks_exact(block.bytes()).flat_map(|b| block_values(block, b)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block() {
        // d = 0.25 (f16 0x3400), q = 0, 1, -1, 2, -2, ... , 127 at the end.
        let mut block = vec![0x00, 0x34];
        let qs: Vec<i8> = (0..31).map(|i: i8| if i % 2 == 1 { i / 2 + 1 } else { -(i / 2) }).chain([127]).collect();
        block.extend(qs.iter().map(|&q| q as u8));
        let got = dequantize(GgmlType::Q8_0, &block);
        assert_eq!(&got[..5], &[0.0, 0.25, -0.25, 0.5, -0.5]);
        assert_eq!(got[31], 31.75);
        assert_eq!(got.len(), 32);
    }

    #[test]
    fn q4_1_block() {
        // d = 0.5 (0x3800), m = -1.0 (0xBC00); byte k = (k+1) << 4 | k for k < 15, last 0xF0 | 0x0F.
        let mut block = vec![0x00, 0x38, 0x00, 0xBC];
        block.extend((0u8..16).map(|k| ((k + 1) % 16) << 4 | k));
        let got = dequantize(GgmlType::Q4_1, &block);
        // Low nibbles 0..15 are elements 0..16: 0.5 * k - 1.
        assert_eq!(&got[..4], &[-1.0, -0.5, 0.0, 0.5]);
        assert_eq!(got[15], 6.5);
        // High nibbles are elements 16..32: (k+1) % 16, so 1, 2, ..., 15, 0.
        assert_eq!(&got[16..19], &[-0.5, 0.0, 0.5]);
        assert_eq!(got[30], 6.5);
        assert_eq!(got[31], -1.0);
    }

    #[test]
    fn q4_0_block() {
        // d = 2.0 (0x4000); byte 0 = 0x9F: element 0 is (15 - 8) * 2, element 16 is (9 - 8) * 2.
        let mut block = vec![0x00, 0x40, 0x9F];
        block.extend([0x88; 15]);
        let got = dequantize(GgmlType::Q4_0, &block);
        assert_eq!((got[0], got[16], got[1], got[17]), (14.0, 2.0, 0.0, 0.0));
    }
}
