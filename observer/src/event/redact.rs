//! Redaction: a request target split into path and query, with the values of sensitive query
//! keys replaced by `REDACTED`, and strings from traffic capped. Imports only `http::Text` (and,
//! in tests, the credential parameter names `http` already redacts, to check they stay covered).
//! The query values of credential parameters are redacted earlier, where `http` takes the
//! credential from them: these keys are the wider net for every other secret.

use crate::http::Text;

pub const REDACTED: &str = "REDACTED";

/// Query keys whose values are secrets (compared after percent-decoding, case-insensitively,
/// `_` and `-` ignored, so `access_token` covers `accessToken` and `access-token`).
pub const SENSITIVE_QUERY_KEYS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "auth_token",
    "client_secret",
    "code",
    "id_token",
    "jwt",
    "key",
    "pass",
    "passwd",
    "password",
    "pwd",
    "refresh_token",
    "secret",
    "session",
    "sessionid",
    "sid",
    "sig",
    "signature",
    "token",
    "x_api_key",
];

pub(super) fn cap(s: &str) -> String {
    Text::from_checked(s).value
}

/// Splits a request target into path and query, replacing the values of sensitive query keys.
pub fn split_target(target: &str) -> (String, Option<String>) {
    // Absolute form (sent to proxies): keep the path part.
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map(|r| r.find('/').map_or("/", |i| &r[i..]))
        .unwrap_or(target);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = path.split('#').next().unwrap_or_default().to_string();
    let query = query.map(|q| redact_query(q.split('#').next().unwrap_or_default()));
    (path, query)
}

fn is_sensitive(key: &str) -> bool {
    let decoded = fold(&percent_decode_lower(key));
    SENSITIVE_QUERY_KEYS.iter().any(|k| fold(k) == decoded)
}

/// A key as compared: without `_` and `-`.
fn fold(key: &str) -> String {
    key.chars().filter(|c| !matches!(c, '_' | '-')).collect()
}

fn percent_decode_lower(s: &str) -> String {
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
    String::from_utf8_lossy(&out).trim().to_ascii_lowercase()
}

/// Replaces the values of sensitive keys in a query string by `REDACTED`.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_sensitive(k) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_query_values_are_redacted() {
        let (path, q) = split_target("/login?user=alice&token=s3cr3t&Api%5FKey=k&PASSWORD=x&x");
        assert_eq!(path, "/login");
        let q = q.unwrap();
        assert_eq!(
            q,
            "user=alice&token=REDACTED&Api%5FKey=REDACTED&PASSWORD=REDACTED&x"
        );
        assert!(!q.contains("s3cr3t"));
    }

    #[test]
    fn spellings_of_a_sensitive_key_are_redacted() {
        let (_, q) = split_target("/x?accessToken=a&ACCESS-TOKEN=b&api-key=c&x-api-key=d&page=1");
        assert_eq!(
            q.unwrap(),
            "accessToken=REDACTED&ACCESS-TOKEN=REDACTED&api-key=REDACTED&x-api-key=REDACTED&page=1"
        );
    }

    #[test]
    fn every_default_credential_parameter_is_sensitive_here_too() {
        for name in crate::http::DEFAULT_QUERY_CREDENTIALS {
            assert!(is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn absolute_form_and_fragments() {
        assert_eq!(
            split_target("http://api.example/v1/x?a=1"),
            ("/v1/x".to_string(), Some("a=1".to_string()))
        );
        assert_eq!(split_target("http://api.example"), ("/".to_string(), None));
        assert_eq!(split_target("/p#frag"), ("/p".to_string(), None));
    }

    #[test]
    fn percent_decoding_is_total() {
        for s in ["%", "%4", "%zz", "a%", "%%%", "%41%42"] {
            let _ = percent_decode_lower(s);
        }
        assert_eq!(percent_decode_lower("%41%62"), "ab");
    }
}
