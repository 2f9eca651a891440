//! `[alerts]`: the webhook, its credentials, and when and how often to send.

use http::Uri;
use toml::Spanned;

use super::check::{bounded, later, Check, Issue, ALERT_QUEUE_SIZE_RANGE, ALERT_RETRIES_RANGE};
use super::validator::Validator;
use crate::config::compiled::{AlertSettings, AlertThreshold};
use crate::config::env;
use crate::config::file::{self, EnvString};

impl Validator<'_> {
    pub(super) fn alerts(&mut self, a: &file::Alerts) -> Option<AlertSettings> {
        let webhook = self.take(
            self.expand(&a.webhook_url)
                .and_then(|text| webhook_url(&a.webhook_url, &text)),
        );
        let token = match (&a.token, &a.token_env) {
            (None, None) => Some(None),
            (Some(token), Some(name)) => {
                self.issues.push(Issue::at(
                    &later(token, name),
                    "set either `token` or `token_env`, not both",
                ));
                None
            }
            (Some(token), None) => self.take(self.non_empty(token)).map(Some),
            (None, Some(name)) => self.take(self.token_env(name)).map(Some),
        };
        let rejections = match &a.rejections_threshold {
            None => Some(None),
            Some(n) => self.take(bounded::<u64>(n, 1..=u64::MAX)).map(Some),
        };
        if let (Some(window), None) = (&a.threshold_window, &a.rejections_threshold) {
            self.issues.push(Issue::at(
                window,
                "`threshold_window` needs `rejections_threshold` (alert after N rejections of \
                 one client within the window)",
            ));
        }
        let window = a
            .threshold_window
            .as_ref()
            .map_or(file::DEFAULT_THRESHOLD_WINDOW, |w| w.get_ref().0);
        let max_retries = self.take(
            a.max_retries
                .as_ref()
                .map_or(Ok(file::DEFAULT_ALERT_MAX_RETRIES), |v| {
                    bounded(v, ALERT_RETRIES_RANGE)
                }),
        );
        let queue_size = self.take(
            a.queue_size
                .as_ref()
                .map_or(Ok(file::DEFAULT_ALERT_QUEUE_SIZE), |v| {
                    bounded(v, ALERT_QUEUE_SIZE_RANGE)
                }),
        );
        Some(AlertSettings {
            webhook: webhook?,
            format: a.format.unwrap_or(file::DEFAULT_ALERT_FORMAT),
            token: token?,
            threshold: rejections?.map(|rejections| AlertThreshold { rejections, window }),
            timeout: a.timeout.map_or(file::DEFAULT_ALERT_TIMEOUT, |d| d.0),
            max_retries: max_retries?,
            queue_size: queue_size?,
        })
    }

    /// The value of the environment variable `token_env` names.
    fn token_env(&self, name: &Spanned<String>) -> Check<String> {
        let text = name.get_ref();
        let valid = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Issue::at(
                name,
                format!(
                    "`{text}` is not an environment variable name; expected letters, digits and \
                     `_`, not starting with a digit"
                ),
            ));
        }
        let value = env::expand(&format!("${{{text}}}"), self.env)
            .map_err(|e| Issue::at(name, e.to_string()))?;
        if value.is_empty() {
            return Err(Issue::at(
                name,
                format!("environment variable `{text}` is empty"),
            ));
        }
        Ok(value)
    }
}

/// An alert webhook: http(s) with a host. Messages never repeat the URL, whose path or query is
/// often the secret.
fn webhook_url(at: &EnvString, text: &str) -> Check<Uri> {
    let fail = |what: &str| {
        Issue::at(
            at,
            format!("{what}; expected an http:// or https:// URL such as \"https://hooks.example.com/rategate\""),
        )
    };
    if text.contains('#') {
        return Err(fail("must not contain a fragment (`#`)"));
    }
    let uri: Uri = text.parse().map_err(|_| fail("not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(fail(&format!("unsupported scheme `{other}`"))),
        None => return Err(fail("missing scheme")),
    }
    let authority = uri.authority().ok_or_else(|| fail("missing host"))?;
    if authority.host().is_empty() {
        return Err(fail("missing host"));
    }
    if authority.as_str().contains('@') {
        return Err(fail(
            "must not contain credentials; use `token` or `token_env`",
        ));
    }
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && !matches!(authority.port_u16(), Some(port) if port != 0) {
        return Err(fail("invalid port"));
    }
    Ok(uri)
}
