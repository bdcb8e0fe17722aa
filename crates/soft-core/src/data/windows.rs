//! Interaction windows: a user's consecutive items, the last one the target, the rest the
//! history. `sequences.csv` (`user_id,item_ids,timestamp`) is their file format.

use std::path::Path;

use crate::data::catalog::Catalog;
use crate::data::text::excerpt;
use crate::{Error, Result};

/// Windows are at most this long: 10 history items and the target.
pub const WINDOW_LEN: usize = 11;
/// Prompts and sequence models see at most this many history items (the latest ones).
pub const MAX_HISTORY: usize = WINDOW_LEN - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub user: String,
    /// History then target; at least two items.
    pub items: Vec<u32>,
    /// Unix seconds of the target interaction.
    pub timestamp: i64,
}

impl Window {
    pub fn history(&self) -> &[u32] {
        let h = &self.items[..self.items.len() - 1];
        &h[h.len().saturating_sub(MAX_HISTORY)..]
    }

    pub fn target(&self) -> u32 {
        *self.items.last().expect("a window has a target")
    }
}

/// Parses `[1, 2, 3]`.
fn parse_id_list(field: &str) -> std::result::Result<Vec<u32>, String> {
    let inner = field
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("item_ids `{}` is not a bracketed list like \"[1, 2, 3]\"", excerpt(field)))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|s| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("item id `{}` in `{}` is not a non-negative integer", excerpt(s.trim()), excerpt(field))
            })
        })
        .collect()
}

/// Reads a `sequences.csv` file; every item must be in `catalog` and every window must have a
/// non-empty history.
pub fn load_sequences(path: &Path, catalog: &Catalog) -> Result<Vec<Window>> {
    let bytes = crate::data::text::read_bytes(path)?;
    parse_sequences(path, &bytes, catalog)
}

pub fn parse_sequences(path: &Path, bytes: &[u8], catalog: &Catalog) -> Result<Vec<Window>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let header = reader.byte_headers().map_err(|e| csv_error(path, e))?.clone();
    let column = |name: &str| {
        header.iter().position(|h| h == name.as_bytes()).ok_or_else(|| {
            Error::parse(path, 1, format!("missing column `{name}` (expected user_id,item_ids,timestamp)"))
        })
    };
    let (user_col, items_col, ts_col) = (column("user_id")?, column("item_ids")?, column("timestamp")?);

    let mut windows = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let field = |col: usize| -> Result<&str> {
            let raw = record.get(col).unwrap_or_default();
            std::str::from_utf8(raw).map_err(|_| Error::parse(path, line, "invalid UTF-8"))
        };
        let items = parse_id_list(field(items_col)?).map_err(|m| Error::parse(path, line, m))?;
        if items.len() < 2 {
            return Err(Error::parse(
                path,
                line,
                "empty history: a window needs at least one history item and a target",
            ));
        }
        if let Some(bad) = items.iter().find(|&&id| !catalog.contains(id)) {
            return Err(Error::parse(path, line, format!("item id {bad} is not in the item catalog")));
        }
        let ts_text = field(ts_col)?.trim();
        let timestamp = ts_text
            .parse::<i64>()
            .ok()
            .or_else(|| ts_text.parse::<f64>().ok().filter(|t| t.is_finite()).map(|t| t as i64))
            .ok_or_else(|| Error::parse(path, line, format!("timestamp `{}` is not a number", excerpt(ts_text))))?;
        windows.push(Window { user: field(user_col)?.trim().to_string(), items, timestamp });
    }
    if windows.is_empty() {
        return Err(Error::format(path, "no windows"));
    }
    Ok(windows)
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(1);
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("expected {expected_len} fields, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
        _ => e.to_string(),
    };
    Error::parse(path, line, msg)
}

