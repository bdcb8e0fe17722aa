//! Data: item catalogs, interaction windows in three source formats, the temporal split and
//! the prompt text.

pub mod amazon2023;
pub mod catalog;
pub mod dataset;
pub mod embedded;
pub mod interactions;
pub mod prompt;
pub mod recbole;
pub mod split;
pub mod text;
pub mod windows;

pub use catalog::Catalog;
pub use dataset::Dataset;
pub use prompt::Domain;
pub use split::{Split, SplitConfig};
pub use windows::Window;
