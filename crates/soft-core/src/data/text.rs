//! Reading text files line by line with UTF-8 checked per line, so a bad byte is reported
//! with its file and line instead of as a whole-file failure.

use std::path::Path;

use crate::{Error, Result};

pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The file's lines (1-based numbers), each checked to be UTF-8. A trailing `\r` is dropped.
pub fn utf8_lines<'a>(path: &'a Path, bytes: &'a [u8]) -> impl Iterator<Item = Result<(usize, &'a str)>> + 'a {
    bytes.split(|&b| b == b'\n').enumerate().filter_map(move |(i, raw)| {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return None;
        }
        Some(match std::str::from_utf8(raw) {
            Ok(s) => Ok((i + 1, s)),
            Err(e) => Err(Error::parse(path, i + 1, format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()))),
        })
    })
}

/// Checks a whole file is UTF-8, naming the first bad line.
pub fn utf8_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Error::parse(path, line, "invalid UTF-8"))
        }
    }
}

/// `text` as quoted in an error message: at most 60 characters, so a corrupt 10 MB field gives a
/// readable message.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}