/// Writes windows in the `sequences.csv` format.
pub fn sequences_csv(windows: &[Window]) -> String {
    let mut out = String::from("user_id,item_ids,timestamp\n");
    for w in windows {
        let ids: Vec<String> = w.items.iter().map(u32::to_string).collect();
        let user = if w.user.contains([',', '"', '\n']) {
            format!("\"{}\"", w.user.replace('"', "\"\""))
        } else {
            w.user.clone()
        };
        out.push_str(&format!("{user},\"[{}]\",{}\n", ids.join(", "), w.timestamp));
    }
    out
}

/// Windows walking a ring of `n_items` items: window `s` holds the `len(s)` items from item
/// `s % n_items + 1` on, so every item is always followed by the next one (a pattern any
/// sequence model can learn).
#[cfg(all(test, feature = "native"))]
pub(crate) fn ring_windows(count: usize, n_items: usize, len: impl Fn(usize) -> usize) -> Vec<Window> {
    (0..count)
        .map(|s| Window {
            user: s.to_string(),
            items: (0..len(s)).map(|j| ((s + j) % n_items) as u32 + 1).collect(),
            timestamp: s as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::embedded;

    fn books() -> Catalog {
        Catalog::parse(Path::new("id2name.json"), embedded::AMAZON_BOOKS_ITEMS).unwrap()
    }

    #[test]
    fn parses_the_embedded_books_file() {
        let cat = books();
        let windows =
            parse_sequences(Path::new("sequences.csv"), embedded::AMAZON_BOOKS_SEQUENCES.as_bytes(), &cat).unwrap();
        assert_eq!(windows.len(), 35_060);
        assert_eq!(windows[0].items, vec![1948, 1807, 1702, 1307, 1600]);
        assert_eq!(windows[0].target(), 1600);
        assert_eq!(windows[0].history(), &[1948, 1807, 1702, 1307]);
        assert_eq!(windows.iter().filter(|w| w.items.len() == 11).count(), 26_248);
        assert!(windows.windows(2).all(|p| p[0].timestamp <= p[1].timestamp));
    }

    #[test]
    fn round_trips_through_csv() {
        let cat = Catalog::from_titles([(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        let w = vec![Window { user: "u,1".into(), items: vec![1, 2, 3], timestamp: 5 }];
        let text = sequences_csv(&w);
        assert_eq!(parse_sequences(Path::new("s.csv"), text.as_bytes(), &cat).unwrap(), w);
    }

    fn err(text: &[u8]) -> String {
        let cat = Catalog::from_titles([(1, "a".into()), (2, "b".into())]);
        parse_sequences(Path::new("s.csv"), text, &cat).unwrap_err().to_string()
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let head = "user_id,item_ids,timestamp\n1,\"[1, 2]\",5\n";
        assert_eq!(err(format!("{head}2,\"[1, 2]\"\n").as_bytes()), "s.csv:3: expected 3 fields, found 2");
        assert!(err(format!("{head}2,\"[1, x]\",5\n").as_bytes()).starts_with("s.csv:3: item id `x`"));
        assert!(err(format!("{head}2,\"1, 2\",5\n").as_bytes()).starts_with("s.csv:3: item_ids"));
        assert!(err(format!("{head}2,\"[1, 9]\",5\n").as_bytes()).starts_with("s.csv:3: item id 9 is not in"));
        assert!(err(format!("{head}2,\"[2]\",5\n").as_bytes()).starts_with("s.csv:3: empty history"));
        assert!(err(format!("{head}2,\"[1, 2]\",soon\n").as_bytes()).starts_with("s.csv:3: timestamp"));
        let mut bytes = format!("{head}").into_bytes();
        bytes.extend_from_slice(b"\xff\xfe,\"[1, 2]\",5\n");
        assert_eq!(err(&bytes), "s.csv:3: invalid UTF-8");
        assert!(err(b"user,items,time\n1,\"[1, 2]\",5\n").starts_with("s.csv:1: missing column `user_id`"));
    }
}
