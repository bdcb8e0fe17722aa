//! RecBole atomic files (`NAME.inter` and `NAME.item`, tab-separated, typed headers such as
//! `item_id:token`), e.g. MovieLens-100k from the `recbole` wheel. Ratings count as interactions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::interactions::{k_core, number_items, windows, Interaction};
use crate::data::text::{excerpt, read_bytes, utf8_lines};
use crate::data::{Catalog, Window};
use crate::{Error, Result};

/// A tab-separated atomic file: the column index of each header field, keyed by name (the
/// part before `:`), and the remaining lines.
struct Atomic<'a> {
    path: &'a Path,
    columns: HashMap<String, usize>,
    lines: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Atomic<'a> {
    fn parse(path: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let mut lines = utf8_lines(path, bytes);
        let (_, header) = lines.next().transpose()?.ok_or_else(|| Error::format(path, "empty file"))?;
        let columns = header
            .split('\t')
            .enumerate()
            .map(|(i, h)| (h.split(':').next().unwrap_or(h).trim().to_string(), i))
            .collect();
        let lines = lines.map(|l| l.map(|(n, text)| (n, text.split('\t').collect()))).collect::<Result<_>>()?;
        Ok(Self { path, columns, lines })
    }

    fn column(&self, names: &[&str]) -> Result<usize> {
        names
            .iter()
            .find_map(|n| self.columns.get(*n).copied())
            .ok_or_else(|| Error::parse(self.path, 1, format!("missing column `{}`", names[0])))
    }

    fn field(&self, n: usize, fields: &[&'a str], col: usize) -> Result<&'a str> {
        fields.get(col).copied().ok_or_else(|| {
            Error::parse(
                self.path,
                n,
                format!("expected at least {} tab-separated fields, found {}", col + 1, fields.len()),
            )
        })
    }
}

/// MovieLens writes "Usual Suspects, The"; prompts read better as "The Usual Suspects".
fn natural_title(raw: &str) -> String {
    for article in ["The", "A", "An"] {
        let suffix = format!(", {article}");
        if let Some(stem) = raw.strip_suffix(&suffix) {
            return format!("{article} {stem}");
        }
    }
    raw.to_string()
}

pub fn load_items(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = read_bytes(path)?;
    let file = Atomic::parse(path, &bytes)?;
    let (id, title) = (file.column(&["item_id"])?, file.column(&["movie_title", "title", "item_name", "name"])?);
    let year = file.columns.get("release_year").copied();
    let mut titles = HashMap::new();
    for (n, fields) in &file.lines {
        let mut t = natural_title(file.field(*n, fields, title)?.trim());
        if let Some(y) = year.and_then(|c| fields.get(c)).map(|y| y.trim()).filter(|y| !y.is_empty()) {
            t = format!("{t} ({y})");
        }
        if !t.trim().is_empty() {
            titles.insert(file.field(*n, fields, id)?.trim().to_string(), t);
        }
    }
    Ok(titles)
}

pub fn load_inter(path: &Path) -> Result<Vec<Interaction>> {
    let bytes = read_bytes(path)?;
    let file = Atomic::parse(path, &bytes)?;
    let (u, i, t) = (file.column(&["user_id"])?, file.column(&["item_id"])?, file.column(&["timestamp"])?);
    file.lines
        .iter()
        .map(|(n, fields)| {
            let ts = file.field(*n, fields, t)?;
            let timestamp = ts
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| Error::parse(path, *n, format!("timestamp `{}` is not a number", excerpt(ts))))?;
            Ok(Interaction {
                user: file.field(*n, fields, u)?.trim().to_string(),
                item: file.field(*n, fields, i)?.trim().to_string(),
                timestamp,
            })
        })
        .collect()
}

/// The `.inter` and `.item` files of a directory (one of each).
pub fn find_files(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    let with = |ext: &str| entries.iter().find(|p| p.extension().is_some_and(|e| e == ext)).cloned();
    Some((with("inter")?, with("item")?))
}

pub fn load(inter: &Path, item: &Path, k: usize) -> Result<(Catalog, Vec<Window>)> {
    let titles = load_items(item)?;
    let mut rows = load_inter(inter)?;
    rows.retain(|r| titles.contains_key(&r.item));
    let rows = k_core(rows, k);
    if rows.is_empty() {
        return Err(Error::format(inter, format!("no interactions left after {k}-core filtering")));
    }
    let (ids, catalog) = number_items(&rows, &titles);
    Ok((catalog, windows(&rows, &ids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_files_become_windows_with_natural_titles() {
        let dir = std::env::temp_dir().join(format!("soft-recbole-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let item = dir.join("toy.item");
        let inter = dir.join("toy.inter");
        std::fs::write(&item, "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tUsual Suspects, The\t1995\tCrime\n2\tHeat\t1995\tCrime\n").unwrap();
        std::fs::write(
            &inter,
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t2\t4\t881250950\n7\t1\t3\t881250949\n",
        )
        .unwrap();
        let (cat, w) = load(&inter, &item, 1).unwrap();
        assert_eq!(cat.title(1), Some("The Usual Suspects (1995)"));
        assert_eq!(w[0].items, vec![1, 2]);
        assert_eq!(find_files(&dir), Some((inter.clone(), item.clone())));

        std::fs::write(&inter, "user_id:token\trating:float\ttimestamp:float\n7\t4\t1\n").unwrap();
        assert!(load(&inter, &item, 1).unwrap_err().to_string().ends_with("toy.inter:1: missing column `item_id`"));
        std::fs::write(&inter, "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t2\n").unwrap();
        assert!(load(&inter, &item, 1)
            .unwrap_err()
            .to_string()
            .ends_with("toy.inter:2: expected at least 4 tab-separated fields, found 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real MovieLens-100k from the recbole wheel, when `scripts/fetch-ml100k.sh` has run.
    #[test]
    fn real_ml100k_when_fetched() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ml-100k");
        let Some((inter, item)) = crate::test_assets::present_or_required(&dir.display().to_string(), find_files(&dir))
        else {
            return;
        };
        assert_eq!(load_inter(&inter).unwrap().len(), 100_000);
        let (cat, w) = load(&inter, &item, 10).unwrap();
        assert!(cat.len() > 1000 && cat.len() <= 1682, "{}", cat.len());
        assert!(w.len() > 80_000);
        assert!(w.windows(2).all(|p| p[0].timestamp <= p[1].timestamp));
    }
}
