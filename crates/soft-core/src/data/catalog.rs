//! The item catalog: id -> title, with HTML entities decoded and duplicate titles resolved.
//!
//! Prompts use every id's own title. Grounding needs the reverse (title -> item), which is only
//! deterministic with one id per distinct title: the smallest id carrying a title is its
//! canonical item, and evaluation scores a duplicate's target as its canonical id.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::data::text::{excerpt, read_bytes, utf8_text};
use crate::{Error, Result};

/// An `id2name.json` object's entries in file order, repeated keys kept (a map would drop them).
struct Entries(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of \"id\": \"title\" pairs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    titles: BTreeMap<u32, String>,
    canonical: HashMap<String, u32>,
}

/// Decodes HTML entities (`&amp;`, `&quot;`, `&#39;`...) and trims surrounding white space.
pub fn clean_title(raw: &str) -> String {
    html_escape::decode_html_entities(raw).trim().to_string()
}

impl Catalog {
    /// Builds a catalog from raw titles (cleaned here). An empty title is kept: the processed
    /// Amazon Books data has one, and its item still occurs in histories.
    pub fn from_titles(items: impl IntoIterator<Item = (u32, String)>) -> Self {
        let titles: BTreeMap<u32, String> = items.into_iter().map(|(id, t)| (id, clean_title(&t))).collect();
        let mut canonical = HashMap::new();
        for (&id, title) in &titles {
            canonical.entry(title.clone()).or_insert(id);
        }
        Self { titles, canonical }
    }

    /// Reads an `id2name.json` file (`{"1": "title", ...}`).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_bytes(path)?;
        Self::parse(path, utf8_text(path, &bytes)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let Entries(raw) = serde_json::from_str(text)
            .map_err(|e| Error::parse(path, e.line(), format!("expected an object of \"id\": \"title\" pairs: {e}")))?;
        let line_of = |key: &str, last: bool| {
            let needle = format!("\"{key}\"");
            let at = if last { text.rfind(&needle) } else { text.find(&needle) };
            at.map(|at| text[..at].matches('\n').count() + 1).unwrap_or(1)
        };
        let mut items = BTreeMap::new();
        for (key, title) in raw {
            let id: u32 = key.trim().parse().ok().filter(|&id| id > 0).ok_or_else(|| {
                Error::parse(
                    path,
                    line_of(&key, false),
                    format!("item id `{}` is not a positive integer", excerpt(&key)),
                )
            })?;
            // A JSON object with a repeated key would silently keep one title: refuse it.
            if items.insert(id, title).is_some() {
                return Err(Error::parse(path, line_of(&key, true), format!("item id {id} appears twice")));
            }
        }
        if items.is_empty() {
            return Err(Error::format(path, "no items"));
        }
        Ok(Self::from_titles(items))
    }

    /// The catalog as `id2name.json` text (titles already cleaned).
    pub fn to_json(&self) -> String {
        let map: BTreeMap<String, &str> = self.titles.iter().map(|(id, t)| (id.to_string(), t.as_str())).collect();
        serde_json::to_string_pretty(&map).expect("string map serialises")
    }

    pub fn len(&self) -> usize {
        self.titles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.titles.is_empty()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.titles.contains_key(&id)
    }

    pub fn title(&self, id: u32) -> Option<&str> {
        self.titles.get(&id).map(String::as_str)
    }

    pub fn max_id(&self) -> u32 {
        self.titles.keys().next_back().copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.titles.iter().map(|(&id, t)| (id, t.as_str()))
    }

    /// The item that stands for `id`'s title (itself unless an earlier id has the same title).
    pub fn canonical_id(&self, id: u32) -> u32 {
        self.titles.get(&id).and_then(|t| self.canonical.get(t)).copied().unwrap_or(id)
    }

    /// The item with exactly this (cleaned) title, if any.
    pub fn lookup_title(&self, title: &str) -> Option<u32> {
        self.canonical.get(&clean_title(title)).copied()
    }

    /// One id per distinct title, ascending: the candidate set every ranking is drawn from.
    pub fn grounding_ids(&self) -> Vec<u32> {
        self.titles.keys().copied().filter(|&id| self.canonical_id(id) == id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entities_and_resolves_duplicates_to_smallest_id() {
        let path = Path::new("id2name.json");
        let cat = Catalog::parse(
            path,
            r#"{"3": "Tom &amp; Jerry", "1": "A", "7": "Tom & Jerry ", "2": "&quot;Star Trek&quot; Memories"}"#,
        )
        .unwrap();
        assert_eq!(cat.title(3), Some("Tom & Jerry"));
        assert_eq!(cat.title(2), Some("\"Star Trek\" Memories"));
        assert_eq!(cat.canonical_id(7), 3);
        assert_eq!(cat.canonical_id(3), 3);
        assert_eq!(cat.lookup_title("Tom &amp; Jerry"), Some(3));
        assert_eq!(cat.grounding_ids(), vec![1, 2, 3]);
    }

    #[test]
    fn bad_key_names_its_line() {
        let err = Catalog::parse(Path::new("x.json"), "{\n\"1\": \"a\",\n\"b\": \"c\"\n}").unwrap_err();
        assert!(err.to_string().starts_with("x.json:3:"), "{err}");
        let err = Catalog::parse(Path::new("x.json"), "{\n\"1\": \"a\",\n\"2\" \"c\"\n}").unwrap_err();
        assert!(err.to_string().starts_with("x.json:3:"), "{err}");
    }

    #[test]
    fn embedded_books_catalog_has_known_counts() {
        let cat = Catalog::parse(Path::new("id2name.json"), crate::data::embedded::AMAZON_BOOKS_ITEMS).unwrap();
        assert_eq!(cat.len(), 6344);
        assert_eq!(cat.max_id(), 6344);
        // The data README counts 9 titles that duplicate another.
        assert_eq!(cat.len() - cat.grounding_ids().len(), 9);
        assert!(cat.iter().all(|(_, t)| !t.contains("&amp;") && !t.contains("&quot;")));
    }
}
