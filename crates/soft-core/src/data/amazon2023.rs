//! Raw Amazon Reviews 2023: `interaction.csv` (user, item, rating, timestamp) and
//! `metadata.jsonl` (`parent_asin`, `title`). Untitled items are dropped, then k-core, then windows.

use std::collections::HashMap;
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::data::interactions::{k_core, number_items, windows, Interaction};
use crate::data::text::{excerpt, read_bytes, utf8_lines};
use crate::data::{Catalog, Window};
use crate::{Error, Result};

pub const INTERACTIONS_FILE: &str = "interaction.csv";
pub const METADATA_FILE: &str = "metadata.jsonl";

/// The fields of a `metadata.jsonl` line that are read; the others are ignored.
#[derive(Deserialize)]
struct MetadataLine {
    parent_asin: String,
    #[serde(default)]
    title: Option<TitleField>,
}

/// A title that is not a string (null, a number...) counts as no title.
#[derive(Deserialize)]
#[serde(untagged)]
enum TitleField {
    Text(String),
    Other(IgnoredAny),
}

/// Titles by `parent_asin`; lines without a usable title are skipped (the protocol drops them).
pub fn load_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = read_bytes(path)?;
    let mut titles = HashMap::new();
    for line in utf8_lines(path, &bytes) {
        let (n, text) = line?;
        let line: MetadataLine = serde_json::from_str(text).map_err(|e| {
            let what = if e.is_data() { "expected a string field `parent_asin`" } else { "not a JSON object" };
            Error::parse(path, n, format!("{what}: {e}"))
        })?;
        if let Some(TitleField::Text(title)) = line.title {
            if !crate::data::catalog::clean_title(&title).is_empty() {
                titles.insert(line.parent_asin, title);
            }
        }
    }
    Ok(titles)
}

/// Interactions from a CSV with a header naming the user (`user_id`), item (`parent_asin`,
/// `item_id` or `asin`) and `timestamp` columns; a rating column may be present and is ignored.
pub fn load_interactions(path: &Path) -> Result<Vec<Interaction>> {
    let bytes = read_bytes(path)?;
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let header = reader.byte_headers().map_err(|e| Error::parse(path, 1, e.to_string()))?.clone();
    let find = |names: &[&str]| {
        header.iter().position(|h| names.iter().any(|n| h == n.as_bytes())).ok_or_else(|| {
            Error::parse(
                path,
                1,
                format!("missing column `{}` (header must name user_id, parent_asin, timestamp)", names[0]),
            )
        })
    };
    let (u, i, t) =
        (find(&["user_id", "user"])?, find(&["parent_asin", "item_id", "asin", "item"])?, find(&["timestamp"])?);
    let mut rows = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
            Error::parse(path, line, e.to_string())
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let field = |c: usize| {
            std::str::from_utf8(record.get(c).unwrap_or_default())
                .map_err(|_| Error::parse(path, line, "invalid UTF-8"))
        };
        let ts = field(t)?;
        let timestamp: f64 = ts
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| Error::parse(path, line, format!("timestamp `{}` is not a number", excerpt(ts))))?;
        rows.push(Interaction { user: field(u)?.to_string(), item: field(i)?.to_string(), timestamp });
    }
    Ok(rows)
}

/// The whole pipeline for a directory holding `interaction.csv` and `metadata.jsonl`.
/// Amazon 2023 timestamps are in milliseconds; windows carry seconds.
pub fn load_dir(dir: &Path, k: usize) -> Result<(Catalog, Vec<Window>)> {
    let titles = load_metadata(&dir.join(METADATA_FILE))?;
    let mut rows = load_interactions(&dir.join(INTERACTIONS_FILE))?;
    rows.retain(|r| titles.contains_key(&r.item));
    for r in &mut rows {
        if r.timestamp > 1e11 {
            r.timestamp /= 1000.0;
        }
    }
    let rows = k_core(rows, k);
    if rows.is_empty() {
        return Err(Error::format(
            dir.join(INTERACTIONS_FILE),
            format!("no interactions left after dropping untitled items and {k}-core filtering"),
        ));
    }
    let (ids, catalog) = number_items(&rows, &titles);
    Ok((catalog, windows(&rows, &ids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn raw_files_become_windows() {
        let dir = std::env::temp_dir().join(format!("soft-amazon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Three users x three items, each seen by everyone; item D has no title and user u4
        // only touches untitled/rare items, so both vanish with k = 3.
        let mut csv = String::from("user_id,parent_asin,rating,timestamp\n");
        let mut t = 1_600_000_000_000u64;
        for u in ["u1", "u2", "u3"] {
            for i in ["B", "A", "C", "D"] {
                t += 1000;
                csv.push_str(&format!("{u},{i},5.0,{t}\n"));
            }
        }
        csv.push_str("u4,D,1.0,1600000099000\nu4,E,1.0,1600000099500\n");
        write(&dir, INTERACTIONS_FILE, &csv);
        write(
            &dir,
            METADATA_FILE,
            "{\"parent_asin\": \"A\", \"title\": \"Alpha &amp; Omega\"}\n{\"parent_asin\": \"B\", \"title\": \"Beta\"}\n\
             {\"parent_asin\": \"C\", \"title\": \"Gamma\"}\n{\"parent_asin\": \"D\", \"title\": \"\"}\n{\"parent_asin\": \"E\", \"title\": null}\n{\"parent_asin\": \"F\", \"title\": 3}\n",
        );
        let (cat, w) = load_dir(&dir, 3).unwrap();
        assert_eq!(cat.len(), 3);
        assert_eq!(cat.title(1), Some("Alpha & Omega"));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].user, "u1");
        assert_eq!(w[0].items, vec![2, 1, 3]); // B, A, C in time order
        assert_eq!(w[0].timestamp, 1_600_000_003);

        write(&dir, METADATA_FILE, "{\"title\": \"A\"}\n");
        let err = load_dir(&dir, 3).unwrap_err().to_string();
        assert!(err.contains("metadata.jsonl:1: expected a string field `parent_asin`: missing field"), "{err}");
        write(&dir, METADATA_FILE, "{\"parent_asin\": \"A\"}\nnot json\n");
        let err = load_dir(&dir, 3).unwrap_err().to_string();
        assert!(err.ends_with("metadata.jsonl:2: not a JSON object: expected ident at line 1 column 2"), "{err}");
        write(&dir, INTERACTIONS_FILE, "user_id,rating,timestamp\nu1,5,1\n");
        write(&dir, METADATA_FILE, "");
        let err = load_dir(&dir, 3).unwrap_err().to_string();
        assert!(err.contains("interaction.csv:1: missing column `parent_asin`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
