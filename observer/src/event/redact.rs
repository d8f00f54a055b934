//! Redaction: a request target split into path and query, with the values of sensitive query
//! keys and anything that looks like a token (the built-in formats of [`tokens`] and the
//! user's [`patterns`]) replaced by `REDACTED`, the user information of absolute-form targets
//! dropped, and strings from traffic capped. Imports only `http::Text` (and, in tests, the
//! credential parameter names `http` already redacts, to check they stay covered).
//! The query values of credential parameters are redacted earlier, where `http` takes the
//! credential from them: these keys are the wider net for every other secret.

use crate::http::Text;

mod patterns;
mod tokens;

pub use patterns::{MAX_PATTERNS, PatternError, SecretPatterns, check as check_pattern};

pub const REDACTED: &str = "REDACTED";

/// Words that make a query key (or a path parameter's name) sensitive wherever they appear in
/// it, compared after folding (lower case, letters and digits only): `X-Amz-Security-Token`,
/// `oauth_token`, `user[password]`, `apiToken`, `X-Goog-Signature`, `private_token`... It errs
/// on the side of redacting: `author` and `keyword` lose their values too.
pub const SENSITIVE_KEY_WORDS: &[&str] = &[
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "sessid",
    "jwt",
    "bearer",
    "cookie",
    // Who an account is goes out only as `user.hash`: never a user name in a URL.
    "username",
    "email",
    "login",
];

/// Keys sensitive as a whole: too short, or too common inside other words, to search for.
pub const SENSITIVE_KEYS: &[&str] = &[
    "sid", "code", "otp", "pin", "nonce", "ticket", "hmac", "user", "account", "uid", "mail",
];

pub(super) fn cap(s: &str) -> String {
    Text::from_checked(s).value
}

/// Redaction with what it knows beyond its built-in rules: the user's token formats. Made once
/// at start and handed to the pipeline, the same live and in replay. `Default` is the built-in
/// rules alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redactor {
    patterns: SecretPatterns,
}

impl Redactor {
    pub fn new(patterns: SecretPatterns) -> Self {
        Self { patterns }
    }

    pub fn patterns(&self) -> &SecretPatterns {
        &self.patterns
    }

    /// `s` is, or starts with, a secret of a built-in format, or holds a match of a user
    /// pattern.
    pub fn looks_like_secret(&self, s: &str) -> bool {
        tokens::looks_like_secret(s) || self.patterns.matches(s)
    }

    /// Splits a request target into path and query: the path with segments that look like
    /// tokens replaced, the query with the values of sensitive keys and token-like values
    /// replaced, and, for the absolute form (`scheme://user:pass@host/...`, any scheme and
    /// case), the authority dropped with whatever user information it held.
    pub fn split_target(&self, target: &str) -> (String, Option<String>) {
        let rest = absolute_path(target).unwrap_or(target);
        let rest = rest.split('#').next().unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        (self.redact_path(path), query.map(|q| self.redact_query(q)))
    }

    /// As [`Self::split_target`], for a target cut short (past `MAX_FIELD`) or not valid UTF-8:
    /// what was being sent where it was cut may be the start of a secret too short to
    /// recognise, so the last query value, or the last path segment when there is no query, is
    /// replaced too.
    pub fn split_cut_target(&self, target: &str) -> (String, Option<String>) {
        let (path, query) = self.split_target(target);
        match query {
            Some(q) => {
                let at = q.rfind(['&', ';']).map_or(0, |i| i + 1);
                let last = match q[at..].split_once('=') {
                    Some((k, _)) => format!("{k}={REDACTED}"),
                    None => REDACTED.to_string(),
                };
                (path, Some(format!("{}{last}", &q[..at])))
            }
            None => {
                let at = path.rfind('/').map_or(0, |i| i + 1);
                (format!("{}{REDACTED}", &path[..at]), None)
            }
        }
    }

    /// A value (or bare item) that is a secret by its looks, decoded first so `%2E` cannot
    /// hide a JWT's dots (nor `%5F` the underscore of a user's format).
    fn secret_value(&self, v: &str) -> bool {
        if v.is_empty() || self.looks_like_secret(v) {
            return !v.is_empty();
        }
        // Decoding changes nothing without `%` or `+`: skip its allocation (the common case,
        // on every path segment of every exchange).
        if v.contains(['%', '+']) {
            self.looks_like_secret(percent_decode(v).trim())
        } else {
            let trimmed = v.trim();
            trimmed.len() != v.len() && self.looks_like_secret(trimmed)
        }
    }

    /// Replaces, in a query string split on `&` and `;`, the values of sensitive keys, values
    /// that look like tokens whatever their key, and bare items that look like tokens, by
    /// `REDACTED`. Separators and everything else stay as sent.
    pub fn redact_query(&self, q: &str) -> String {
        let mut out = String::with_capacity(q.len());
        let mut rest = q;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            self.push_item(&rest[..end], &mut out);
            if end == rest.len() {
                return out;
            }
            out.push_str(&rest[end..=end]);
            rest = &rest[end + 1..];
        }
    }

    /// Appends `item` (`key=value` or a bare item) to `out`, its value replaced by `REDACTED`
    /// when its key is sensitive or the value looks like a token.
    fn push_item(&self, item: &str, out: &mut String) {
        match item.split_once('=') {
            Some((k, v)) if is_sensitive(k) || self.secret_value(v) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            None if self.secret_value(item) => out.push_str(REDACTED),
            _ => out.push_str(item),
        }
    }

    /// Replaces path segments that look like tokens, and the values of `;name=value` path
    /// parameters whose name is sensitive (`;jsessionid=...`) or that look like tokens, by
    /// `REDACTED`.
    pub fn redact_path(&self, path: &str) -> String {
        // One string for the whole path: this runs for every exchange, and most segments are
        // kept as they are.
        let mut out = String::with_capacity(path.len());
        for (i, segment) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let mut parts = segment.split(';');
            let head = parts.next().unwrap_or_default();
            if self.secret_value(head) {
                out.push_str(REDACTED);
            } else {
                out.push_str(head);
            }
            for param in parts {
                out.push(';');
                self.push_item(param, &mut out);
            }
        }
        out
    }
}

/// The part after the authority of an absolute-form target: `/` when there is none.
fn absolute_path(target: &str) -> Option<&str> {
    let colon = target.find("://")?;
    let scheme = &target[..colon];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return None;
    }
    let after = &target[colon + 3..];
    // User information ends at the last `@` before the query or fragment: a password may hold
    // a `/` its client did not encode.
    let end = after.find(['?', '#']).unwrap_or(after.len());
    let after = match after[..end].rfind('@') {
        Some(at) => &after[at + 1..],
        None => after,
    };
    // Whatever precedes the path, the query or the fragment is the host and port.
    Some(after.find(['/', '?', '#']).map_or("", |i| &after[i..]))
}

/// A key is sensitive when its folded form contains a sensitive word or is a sensitive key.
pub fn is_sensitive(key: &str) -> bool {
    let folded = fold(&percent_decode_lower(key));
    SENSITIVE_KEY_WORDS.iter().any(|w| folded.contains(w))
        || SENSITIVE_KEYS.iter().any(|k| folded == *k)
}

/// A key as compared: lower case, letters and digits only (`X-Amz-Signature` is
/// `xamzsignature`, `user[password]` is `userpassword`).
fn fold(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode_lower(s: &str) -> String {
    percent_decode(s).trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_patterns;
