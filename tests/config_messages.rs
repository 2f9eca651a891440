//! Config error messages quote what the file says, and the file may be written by someone other
//! than the operator reading the message: control characters must arrive escaped and long values
//! cut, through the real binary's `check` and `run`.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output};

fn check(config: &str) -> Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(["check", "--config"])
        .arg(file.path())
        .env_remove("RATEGATE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// Bytes that make a terminal do something: C0 controls but newline, DEL, and the UTF-8 of the C1
/// controls (U+0080..U+009F) and of the bidi overrides.
fn terminal_controls(out: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out);
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(0xff))
        .collect()
}

const ROUTE: &str = "[[route]]\nname = \"r\"\nrespond = { status = 200 }\n";

#[test]
fn an_escape_sequence_in_a_policy_name_is_escaped() {
    let out = check(&format!(
        "{ROUTE}[[policy]]\nname = \"p\\u001b]0;pwned\\u0007\\u009b2J\\u202e\"\n\
         algorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\n"
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(terminal_controls(&out.stderr), Vec::<u8>::new(), "{err:?}");
    assert!(err.contains("policy[0].name"), "{err}");
    assert!(
        err.contains(r"p\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}"),
        "{err}"
    );
}

#[test]
fn an_escape_sequence_in_an_enum_word_is_escaped() {
    let out = check(&format!(
        "[store]\nkind = \"memory\"\non_error = \"\\u001b[2J\\u001b[31mretry\"\n{ROUTE}"
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(terminal_controls(&out.stderr), Vec::<u8>::new(), "{err:?}");
    assert!(err.contains(r"\u{1b}[2J\u{1b}[31mretry"), "{err}");
    // The useful part of the message survives.
    assert!(
        err.contains("expected one of `fallback`, `allow`, `deny`"),
        "{err}"
    );
}

#[test]
fn a_huge_unset_variable_name_gives_a_short_message() {
    let name = "A".repeat(100_000);
    let out = check(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"${{{name}}}\"\n{ROUTE}"
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.len() < 1000,
        "{} bytes: {}",
        err.len(),
        &err[..err.len().min(400)]
    );
    assert!(err.contains("admin.token"), "{err}");
    assert!(err.contains("is not set"), "{err}");
    assert!(err.contains("more)"), "the cut is said: {err}");
}

#[test]
fn a_long_unknown_key_is_cut() {
    let key = "k".repeat(5000);
    let out = check(&format!("{ROUTE}[server]\n{key} = 1\n"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.len() < 1500, "{} bytes", err.len());
    assert!(err.contains("unknown field"), "{err}");
}
