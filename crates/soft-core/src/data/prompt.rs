//! The prompt a language model reads and the response it must write (Alpaca style, as in the
//! SOFT reference), with a history line and instruction per domain.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Books,
    Movies,
    Games,
    #[default]
    Generic,
}

impl Domain {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "books" => Self::Books,
            "movies" => Self::Movies,
            "games" => Self::Games,
            "generic" => Self::Generic,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Books => "books",
            Self::Movies => "movies",
            Self::Games => "games",
            Self::Generic => "generic",
        }
    }

    fn instruction(self) -> &'static str {
        match self {
            Self::Books => "Given a list of books the user has read before, please recommend a new book that the user likes to the user.",
            Self::Movies => "Given a list of movies the user has watched before, please recommend a new movie that the user likes to the user.",
            Self::Games => "Given a list of video games the user has played before, please recommend a new video game that the user likes to the user.",
            Self::Generic => "Given a list of items the user has interacted with before, please recommend a new item that the user likes to the user.",
        }
    }

    fn history_lead(self) -> &'static str {
        match self {
            Self::Books => "The user has read the following books before: ",
            Self::Movies => "The user has watched the following movies before: ",
            Self::Games => "The user has played the following video games before: ",
            Self::Generic => "The user has interacted with the following items before: ",
        }
    }
}

const PREAMBLE: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";

/// The text around the history: the reference's Alpaca prompt, or the ChatML turns of an Instruct
/// model such as SmolLM2, which was tuned on `<|im_start|>user ... <|im_end|>` and not on Alpaca.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Template {
    #[default]
    Alpaca,
    Chat,
}

/// The LLM-based recommender SOFT is applied to, i.e. what a history item is in the prompt:
/// BIGRec's title alone, or LLaRA's title followed by the item's collaborative embedding
/// (an item marker, [`item_marker`], which the model reads through its item projector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    #[default]
    Bigrec,
    Llara,
}

impl Backbone {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bigrec => "bigrec",
            Self::Llara => "llara",
        }
    }

    /// The name as the paper's tables write it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Bigrec => "BIGRec",
            Self::Llara => "LLaRA",
        }
    }

    /// A run's directory of the stage or method `dir` on this backbone: BIGRec's keep the
    /// stage's name (`sft`), the others are prefixed with theirs (`llara-sft`).
    pub fn run_dir(self, dir: &str) -> String {
        match self {
            Self::Bigrec => dir.to_string(),
            Self::Llara => format!("{}-{dir}", self.name()),
        }
    }
}

/// How a history becomes a prompt. The defaults are the paper's prompt: every history title,
/// whole, in the Alpaca template, BIGRec's titles only. Shorter prompts train faster on a CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptOptions {
    /// Missing in runs from before LLaRA: BIGRec.
    pub backbone: Backbone,
    pub template: Template,
    /// Only the last N titles of the history.
    pub history_len: Option<usize>,
    /// Each title cut to its first M tokens.
    pub title_tokens: Option<usize>,
}

