//! `${NAME}` substitution in config string values.
//!
//! Substitution runs on values after TOML parsing, never on the raw text, so an environment value
//! can never inject TOML (a `"` or a newline in a secret stays part of that one string). Values
//! are not re-scanned after substitution: a `${...}` inside an environment value stays literal.
//! `$${` writes a literal `${`; any other `$` is kept as is.

use std::env::VarError;
use std::fmt;

/// Where variable values come from: the process environment in production, a map in tests.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvError {
    Unset(String),
    NotUnicode(String),
    BadName(String),
    Unterminated,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Unset(name) => write!(f, "environment variable `{name}` is not set"),
            EnvError::NotUnicode(name) => {
                write!(f, "environment variable `{name}` is not valid UTF-8")
            }
            EnvError::BadName(name) => write!(
                f,
                "invalid environment variable name `{name}` in `${{...}}`; names are letters, \
                 digits and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
            ),
            EnvError::Unterminated => write!(
                f,
                "unterminated `${{`; expected `${{NAME}}` (write `$${{` for a literal `${{`)"
            ),
        }
    }
}

impl std::error::Error for EnvError {}

/// Replace every `${NAME}` in `value` with the variable's value.
pub(crate) fn expand(value: &str, lookup: Lookup<'_>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(EnvError::Unterminated)?;
            out.push_str(&variable(&tail[..end], lookup)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn variable(name: &str, lookup: Lookup<'_>) -> Result<String, EnvError> {
    if !is_valid_name(name) {
        return Err(EnvError::BadName(name.to_owned()));
    }
    lookup(name).map_err(|e| match e {
        VarError::NotPresent => EnvError::Unset(name.to_owned()),
        VarError::NotUnicode(_) => EnvError::NotUnicode(name.to_owned()),
    })
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &str) -> Result<String, VarError> {
        match name {
            "TOKEN" => Ok("s3cret".into()),
            "EMPTY" => Ok(String::new()),
            "NESTED" => Ok("${TOKEN}\"\n[evil]".into()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn run(value: &str) -> Result<String, EnvError> {
        expand(value, &fake)
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(run("${TOKEN}").as_deref(), Ok("s3cret"));
        assert_eq!(
            run("redis://:${TOKEN}@h/0").as_deref(),
            Ok("redis://:s3cret@h/0")
        );
        assert_eq!(run("${TOKEN}${TOKEN}").as_deref(), Ok("s3crets3cret"));
        assert_eq!(run("a${EMPTY}b").as_deref(), Ok("ab"));
        assert_eq!(run("plain").as_deref(), Ok("plain"));
    }

    #[test]
    fn values_are_not_rescanned() {
        assert_eq!(run("${NESTED}").as_deref(), Ok("${TOKEN}\"\n[evil]"));
    }

    #[test]
    fn escapes_and_lone_dollars_stay_literal() {
        assert_eq!(run("$${TOKEN}").as_deref(), Ok("${TOKEN}"));
        assert_eq!(run("cost: $5 $").as_deref(), Ok("cost: $5 $"));
        assert_eq!(run("$$x").as_deref(), Ok("$$x"));
        assert_eq!(run("$$${TOKEN}").as_deref(), Ok("$${TOKEN}"));
    }

    #[test]
    fn reports_what_is_wrong() {
        assert_eq!(run("${NOPE}"), Err(EnvError::Unset("NOPE".into())));
        assert_eq!(run("${}"), Err(EnvError::BadName(String::new())));
        assert_eq!(run("${1A}"), Err(EnvError::BadName("1A".into())));
        assert_eq!(run("${A-B}"), Err(EnvError::BadName("A-B".into())));
        assert_eq!(run("x${TOKEN"), Err(EnvError::Unterminated));
        let message = EnvError::Unset("RATEGATE_ADMIN_TOKEN".into()).to_string();
        assert_eq!(
            message,
            "environment variable `RATEGATE_ADMIN_TOKEN` is not set"
        );
    }
}
