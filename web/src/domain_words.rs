//! The page's words for the shipped dataset's items ("book", "movie", ...), so an export of
//! MovieLens does not speak of books.

use soft_core::data::prompt::Domain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    pub item: &'static str,
    pub items: &'static str,
    /// What a user did with an item, in the past tense: "read", "watched".
    pub consumed: &'static str,
}

impl Words {
    pub fn of(domain: Domain) -> Self {
        match domain {
            Domain::Books => Words { item: "book", items: "books", consumed: "read" },
            Domain::Movies => Words { item: "movie", items: "movies", consumed: "watched" },
            Domain::Games => Words { item: "game", items: "games", consumed: "played" },
            Domain::Generic => Words { item: "item", items: "items", consumed: "chose" },
        }
    }

    /// `n` items: "1 book", "3 books".
    pub fn count(self, n: usize) -> String {
        format!("{n} {}", if n == 1 { self.item } else { self.items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_the_datasets_words() {
        assert_eq!(Words::of(Domain::Movies).count(1), "1 movie");
        assert_eq!(Words::of(Domain::Books).count(3), "3 books");
        assert_eq!(Words::of(Domain::Movies).consumed, "watched");
    }
}