impl PromptOptions {
    pub fn validate(&self) -> crate::Result<()> {
        for (name, v) in [("history_len", self.history_len), ("title_tokens", self.title_tokens)] {
            if v == Some(0) {
                return Err(crate::Error::config("prompt options", format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// The titles of `history` the prompt shows: the last `history_len` of them.
    pub fn recent<'a, T>(&self, history: &'a [T]) -> &'a [T] {
        let n = self.history_len.map_or(history.len(), |n| n.min(history.len()));
        &history[history.len() - n..]
    }
}

/// The prompt in `template`; the model continues from its end.
pub fn prompt_in(template: Template, domain: Domain, history_titles: &[&str]) -> String {
    prompt_with_items(template, domain, history_titles, None)
}

/// [`prompt_in`] for LLaRA when `items` (the history's item ids, one per title) are given: each
/// quoted title is followed by a space and its [`item_marker`], as the reference writes
/// `"Title" [HistoryEmb]`.
pub fn prompt_with_items(template: Template, domain: Domain, history_titles: &[&str], items: Option<&[u32]>) -> String {
    let entries: Vec<String> = history_titles
        .iter()
        .enumerate()
        .map(|(i, t)| match items.and_then(|items| items.get(i)) {
            Some(&id) => format!("\"{t}\" {}", item_marker(id)),
            None => format!("\"{t}\""),
        })
        .collect();
    let history = entries.join(", ");
    let (instruction, lead) = (domain.instruction(), domain.history_lead());
    match template {
        Template::Alpaca => {
            format!("{PREAMBLE}\n\n### Instruction:\n{instruction}\n\n### Input:\n{lead}{history}\n\n### Response:\n")
        }
        Template::Chat => {
            format!("<|im_start|>user\n{instruction}\n{lead}{history}<|im_end|>\n<|im_start|>assistant\n")
        }
    }
}

/// Everything up to and including `### Response:\n`; the model continues from there.
pub fn prompt(domain: Domain, history_titles: &[&str]) -> String {
    prompt_in(Template::Alpaca, domain, history_titles)
}

const MARKER_OPEN: &str = "<|item:";
const MARKER_CLOSE: &str = "|>";

/// Where item `id`'s collaborative embedding goes in a LLaRA prompt's text. Encoding the prompt
/// turns it into the item's slot, one position whose input embedding is the projected item
/// embedding ([`crate::model::projector`]); no title may contain the marker's opening.
pub fn item_marker(id: u32) -> String {
    format!("{MARKER_OPEN}{id}{MARKER_CLOSE}")
}

/// Whether `text` contains anything that reads as the start of an item marker.
pub fn has_item_marker(text: &str) -> bool {
    text.contains(MARKER_OPEN)
}

/// A piece of a prompt's text: plain text, or an item marker's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptPiece<'a> {
    Text(&'a str),
    Item(u32),
}

/// Splits a prompt's text at its item markers; a marker without a closing `|>` or a numeric id
/// is an error naming it (prompts are written by [`prompt_with_items`], or read from a file).
pub fn prompt_pieces(mut text: &str) -> crate::Result<Vec<PromptPiece<'_>>> {
    let mut pieces = Vec::new();
    while let Some(start) = text.find(MARKER_OPEN) {
        if start > 0 {
            pieces.push(PromptPiece::Text(&text[..start]));
        }
        let rest = &text[start + MARKER_OPEN.len()..];
        let bad = || {
            crate::Error::Input(format!(
                "malformed item marker in a prompt at `{}`",
                &text[start..].chars().take(24).collect::<String>()
            ))
        };
        let end = rest.find(MARKER_CLOSE).ok_or_else(bad)?;
        let id = rest[..end].parse::<u32>().map_err(|_| bad())?;
        pieces.push(PromptPiece::Item(id));
        text = &rest[end + MARKER_CLOSE.len()..];
    }
    if !text.is_empty() {
        pieces.push(PromptPiece::Text(text));
    }
    Ok(pieces)
}

/// The response the model is trained to write (EOS is appended by the tokenizer side).
pub fn response(title: &str) -> String {
    format!("\"{title}\"")
}

/// A generated response back to a title: surrounding quotes and white space stripped.
pub fn strip_response(text: &str) -> &str {
    let t = text.trim();
    let t = t.strip_prefix('"').unwrap_or(t);
    let t = t.split_once('"').map(|(a, _)| a).unwrap_or(t);
    t.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_prompt_is_byte_for_byte_the_reference() {
        let expected = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nGiven a list of books the user has read before, please recommend a new book that the user likes to the user.\n\n### Input:\nThe user has read the following books before: \"Title A\", \"Title B\", \"Title C\"\n\n### Response:\n";
        assert_eq!(prompt(Domain::Books, &["Title A", "Title B", "Title C"]), expected);
        assert_eq!(response("Target Title"), "\"Target Title\"");
    }

    #[test]
    fn domains_differ_only_in_their_phrases() {
        let movies = prompt(Domain::Movies, &["Heat"]);
        assert!(movies
            .contains("\n### Input:\nThe user has watched the following movies before: \"Heat\"\n\n### Response:\n"));
        assert!(prompt(Domain::Games, &["Doom"]).contains("recommend a new video game"));
        assert!(prompt(Domain::Generic, &["X"]).contains("interacted with the following items"));
        for d in ["books", "movies", "games", "generic"] {
            assert_eq!(Domain::parse(d).unwrap().name(), d);
        }
    }

    #[test]
    fn chat_template_and_shorter_histories() {
        let chat = prompt_in(Template::Chat, Domain::Books, &["A", "B"]);
        assert_eq!(
            chat,
            "<|im_start|>user\nGiven a list of books the user has read before, please recommend a new book that the \
             user likes to the user.\nThe user has read the following books before: \"A\", \"B\"<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(prompt_in(Template::Alpaca, Domain::Books, &["A"]), prompt(Domain::Books, &["A"]));
        let last2 = PromptOptions { history_len: Some(2), ..Default::default() };
        assert_eq!(last2.recent(&[1, 2, 3, 4]), &[3, 4]);
        assert_eq!(last2.recent(&[9]), &[9]);
        assert_eq!(PromptOptions::default().recent(&[1, 2, 3]), &[1, 2, 3]);
        let old: PromptOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(old, PromptOptions::default(), "configs without the options read as the paper's prompt");
    }

    #[test]
    fn strips_generated_quotes() {
        assert_eq!(strip_response(" \"The Hobbit\"\n"), "The Hobbit");
        assert_eq!(strip_response("\"The Hobbit\" and more"), "The Hobbit");
        assert_eq!(strip_response("The Hobbit"), "The Hobbit");
    }
}
