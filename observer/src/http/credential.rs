//! Credentials as requests carry them: which headers, query parameters and cookies hold one
//! (configurable), the carrier that wins when a request has several, and the raw secret taken
//! from it, held only until `detect::identity` fingerprints it. Query parameters that carry
//! credentials are also redacted from the request target here, so their values go no further
//! than the credential.
//!
//! Part of HTTP parsing: imports nothing of the crate but [`super::form`]'s field names and
//! percent-decoding.

use std::borrow::Cow;

use base64::Engine as _;

use super::form::{FieldNames, norm, percent_decode};

/// Header names (lower case) that carry API keys, unless configured otherwise.
pub const DEFAULT_API_KEY_HEADERS: &[&str] = &["x-api-key", "api-key", "x-auth-token", "apikey"];
/// Query parameters that carry credentials, unless configured otherwise. Compared like body
/// fields (after percent-decoding, case-insensitively, `_` and `-` ignored), so `api_key` also
/// stands for `apikey`, `api-key` and `API_KEY`. Password fields are not among them: a password
/// sent in a query is a login's, never fingerprinted.
pub const DEFAULT_QUERY_CREDENTIALS: &[&str] = &[
    "api_key",
    "key",
    "access_token",
    "token",
    "auth_token",
    "x_api_key",
    "jwt",
];
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
/// Longest secret kept: a longer one is fingerprinted by its first `MAX_SECRET` bytes, here and
/// in `observer fingerprint` alike, so a request holds a bounded copy and both still agree.
pub const MAX_SECRET: usize = 4096;
/// Longest query parameter name compared (percent-encoded): longer names are no credential's.
const MAX_PARAM_NAME: usize = 192;
/// What a redacted query value is replaced by (the same word `event::redact` writes).
const REDACTED: &str = "REDACTED";

/// How a credential was carried. The fingerprint does not depend on it: one secret has one
/// fingerprint whatever carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    /// `Authorization: Basic`; the secret is the decoded `user:password`.
    Basic,
    /// `Authorization: Bearer`.
    Bearer,
    /// An API-key header (`X-API-Key`, ...).
    ApiKey,
    /// A query parameter (`?api_key=`, `?access_token=`, ...).
    Query,
    /// A session cookie.
    Cookie,
    /// Another Authorization scheme (Digest, AWS4-HMAC-SHA256, ...): the whole value.
    Other,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Bearer => "bearer",
            Self::ApiKey => "api_key",
            Self::Query => "query",
            Self::Cookie => "cookie",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "basic" => Self::Basic,
            "bearer" => Self::Bearer,
            "api_key" => Self::ApiKey,
            "query" => Self::Query,
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
    /// The secret `secret` carried as `kind`, cut to [`MAX_SECRET`] bytes.
    pub fn new(kind: CredentialKind, secret: &[u8]) -> Self {
        Self {
            kind,
            secret: secret[..secret.len().min(MAX_SECRET)].to_vec(),
        }
    }

    /// The secret itself: only for fingerprinting.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Bytes it holds (at most [`MAX_SECRET`]).
    pub fn len(&self) -> usize {
        self.secret.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }
}

/// Which headers, query parameters and cookies carry credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialNames {
    /// Lower-case header names.
    pub api_key_headers: Vec<String>,
    /// Query parameter names as [`norm`] makes them (lower case, no `_` or `-`).
    pub query_params: Vec<String>,
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
            query_params: DEFAULT_QUERY_CREDENTIALS
                .iter()
                .map(|s| norm(s.as_bytes()))
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

/// The query of a request target (origin or absolute form): after the first `?`, before `#`.
/// Returns where it starts and the query itself.
fn query_of(target: &str) -> Option<(usize, &str)> {
    let before_fragment = target.split('#').next().unwrap_or_default();
    let start = before_fragment.find('?')? + 1;
    Some((start, &before_fragment[start..]))
}

/// A query's `name=value` pairs as sent; a pair without `=` has no value.
fn pairs(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query.split('&').map(|pair| match pair.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (pair, None),
    })
}

