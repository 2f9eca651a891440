//! One config error, naming the file, the position where known, and the offending key.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path such as `policy[2].window` or `route[1].upstream`; empty when the error
    /// is not about one key (unreadable file, TOML syntax).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn io(path: &Path, err: &std::io::Error) -> Self {
        ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
        }
    }
}

// Messages quote what the config file (or the environment) says, and the file may come from
// someone other than the operator reading the message: an escape sequence in a policy name must
// not reach a terminal raw, and a 100 KB `${...}` name must not become a 100 KB log line. Every
// message goes through `Display`, so sanitizing there covers every check, serde's own messages
// included, without each call site having to remember.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            Inert::new(&self.file.display().to_string(), MAX_PATH_CHARS)
        )?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        let message = Inert::new(&self.message, MAX_MESSAGE_CHARS);
        if self.key.is_empty() {
            write!(f, ": {message}")
        } else {
            write!(
                f,
                ": key `{}`: {message}",
                Inert::new(&self.key, MAX_KEY_CHARS)
            )
        }
    }
}

/// Longest quoted value (between backticks or double quotes) shown whole; longer ones are cut.
const MAX_QUOTED_CHARS: usize = 100;
const MAX_KEY_CHARS: usize = 160;
const MAX_PATH_CHARS: usize = 512;
const MAX_MESSAGE_CHARS: usize = 600;

/// Text made safe to print: control and bidirectional-formatting characters escaped as
/// `\u{..}`, quoted values longer than `MAX_QUOTED_CHARS` cut, the whole cut at `max` characters.
/// A cut says how many characters it left out, so the operator knows the value was longer.
struct Inert<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Inert<'a> {
    fn new(text: &'a str, max: usize) -> Self {
        Inert { text, max }
    }
}

/// Characters that change how a terminal shows what follows: C0/C1 controls (ESC starts the
/// escape sequences, BEL ends OSC titles) and the Unicode bidi overrides ("Trojan Source").
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Inert<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0usize;
        // The quote character that opened the value being written, and its length so far.
        let mut open: Option<(char, usize)> = None;
        let mut chars = self.text.chars();
        while let Some(c) = chars.next() {
            if shown >= self.max {
                let rest = 1 + chars.count();
                return write!(f, "... ({rest} more characters)");
            }
            match open {
                Some((q, _)) if c == q => open = None,
                Some((q, len)) if len >= MAX_QUOTED_CHARS => {
                    // Skip to the closing quote (or the end), saying how much was left out.
                    let mut skipped = 1usize;
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == q {
                            closed = true;
                            break;
                        }
                        skipped += 1;
                    }
                    write!(f, "...({skipped} more)")?;
                    shown += 3;
                    if !closed {
                        return Ok(());
                    }
                    open = None;
                    write!(f, "{q}")?;
                    shown += 1;
                    continue;
                }
                Some((q, len)) => open = Some((q, len + 1)),
                None if c == '`' || c == '"' => open = Some((c, 0)),
                None => {}
            }
            if unsafe_char(c) {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                write!(f, "{c}")?;
            }
            shown += 1;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str, max: usize) -> String {
        Inert::new(text, max).to_string()
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            shown("name \"a\u{1b}]0;pwned\u{7}\" here", 200),
            "name \"a\\u{1b}]0;pwned\\u{7}\" here"
        );
        assert_eq!(
            shown("x\u{202e}y\nz\u{9b}", 200),
            "x\\u{202e}y\\u{a}z\\u{9b}"
        );
        assert_eq!(shown("plain `ok` é", 200), "plain `ok` é");
    }

    #[test]
    fn long_quoted_values_are_cut_and_the_rest_kept() {
        let long = "A".repeat(100_000);
        let out = shown(&format!("environment variable `{long}` is not set"), 600);
        assert!(out.len() < 250, "{out}");
        assert!(
            out.starts_with(&format!("environment variable `{}...", "A".repeat(100))),
            "{out}"
        );
        assert!(out.ends_with("...(99900 more)` is not set"), "{out}");
        // An unterminated quote is cut too.
        let out = shown(&format!("bad \"{long}"), 600);
        assert!(out.len() < 150, "{out}");
    }

    #[test]
    fn the_whole_text_is_bounded() {
        let out = shown(&"word ".repeat(1000), 600);
        assert!(out.chars().count() < 640, "{out}");
        assert!(out.ends_with("(4400 more characters)"), "{out}");
    }

    #[test]
    fn display_sanitizes_key_and_path() {
        let e = ConfigError {
            file: PathBuf::from("/tmp/a\u{1b}b.toml"),
            line: Some(3),
            column: Some(1),
            key: "route.\u{7}x".into(),
            message: "m\u{1b}".into(),
        };
        let out = e.to_string();
        assert!(!out.chars().any(unsafe_char), "{out:?}");
        assert_eq!(
            out,
            "/tmp/a\\u{1b}b.toml:3:1: key `route.\\u{7}x`: m\\u{1b}"
        );
    }
}
