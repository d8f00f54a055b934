//! Credentials as requests carry them: which headers and cookies hold one (configurable), and
//! the raw value taken from them, held only until `detect::identity` fingerprints it.
//!
//! Part of HTTP parsing: imports nothing of the crate but [`super::form`]'s field names.

use base64::Engine as _;

use super::form::FieldNames;

/// Header names (lower case) that carry API keys, unless configured otherwise.
pub const DEFAULT_API_KEY_HEADERS: &[&str] = &["x-api-key", "api-key", "x-auth-token", "apikey"];
/// Cookie names that carry sessions, unless configured otherwise.
pub const DEFAULT_SESSION_COOKIES: &[&str] = &[
    "session",
    "sessionid",
    "sid",
    "jsessionid",
    "phpsessid",
    "connect.sid",
    "_session",
    "session_id",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    Basic,
    Bearer,
    ApiKey,
    Cookie,
    /// Another Authorization scheme (Digest, AWS4-HMAC-SHA256, ...).
    Other,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Bearer => "bearer",
            Self::ApiKey => "api_key",
            Self::Cookie => "cookie",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "basic" => Self::Basic,
            "bearer" => Self::Bearer,
            "api_key" => Self::ApiKey,
            "cookie" => Self::Cookie,
            "other" => Self::Other,
            _ => return None,
        })
    }
}

/// A credential as it was sent, held only until it is fingerprinted. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawCredential {
    pub kind: CredentialKind,
    secret: Vec<u8>,
}

impl std::fmt::Debug for RawCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RawCredential({}, {} bytes)",
            self.kind.as_str(),
            self.secret.len()
        )
    }
}

impl RawCredential {
    pub fn new(kind: CredentialKind, secret: &[u8]) -> Self {
        Self {
            kind,
            secret: secret.to_vec(),
        }
    }

    /// The secret itself: only for fingerprinting.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// Which headers and cookies carry credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialNames {
    /// Lower-case header names.
    pub api_key_headers: Vec<String>,
    /// Cookie names, compared case-insensitively.
    pub session_cookies: Vec<String>,
    /// Keep the first bytes of response bodies, for login failure markers to be searched in.
    pub keep_response_body: bool,
    /// Body fields that name the user and the password of a login.
    pub fields: FieldNames,
}

impl Default for CredentialNames {
    fn default() -> Self {
        Self {
            api_key_headers: DEFAULT_API_KEY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            session_cookies: DEFAULT_SESSION_COOKIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            keep_response_body: false,
            fields: FieldNames::default(),
        }
    }
}

impl CredentialNames {
    /// The credential a request carries: Authorization first, then an API-key header, then a
    /// session cookie.
    pub fn extract<'h>(
        &self,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Option<RawCredential> {
        let find = |pred: &dyn Fn(&str) -> bool| headers.clone().find(|(n, _)| pred(n));
        if let Some((_, v)) = find(&|n| n.eq_ignore_ascii_case("authorization")) {
            return Some(parse_authorization(v));
        }
        if let Some((_, v)) = find(&|n| {
            self.api_key_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(n))
        }) {
            return Some(RawCredential::new(CredentialKind::ApiKey, v.trim_ascii()));
        }
        for (name, value) in headers.filter(|(n, _)| n.eq_ignore_ascii_case("cookie")) {
            let _ = name;
            for pair in value.split(|&c| c == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&c| c == b'=') else {
                    continue;
                };
                let (k, v) = (&pair[..eq], &pair[eq + 1..]);
                let k = String::from_utf8_lossy(k);
                if self
                    .session_cookies
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(k.trim()))
                {
                    return Some(RawCredential::new(CredentialKind::Cookie, v));
                }
            }
        }
        None
    }
}

/// Reads an Authorization header value: `Basic <base64>`, `Bearer <token>` or another scheme.
pub fn parse_authorization(v: &[u8]) -> RawCredential {
    let v = v.trim_ascii();
    let (scheme, rest) = match v.iter().position(|&c| c == b' ') {
        Some(i) => (&v[..i], v[i + 1..].trim_ascii()),
        None => (v, &[][..]),
    };
    if scheme.eq_ignore_ascii_case(b"basic") {
        // The decoded "user:password" is the credential; undecodable input stays as sent.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .unwrap_or_else(|_| rest.to_vec());
        RawCredential::new(CredentialKind::Basic, &decoded)
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        RawCredential::new(CredentialKind::Bearer, rest)
    } else {
        RawCredential::new(CredentialKind::Other, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(
        h: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + Clone {
        h.iter().map(|(n, v)| (*n, v.as_bytes()))
    }

    #[test]
    fn extracts_in_priority_order() {
        let n = CredentialNames::default();
        let c = n
            .extract(headers(&[
                ("Cookie", "session=abc"),
                ("X-API-Key", "k1"),
                ("Authorization", "Bearer tok"),
            ]))
            .unwrap();
        assert_eq!(c, RawCredential::new(CredentialKind::Bearer, b"tok"));
        let c = n
            .extract(headers(&[
                ("Cookie", "theme=dark; SESSIONID=s3"),
                ("x-api-key", " k1 "),
            ]))
            .unwrap();
        assert_eq!(c, RawCredential::new(CredentialKind::ApiKey, b"k1"));
        let c = n
            .extract(headers(&[("Cookie", "theme=dark; SESSIONID=s3")]))
            .unwrap();
        assert_eq!(c, RawCredential::new(CredentialKind::Cookie, b"s3"));
        assert!(n.extract(headers(&[("Cookie", "theme=dark")])).is_none());
        assert!(n.extract(headers(&[])).is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let raw = RawCredential::new(CredentialKind::ApiKey, b"sk-live-very-secret");
        assert!(!format!("{raw:?}").contains("secret"));
    }
}
