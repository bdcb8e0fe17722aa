//! From raw interactions to windows: iterative k-core filtering, per-user time order, sliding
//! windows of 11, all windows sorted by the time of their target. Shared by every raw format.

use std::collections::{BTreeMap, HashMap};

use crate::data::catalog::Catalog;
use crate::data::windows::{Window, WINDOW_LEN};

/// One raw interaction; `item` is the source's own key (ASIN, RecBole token...).
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub user: String,
    pub item: String,
    pub timestamp: f64,
}

/// Keeps removing interactions of users and items with fewer than `k` of them until every
/// remaining user and item has at least `k`.
pub fn k_core(mut rows: Vec<Interaction>, k: usize) -> Vec<Interaction> {
    loop {
        let mut users: HashMap<&str, usize> = HashMap::new();
        let mut items: HashMap<&str, usize> = HashMap::new();
        for r in &rows {
            *users.entry(&r.user).or_default() += 1;
            *items.entry(&r.item).or_default() += 1;
        }
        let keep: Vec<bool> = rows.iter().map(|r| users[r.user.as_str()] >= k && items[r.item.as_str()] >= k).collect();
        if keep.iter().all(|&k| k) {
            return rows;
        }
        let mut flags = keep.into_iter();
        rows.retain(|_| flags.next().unwrap_or(false));
    }
}

/// Numbers items 1..N (numeric keys keep their value when every key is a positive integer,
/// else keys are numbered in sorted order) and builds the catalog from `titles`.
pub fn number_items(rows: &[Interaction], titles: &HashMap<String, String>) -> (HashMap<String, u32>, Catalog) {
    let keys: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.item.as_str()).collect();
    let numeric: Option<Vec<(u32, &str)>> =
        keys.iter().map(|k| k.parse::<u32>().ok().filter(|&n| n > 0).map(|n| (n, *k))).collect();
    let ids: HashMap<String, u32> = match numeric {
        Some(pairs) => pairs.into_iter().map(|(n, k)| (k.to_string(), n)).collect(),
        None => keys.iter().enumerate().map(|(i, k)| (k.to_string(), i as u32 + 1)).collect(),
    };
    let catalog = Catalog::from_titles(ids.iter().map(|(k, &id)| (id, titles[k].clone())));
    (ids, catalog)
}

/// Sliding windows of `WINDOW_LEN` over each user's time-sorted items (a user with fewer
/// items gives one shorter window), sorted by target time; ties keep user then position order.
pub fn windows(rows: &[Interaction], ids: &HashMap<String, u32>) -> Vec<Window> {
    let mut by_user: BTreeMap<&str, Vec<(f64, u32)>> = BTreeMap::new();
    for r in rows {
        by_user.entry(&r.user).or_default().push((r.timestamp, ids[&r.item]));
    }
    let mut out = Vec::new();
    for (user, mut seq) in by_user {
        seq.sort_by(|a, b| a.0.total_cmp(&b.0));
        if seq.len() < 2 {
            continue;
        }
        let starts = if seq.len() <= WINDOW_LEN { 0..1 } else { 0..seq.len() - WINDOW_LEN + 1 };
        for s in starts {
            let part = &seq[s..(s + WINDOW_LEN).min(seq.len())];
            out.push(Window {
                user: user.to_string(),
                items: part.iter().map(|p| p.1).collect(),
                timestamp: part.last().map(|p| p.0 as i64).unwrap_or_default(),
            });
        }
    }
    out.sort_by_key(|w| w.timestamp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(u: &str, i: &str, t: f64) -> Interaction {
        Interaction { user: u.into(), item: i.into(), timestamp: t }
    }

    #[test]
    fn k_core_iterates_until_stable() {
        // With k = 2: item "z" has one interaction; removing it leaves user "c" with one,
        // whose removal leaves item "y" with one, and so on: only the a/b x/w block survives.
        let rows = vec![
            row("a", "x", 1.0),
            row("a", "w", 2.0),
            row("b", "x", 3.0),
            row("b", "w", 4.0),
            row("c", "y", 5.0),
            row("c", "z", 6.0),
            row("d", "y", 7.0),
            row("d", "x", 8.0),
        ];
        let kept = k_core(rows, 2);
        let mut users: Vec<&str> = kept.iter().map(|r| r.user.as_str()).collect();
        users.dedup();
        // d keeps x (x has a, b, d) but loses y once c goes; then d has 1 -> removed.
        assert_eq!(users, vec!["a", "b"]);
        assert_eq!(kept.len(), 4);
        assert!(k_core(kept.clone(), 3).is_empty());
    }

    #[test]
    fn windows_slide_over_long_users_and_sort_by_time() {
        let mut rows: Vec<Interaction> = (0..13).map(|t| row("long", &format!("{}", t + 1), t as f64 * 10.0)).collect();
        rows.push(row("short", "1", 1.0));
        rows.push(row("short", "2", 2.0));
        rows.push(row("single", "3", 0.5));
        let titles = (1..=13).map(|i| (i.to_string(), format!("t{i}"))).collect();
        let (ids, _) = number_items(&rows, &titles);
        let w = windows(&rows, &ids);
        assert_eq!(w.len(), 1 + 3);
        assert_eq!(w[0].user, "short");
        assert_eq!(w[0].items, vec![1, 2]);
        assert_eq!(w[1].items, (1..=11).collect::<Vec<_>>());
        assert_eq!(w[3].items, (3..=13).collect::<Vec<_>>());
        assert_eq!(w[3].timestamp, 120);
    }
}
