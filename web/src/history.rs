//! The history a person builds on the Recommend view: type-ahead search over the catalog, item
//! ids pasted as text, and the rules a history must meet before the model reads it.

use std::fmt;

use soft_core::data::Catalog;

/// The model was trained on windows of 10 history items.
pub const MAX_HISTORY: usize = 10;
/// Longest search text looked at (a paste of a whole page is cut, not an error).
pub const MAX_QUERY_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum HistoryError {
    Empty,
    TooLong { given: usize },
    Full,
    NotAnId(String),
    UnknownId(u32),
    AlreadyThere(u32),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Empty => write!(f, "The history is empty: add 1 to {MAX_HISTORY} books first."),
            HistoryError::TooLong { given } => write!(
                f,
                "{given} items given: a history holds 1 to {MAX_HISTORY} (the model was trained on the last {MAX_HISTORY} items of each user)."
            ),
            HistoryError::Full => write!(f, "The history is full ({MAX_HISTORY} items): remove one first."),
            HistoryError::NotAnId(t) => write!(f, "`{t}` is not an item id: ids are whole numbers such as 1234."),
            HistoryError::UnknownId(id) => write!(f, "Item {id} is not in the catalog."),
            HistoryError::AlreadyThere(id) => write!(f, "Item {id} is already in the history."),
        }
    }
}

/// A history the model may read: 1 to [`MAX_HISTORY`] catalog items.
pub fn check(catalog: &Catalog, items: &[u32]) -> Result<(), HistoryError> {
    if items.is_empty() {
        return Err(HistoryError::Empty);
    }
    if items.len() > MAX_HISTORY {
        return Err(HistoryError::TooLong { given: items.len() });
    }
    match items.iter().find(|id| !catalog.contains(**id)) {
        Some(&id) => Err(HistoryError::UnknownId(id)),
        None => Ok(()),
    }
}

/// `items` with `id` appended, if it may be.
pub fn push(catalog: &Catalog, items: &[u32], id: u32) -> Result<Vec<u32>, HistoryError> {
    if !catalog.contains(id) {
        return Err(HistoryError::UnknownId(id));
    }
    if items.contains(&id) {
        return Err(HistoryError::AlreadyThere(id));
    }
    if items.len() >= MAX_HISTORY {
        return Err(HistoryError::Full);
    }
    let mut out = items.to_vec();
    out.push(id);
    Ok(out)
}

/// Item ids separated by commas, spaces or new lines (`12, 40 7`), as a whole history.
pub fn parse_ids(catalog: &Catalog, text: &str) -> Result<Vec<u32>, HistoryError> {
    let mut ids = Vec::new();
    for tok in text.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).filter(|t| !t.is_empty()) {
        let id: u32 = tok.parse().map_err(|_| HistoryError::NotAnId(shorten(tok, 40)))?;
        ids.push(id);
    }
    check(catalog, &ids)?;
    Ok(ids)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Catalog titles, lower-cased once, for type-ahead search.
pub struct SearchIndex {
    entries: Vec<(u32, String, String)>,
}

impl SearchIndex {
    pub fn new(catalog: &Catalog) -> Self {
        Self { entries: catalog.iter().map(|(id, t)| (id, t.to_string(), fold(t))).collect() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `limit` titles containing every word of `query` (case and accents of ASCII letters
    /// ignored): titles starting with the query first, then by length. An id typed alone
    /// (`#1234` or `1234`) finds that item too.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(u32, String)> {
        let q: String = query.chars().take(MAX_QUERY_CHARS).collect();
        let q = fold(q.trim());
        if q.is_empty() || limit == 0 {
            return Vec::new();
        }
        let words: Vec<&str> = q.split_whitespace().collect();
        let mut hits: Vec<(u8, usize, u32, &str)> = Vec::new();
        if let Ok(id) = q.trim_start_matches('#').parse::<u32>() {
            if let Some((_, t, _)) = self.entries.iter().find(|e| e.0 == id) {
                hits.push((0, 0, id, t));
            }
        }
        for (id, title, lower) in &self.entries {
            if words.iter().all(|w| lower.contains(w)) {
                let rank = if lower.starts_with(&q) {
                    1
                } else if lower.contains(&q) {
                    2
                } else {
                    3
                };
                hits.push((rank, title.len(), *id, title));
            }
        }
        hits.sort();
        hits.dedup_by_key(|h| h.2);
        hits.into_iter().take(limit).map(|(_, _, id, t)| (id, t.to_string())).collect()
    }
}

fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_titles([
            (1, "The Hobbit".to_string()),
            (2, "Harry Potter and the Sorcerer's Stone".to_string()),
            (3, "The Hunger Games".to_string()),
            (4, "Hobbit Tales".to_string()),
            (5, "Café <b>Society</b> & Friends".to_string()),
        ])
    }

    #[test]
    fn search_ranks_prefixes_first_and_ignores_case() {
        let idx = SearchIndex::new(&catalog());
        let ids: Vec<u32> = idx.search("HOBBIT", 10).iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![4, 1]);
        let ids: Vec<u32> = idx.search("the games", 10).iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![3]);
        assert_eq!(idx.search("#2", 10)[0].0, 2);
        assert!(idx.search("   ", 10).is_empty());
        assert!(idx.search("<script>alert(1)</script>", 10).is_empty());
        assert_eq!(idx.search("café <b>", 10)[0].0, 5);
        assert!(idx.search(&"x".repeat(100_000), 10).is_empty());
        assert!(idx.search("🙂 ∑ \u{0} \\", 10).is_empty());
    }

    #[test]
    fn histories_hold_one_to_ten_catalog_items() {
        let c = catalog();
        assert_eq!(check(&c, &[]), Err(HistoryError::Empty));
        assert_eq!(check(&c, &[1, 2]), Ok(()));
        assert_eq!(check(&c, &[1, 99]), Err(HistoryError::UnknownId(99)));
        assert_eq!(parse_ids(&c, "1, 2\n3"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_ids(&c, "1, two"), Err(HistoryError::NotAnId("two".into())));
        let fifty: Vec<String> = (0..50).map(|i| (1 + i % 5).to_string()).collect();
        assert_eq!(parse_ids(&c, &fifty.join(",")), Err(HistoryError::TooLong { given: 50 }));
        assert_eq!(parse_ids(&c, ""), Err(HistoryError::Empty));
        assert!(HistoryError::TooLong { given: 50 }.to_string().contains("50 items"));
        assert_eq!(push(&c, &[1], 1), Err(HistoryError::AlreadyThere(1)));
        assert_eq!(push(&c, &[1], 7), Err(HistoryError::UnknownId(7)));
        assert_eq!(push(&c, &[1], 2), Ok(vec![1, 2]));
        let full: Vec<u32> = (1..=10).collect();
        let big = Catalog::from_titles((1..=11).map(|i| (i, format!("t{i}"))));
        assert_eq!(push(&big, &full, 11), Err(HistoryError::Full));
    }
}
