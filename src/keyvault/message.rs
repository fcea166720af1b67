//! Failure messages that are the same on every attempt.
//!
//! A `VaultError`'s message ends up in a VaultKey's Ready condition; the status is written only
//! when it changes. Vaults and the Azure SDK put per-request noise into their texts (request
//! and correlation ids, timestamps, a fresh random id in each message), which would make every
//! failed attempt a new status write for an unchanged failure. [`stable_message`] is the one
//! place that removes it: [`super::VaultError::new`] applies it to every message.

use std::sync::LazyLock;

use regex::Regex;

/// What a masked id or time is replaced with.
const ID: &str = "<id>";
const TIME: &str = "<time>";

/// Longest body snippet quoted from a non-Key-Vault error answer, in characters.
pub const BODY_SNIPPET_CHARS: usize = 200;

/// A labelled id: `request id: 42af…`, `x-ms-request-id=…`, `Correlation ID: …`,
/// `"trace_id":"…"`. The value (one token, quoted or not) is masked whatever its shape.
static LABELLED_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:x-ms-)?(?:client[ _-]?)?(?:request|correlation|activity|trace|tracking|operation)[ _-]?id|traceparent)("?\s*[:=]\s*"?)([^\s",;)\]}]+)"#,
    )
    .expect("valid regex")
});

/// ISO 8601 / RFC 3339 date-times, with `T` or a space, optional fraction and zone.
static ISO_TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?Z|[+-]\d{2}:?\d{2})?",
    )
    .expect("valid regex")
});

/// RFC 1123 dates as in HTTP headers and HTML error pages: `Tue, 05 Nov 2024 08:12:31 GMT`.
static HTTP_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2}(?: GMT| UTC)?",
    )
    .expect("valid regex")
});

/// UUIDs / GUIDs, with or without braces.
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\{?\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b\}?",
    )
    .expect("valid regex")
});

/// Candidate random tokens; [`is_random_token`] decides.
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_\-]{10,}={0,2}").expect("valid regex"));

/// Whether a token looks machine-made: a long hex string (key versions, request ids), a long
/// number (epoch times, sequence ids), or a base64-ish string mixing upper case, lower case
/// and digits. Words, dashed key names and host names do not qualify.
fn is_random_token(token: &str) -> bool {
    let core = token.trim_end_matches('=');
    let len = core.chars().count();
    if core.bytes().all(|b| b.is_ascii_digit()) {
        return len >= 10;
    }
    if core.bytes().all(|b| b.is_ascii_hexdigit()) {
        return len >= 16 && core.bytes().any(|b| b.is_ascii_digit());
    }
    let upper = core.bytes().any(|b| b.is_ascii_uppercase());
    let lower = core.bytes().any(|b| b.is_ascii_lowercase());
    let digits = core.bytes().filter(u8::is_ascii_digit).count();
    len >= 20 && upper && lower && digits >= 2
}

