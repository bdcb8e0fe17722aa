//! Classic recommenders on item ids, so every language-model number has a reference point.

pub mod popularity;
pub mod sasrec;

pub use popularity::Popularity;
pub use sasrec::{SasRec, SasRecConfig};
