//! The dashboard: one self-contained page (inline CSS and JS, nothing fetched from elsewhere)
//! compiled into the binary. It asks for the admin token, keeps it in `sessionStorage`, and calls
//! the `/admin/*` API with it.
//!
//! The Content-Security-Policy allows exactly the page's own inline `<script>` and `<style>` (by
//! their SHA-256) and requests to this origin, so even a client string that somehow carried markup
//! could not run code; the page also only ever writes data with `textContent`.

use std::sync::LazyLock;

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response};
use sha2::{Digest, Sha256};

use crate::body::ResponseBody;

const PAGE: &str = include_str!("index.html");

static CSP: LazyLock<String> = LazyLock::new(|| {
    let script = inline_hash(PAGE, "<script>", "</script>");
    let style = inline_hash(PAGE, "<style>", "</style>");
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

pub(crate) fn page() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(PAGE));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        h.insert(CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

/// `'sha256-<base64>'` of the text between the first `open` and the next `close`, or `'none'`.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let Some(start) = page.find(open).map(|i| i + open.len()) else {
        return "'none'".into();
    };
    let Some(len) = page[start..].find(close) else {
        return "'none'".into();
    };
    let digest = Sha256::digest(&page.as_bytes()[start..start + len]);
    format!("'sha256-{}'", base64(&digest))
}

/// Standard base64 with padding (the CSP hash source syntax).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn csp_pins_the_inline_script_and_style() {
        assert!(CSP.contains("script-src 'sha256-"), "{}", *CSP);
        assert!(CSP.contains("style-src 'sha256-"), "{}", *CSP);
        // The page itself has exactly one script and one style, and loads nothing from elsewhere.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
    }
}
