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

/// Everything up to and including `### Response:\n`; the model continues from there.
pub fn prompt(domain: Domain, history_titles: &[&str]) -> String {
    let quoted: Vec<String> = history_titles.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "{PREAMBLE}\n\n### Instruction:\n{}\n\n### Input:\n{}{}\n\n### Response:\n",
        domain.instruction(),
        domain.history_lead(),
        quoted.join(", ")
    )
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
    fn strips_generated_quotes() {
        assert_eq!(strip_response(" \"The Hobbit\"\n"), "The Hobbit");
        assert_eq!(strip_response("\"The Hobbit\" and more"), "The Hobbit");
        assert_eq!(strip_response("The Hobbit"), "The Hobbit");
    }
}
