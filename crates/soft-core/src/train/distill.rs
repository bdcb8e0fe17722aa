//! Stage 2 of SOFT, self-distillation: the SFT model writes, by beam search, an answer for
//! every TRAINING prompt; the top beam's raw text is the example's distilled target. The
//! auxiliary dataset keeps the prompts' order and count.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::text::{read_bytes, utf8_lines};
use crate::data::{prompt, Catalog, Window};
use crate::eval::llm::{generate_answers, Grounder, LlmRecommender};
use crate::{Error, Result};

/// One line of the auxiliary dataset (JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distilled {
    pub prompt: String,
    pub target: u32,
    /// The real response, `"Title"`.
    pub real: String,
    /// The SFT model's top beam, raw (not snapped to an item).
    pub distilled: String,
    /// Whether the distilled text grounds (nearest item) to the real target.
    pub grounds_to_target: bool,
}

/// The auxiliary dataset for `windows`, in their order.
pub fn distill(rec: &LlmRecommender, catalog: &Catalog, windows: &[Window]) -> Result<Vec<Distilled>> {
    let prompts: Vec<String> = windows.iter().map(|w| rec.prompt_of(catalog, w.history())).collect::<Result<_>>()?;
    let answers = generate_answers(rec.tuned, rec.tokenizer, rec.special, &prompts, &rec.beam)?;
    let nearest = nearest_items(rec.grounder, rec, &answers)?;
    Ok(prompts
        .into_iter()
        .zip(answers)
        .zip(nearest)
        .zip(windows)
        .map(|(((prompt, distilled), nearest), w)| Distilled {
            prompt,
            target: w.target(),
            real: prompt::response(catalog.title(w.target()).unwrap_or_default()),
            distilled,
            grounds_to_target: nearest == catalog.canonical_id(w.target()),
        })
        .collect())
}

fn nearest_items(grounder: &Grounder, rec: &LlmRecommender, answers: &[String]) -> Result<Vec<u32>> {
    let ranked = grounder.rank(rec.base, rec.tokenizer, rec.special, answers, 1)?;
    Ok(ranked.into_iter().map(|r| r.first().copied().unwrap_or(0)).collect())
}

pub fn to_jsonl(rows: &[Distilled]) -> String {
    rows.iter().map(|r| serde_json::to_string(r).expect("row serialises") + "\n").collect()
}

pub fn load_jsonl(path: &Path) -> Result<Vec<Distilled>> {
    let bytes = read_bytes(path)?;
    let rows = utf8_lines(path, &bytes)
        .map(|line| {
            let (n, text) = line?;
            serde_json::from_str(text).map_err(|e| Error::parse(path, n, format!("not a distilled example: {e}")))
        })
        .collect::<Result<Vec<Distilled>>>()?;
    if rows.is_empty() {
        return Err(Error::format(path, "no distilled examples"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips_and_bad_lines_are_named() {
        let rows = vec![
            Distilled {
                prompt: "p1".into(),
                target: 3,
                real: "\"A\"".into(),
                distilled: "\"B\"".into(),
                grounds_to_target: false,
            },
            Distilled {
                prompt: "p2".into(),
                target: 1,
                real: "\"C\"".into(),
                distilled: "\"C\"".into(),
                grounds_to_target: true,
            },
        ];
        let path = std::env::temp_dir().join(format!("soft-distill-{}.jsonl", std::process::id()));
        std::fs::write(&path, to_jsonl(&rows)).unwrap();
        assert_eq!(load_jsonl(&path).unwrap(), rows);
        std::fs::write(&path, to_jsonl(&rows) + "{\"prompt\": 1}\n").unwrap();
        assert!(load_jsonl(&path).unwrap_err().to_string().contains(".jsonl:3: not a distilled example"));
        std::fs::remove_file(&path).unwrap();
    }
}
