//! Turning byte spans of the config text into what an operator needs: a 1-based line and column
//! and the dotted key path (`route[1].policies`, `store.on_error`).
//!
//! The key path is recovered from the span alone, by walking the spanned TOML tree for the
//! smallest key or value that encloses it. That way TOML's own errors (unknown key, bad type,
//! missing key) and our semantic errors name keys the same way without threading a path through
//! every check.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigError;

/// The text being compiled and the file it came from.
pub(crate) struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Source { path, text }
    }

    /// An error at `span`; `key` overrides the key path found from the span.
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigError {
        let position = span.as_ref().map(|s| line_col(self.text, s.start));
        let key = key
            .or_else(|| span.and_then(|s| key_path_at(self.text, &s)))
            .unwrap_or_default();
        ConfigError {
            file: self.path.to_path_buf(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            key,
            message,
        }
    }

    /// A TOML syntax or deserialization error. Syntax errors name no key: the text there is not
    /// a key/value yet, so the key path is only looked up when the document parses.
    pub(crate) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let message = err.message().trim().to_owned();
        self.error(err.span(), None, message)
    }

    /// 1-based line of a byte offset, for messages that refer to another place in the file.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped to the last character boundary before them.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted path of the key whose key or value most tightly encloses `span`, or `None` when the
/// text does not parse (then the error is about syntax, not about a key).
pub(crate) fn key_path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut best = Best::default();
    walk_table(root.get_ref(), "", span, &mut best);
    best.path
}

/// The tightest enclosing candidate so far; on equal spans the deeper path wins, so a
/// `[[route]]` header names `route[1]` rather than `route`.
#[derive(Default)]
struct Best {
    len: usize,
    depth: usize,
    path: Option<String>,
}

impl Best {
    fn consider(&mut self, candidate: Range<usize>, target: &Range<usize>, path: &str) {
        let encloses = candidate.start <= target.start && target.end <= candidate.end;
        if !encloses || path.is_empty() {
            return;
        }
        let len = candidate.end - candidate.start;
        let depth = path.matches(['.', '[']).count();
        let better = match self.path {
            None => true,
            Some(_) => len < self.len || (len == self.len && depth > self.depth),
        };
        if better {
            *self = Best {
                len,
                depth,
                path: Some(path.to_owned()),
            };
        }
    }
}

fn walk_table(table: &DeTable<'_>, prefix: &str, target: &Range<usize>, best: &mut Best) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        best.consider(key.span(), target, &path);
        walk_value(value, &path, target, best);
    }
}

/// Array elements are indexed only when they are tables (`route[1]`); a scalar inside an array
/// is reported as its key (`route[1].policies`), with the column pointing at the element.
fn walk_value(value: &Spanned<DeValue<'_>>, path: &str, target: &Range<usize>, best: &mut Best) {
    best.consider(value.span(), target, path);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, target, best),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                if item.get_ref().is_table() {
                    walk_value(item, &format!("{path}[{index}]"), target, best);
                } else {
                    walk_value(item, path, target, best);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> Option<String> {
        let start = text.find(needle).unwrap();
        key_path_at(text, &(start..start + needle.len()))
    }

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        let quote = text.find('"').unwrap();
        assert_eq!(line_col(text, quote), (2, 6));
        assert_eq!(line_col(text, 999), (3, 1));
        assert_eq!(line_col(text, 8), (2, 2), "inside a character");
    }

    #[test]
    fn finds_key_paths() {
        let text =
            "[store]\non_error = \"x\"\n\n[[route]]\nname = \"a\"\n\n[[route]]\nname = \"b\"\n\
                    policies = [\"p\", \"q\"]\nrespond = { status = 99 }\n";
        assert_eq!(path_of(text, "\"x\"").as_deref(), Some("store.on_error"));
        assert_eq!(path_of(text, "on_error").as_deref(), Some("store.on_error"));
        assert_eq!(path_of(text, "\"q\"").as_deref(), Some("route[1].policies"));
        assert_eq!(
            path_of(text, "99").as_deref(),
            Some("route[1].respond.status")
        );
        assert_eq!(path_of(text, "\"b\"").as_deref(), Some("route[1].name"));
        let second_header = text.rfind("[[route]]").unwrap();
        let span = second_header..second_header + 9;
        assert_eq!(key_path_at(text, &span).as_deref(), Some("route[1]"));
    }

    #[test]
    fn syntax_errors_have_no_key() {
        assert_eq!(key_path_at("a = \n", &(4..4)), None);
    }
}