impl CredentialNames {
    /// The credential a request carries. When it has several, the first of these wins:
    /// `Authorization`, an API-key header, a credential query parameter, a session cookie:
    /// the explicit carriers before the one a browser attaches by itself. A carrier with an
    /// empty value carries nothing and is passed over; within one carrier the first occurrence
    /// wins (as Werkzeug reads repeated query parameters and Go's `Header.Get` headers).
    pub fn extract<'h>(
        &self,
        target: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Option<RawCredential> {
        let named = |name: &'static str| {
            headers
                .clone()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        };
        let authorization = named("authorization")
            .map(|(_, v)| parse_authorization(v))
            .find(|c| !c.is_empty());
        authorization
            .or_else(|| {
                headers
                    .clone()
                    .filter(|(n, _)| {
                        self.api_key_headers
                            .iter()
                            .any(|h| h.eq_ignore_ascii_case(n))
                    })
                    .map(|(_, v)| v.trim_ascii())
                    .find(|v| !v.is_empty())
                    .map(|v| RawCredential::new(CredentialKind::ApiKey, v))
            })
            .or_else(|| self.query_credential(target))
            .or_else(|| {
                named("cookie")
                    .find_map(|(_, v)| self.session_cookie(v))
                    .map(|v| RawCredential::new(CredentialKind::Cookie, v))
            })
    }

    fn is_credential_param(&self, name: &str) -> bool {
        name.len() <= MAX_PARAM_NAME
            && self
                .query_params
                .contains(&norm(&percent_decode(name.as_bytes())))
    }

    /// The first credential query parameter of `target` with a value, percent-decoded as
    /// servers decode it (`+` is a space).
    pub fn query_credential(&self, target: &str) -> Option<RawCredential> {
        let (_, query) = query_of(target)?;
        pairs(query)
            .filter(|(k, v)| v.is_some_and(|v| !v.is_empty()) && self.is_credential_param(k))
            .find_map(|(_, v)| {
                // Decode no more than is kept: each decoded byte takes at most 3 encoded ones,
                // so this prefix decodes the first MAX_SECRET bytes exactly, even when it cuts
                // an escape (whose bytes land after them).
                let v = v?.as_bytes();
                let decoded = percent_decode(&v[..v.len().min(3 * MAX_SECRET + 6)]);
                (!decoded.is_empty()).then(|| RawCredential::new(CredentialKind::Query, &decoded))
            })
    }

    /// `target` with the value of every credential query parameter replaced by `REDACTED`,
    /// whichever carrier won; borrowed when there was none.
    pub fn redact_query_credentials<'t>(&self, target: &'t str) -> Cow<'t, str> {
        let Some((start, query)) = query_of(target) else {
            return Cow::Borrowed(target);
        };
        let secret = |(k, v): &(&str, Option<&str>)| {
            v.is_some_and(|v| !v.is_empty()) && self.is_credential_param(k)
        };
        if !pairs(query).any(|p| secret(&p)) {
            return Cow::Borrowed(target);
        }
        let mut out = String::with_capacity(target.len());
        out.push_str(&target[..start]);
        for (i, p) in pairs(query).enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(p.0);
            match p.1 {
                Some(_) if secret(&p) => {
                    out.push('=');
                    out.push_str(REDACTED);
                }
                Some(v) => {
                    out.push('=');
                    out.push_str(v);
                }
                None => {}
            }
        }
        out.push_str(&target[start + query.len()..]);
        Cow::Owned(out)
    }

    /// The value of the first session cookie with one in a `Cookie` header value.
    fn session_cookie<'v>(&self, value: &'v [u8]) -> Option<&'v [u8]> {
        value.split(|&c| c == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&c| c == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            let k = String::from_utf8_lossy(k);
            (!v.is_empty()
                && self
                    .session_cookies
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(k.trim())))
            .then_some(v)
        })
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
        // The decoded "user:password" is the secret; undecodable input stays as sent.
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
mod tests;