/// Removes control characters, folds runs of whitespace into one space and trims.
pub fn fold_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
        } else if c.is_control() || c == '\u{FFFD}' {
            // Control characters (ANSI escapes included) and undecodable bytes say nothing.
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

/// The message with per-attempt noise masked: control characters removed, whitespace folded,
/// request / correlation / trace ids, timestamps, UUIDs and random tokens replaced by `<id>`
/// or `<time>`. Applying it twice changes nothing.
pub fn stable_message(text: &str) -> String {
    let text = fold_whitespace(text);
    let text = LABELLED_ID.replace_all(&text, |c: &regex::Captures<'_>| {
        format!("{}{}{ID}", &c[1], &c[2])
    });
    let text = ISO_TIME.replace_all(&text, TIME);
    let text = HTTP_DATE.replace_all(&text, TIME);
    let text = UUID.replace_all(&text, ID);
    // Judged per path segment, so a URL keeps its readable parts.
    let text = TOKEN.replace_all(&text, |c: &regex::Captures<'_>| {
        c[0].split('/')
            .map(|segment| {
                if is_random_token(segment) {
                    ID
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    });
    text.into_owned()
}

/// A bounded, readable extract of an error body that is not Key Vault's JSON: valid UTF-8,
/// HTML reduced to its text, noise masked, at most [`BODY_SNIPPET_CHARS`] characters.
pub fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = if looks_like_html(&text) {
        html_text(&text)
    } else {
        text.into_owned()
    };
    truncate_chars(&stable_message(&text), BODY_SNIPPET_CHARS)
}

fn looks_like_html(text: &str) -> bool {
    let head: String = text.trim_start().chars().take(200).collect();
    let head = head.to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.contains("<html") || head.starts_with("<head")
}

/// The visible text of an HTML page: tags, comments, scripts and styles removed, a few
/// common entities decoded.
fn html_text(html: &str) -> String {
    static HIDDEN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?is)<!--.*?-->|<script\b.*?</script\s*>|<style\b.*?</style\s*>")
            .expect("valid regex")
    });
    static TAG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("valid regex"));
    let text = HIDDEN.replace_all(html, " ");
    let text = TAG.replace_all(&text, " ");
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// At most `max` characters; a cut is marked with `…`.
fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_conflict_body_message_is_kept() {
        // Key Vault's own messages carry no per-request noise; they pass unchanged.
        let message = "Key howto-rsa is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.";
        assert_eq!(stable_message(message), message);
    }

    #[test]
    fn random_id_in_each_409_is_masked() {
        // Lowkey Vault style: a fresh random id in every conflict message.
        let a = "Key 'orders-signing' already exists and is in deleted state. (Request id: 6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d)";
        let b = "Key 'orders-signing' already exists and is in deleted state. (Request id: 0a9b8c7d-6e5f-4d3c-2b1a-0f9e8d7c6b5a)";
        assert_eq!(stable_message(a), stable_message(b));
        assert_eq!(
            stable_message(a),
            "Key 'orders-signing' already exists and is in deleted state. (Request id: <id>)"
        );
        // An unlabelled random token, as an emulator's error reference.
        let c = "Conflict: operation in progress, ref=Zx81Qa0dLmP4rTe7WvB2nYc5";
        let d = "Conflict: operation in progress, ref=Hk3Lp9QsT2vXw8YzA1bC4dEf";
        assert_eq!(stable_message(c), stable_message(d));
        assert_eq!(
            stable_message(c),
            "Conflict: operation in progress, ref=<id>"
        );
    }

    #[test]
    fn aad_trace_correlation_and_timestamp_are_masked() {
        let a = "AADSTS700016: Application with identifier 'my-app' was not found in the directory 'contoso'.\r\nTrace ID: 0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f\r\nCorrelation ID: 5b2f9c1e-7a3d-4e8b-b6c5-1d0e9f8a7b6c\r\nTimestamp: 2024-05-01 12:34:56Z";
        let b = "AADSTS700016: Application with identifier 'my-app' was not found in the directory 'contoso'.\r\nTrace ID: 11111111-2222-4333-8444-555555555555\r\nCorrelation ID: 66666666-7777-4888-9999-000000000000\r\nTimestamp: 2024-05-01 12:35:07Z";
        assert_eq!(stable_message(a), stable_message(b));
        assert_eq!(
            stable_message(a),
            "AADSTS700016: Application with identifier 'my-app' was not found in the directory 'contoso'. Trace ID: <id> Correlation ID: <id> Timestamp: <time>"
        );
        let json = r#"{"error":"invalid_client","timestamp":"2024-05-01 12:34:56Z","trace_id":"0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f","correlation_id":"abc123"}"#;
        assert_eq!(
            stable_message(json),
            r#"{"error":"invalid_client","timestamp":"<time>","trace_id":"<id>","correlation_id":"<id>"}"#
        );
    }

    #[test]
    fn headers_times_and_hex_ids_are_masked() {
        assert_eq!(
            stable_message(
                "x-ms-request-id: 4f2a x-ms-client-request-id=abc at 2024-05-01T12:34:56.789+02:00"
            ),
            "x-ms-request-id: <id> x-ms-client-request-id=<id> at <time>"
        );
        assert_eq!(
            stable_message("version b20a586d39c912fcd62729027522134f since 1714567890123"),
            "version <id> since <id>"
        );
        assert_eq!(
            stable_message("Date: Tue, 05 Nov 2024 08:12:31 GMT"),
            "Date: <time>"
        );
    }

    #[test]
    fn names_hosts_and_words_are_not_masked() {
        let message = "key payments-signing-key-2024 in https://my-vault.vault.azure.net: Operation get is not permitted on this key (KeyVaultErrorException); port 443";
        assert_eq!(stable_message(message), message);
    }

    #[test]
    fn control_characters_go_and_whitespace_folds() {
        assert_eq!(
            stable_message("  bad\u{1b}[31m gateway\r\n\t\u{0}now\u{FFFD} "),
            "bad[31m gateway now"
        );
    }

    #[test]
    fn stable_message_is_idempotent() {
        for s in [
            "Trace ID: 0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f Timestamp: 2024-05-01 12:34:56Z",
            "ref=Zx81Qa0dLmP4rTe7WvB2nYc5 …",
            "plain text",
        ] {
            let once = stable_message(s);
            assert_eq!(stable_message(&once), once);
        }
    }

    #[test]
    fn html_502_page_becomes_a_short_text_snippet() {
        let page = b"<!DOCTYPE html>\r\n<html>\r\n<head><title>502 Bad Gateway</title>\n<style>body{color:red}</style></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n<!-- request 7d3f9a1b2c4e5f60718293a4b5c6d7e8 -->\r\n</body>\r\n</html>\r\n";
        assert_eq!(body_snippet(page), "502 Bad Gateway 502 Bad Gateway nginx");
    }

    #[test]
    fn body_snippet_is_bounded_valid_and_masked() {
        let mut body = b"upstream error \xff\xfe id=0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f ".to_vec();
        body.extend(std::iter::repeat_n(b"lorem ipsum ".as_slice(), 100).flatten());
        let snippet = body_snippet(&body);
        assert_eq!(snippet.chars().count(), BODY_SNIPPET_CHARS);
        assert!(snippet.starts_with("upstream error id=<id> lorem ipsum"));
        assert!(snippet.ends_with('…'));
        assert!(!snippet.chars().any(char::is_control));
    }
}
