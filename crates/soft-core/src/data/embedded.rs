//! The default dataset, compiled in so every command runs with no download and in the browser.

pub const AMAZON_BOOKS_SEQUENCES: &str = include_str!("../../../../data/amazon-books/sequences.csv");
pub const AMAZON_BOOKS_ITEMS: &str = include_str!("../../../../data/amazon-books/id2name.json");
