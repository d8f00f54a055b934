//! A request from its header fields, whatever the version carried them: host, user agent,
//! the credential, the forwarding headers, and how its body is read for a login. HTTP/1.x and
//! HTTP/2 both build their requests here, so a credential is taken the same way whichever
//! version carried it.
//!
//! Part of HTTP parsing: imports nothing of the crate outside `http`.

use super::credential::CredentialNames;
use super::form::{BodyKind, LoginFields};
use super::forwarded::ForwardedHeaders;
use super::message::{Request, Sizes, Text, Version};

/// The value of the first header named `name` (compared case-insensitively), as text.
pub(crate) fn header_text<'h>(
    mut headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    name: &str,
) -> Option<Text> {
    headers
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| Text::from_bytes(v))
}

/// How a request body with these headers is read for a login (from its Content-Type).
pub(crate) fn body_kind<'h>(
    mut headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Option<BodyKind> {
    let ct = headers
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v);
    BodyKind::of(ct)
}

/// A request with `method` and `target` (as sent: its credential query values are redacted
/// here), its host (`host`, else the `Host` header), and what `headers` carry. Sizes, times
/// and flags are left for the caller.
pub(crate) fn new_request<'h, I>(
    names: &CredentialNames,
    (method, target, version): (Text, &str, Version),
    host: Option<Text>,
    headers: I,
) -> Request
where
    I: Iterator<Item = (&'h str, &'h [u8])> + Clone,
{
    Request {
        method,
        // Credential query values go no further than the credential taken from them.
        target: Text::from_checked(&names.redact_query_credentials(target)),
        version,
        host: host.or_else(|| header_text(headers.clone(), "host")),
        user_agent: header_text(headers.clone(), "user-agent"),
        sizes: Sizes::default(),
        start_ns: 0,
        end_ns: 0,
        incomplete_copy: false,
        head_truncated: false,
        login: LoginFields::default(),
        forwarded: ForwardedHeaders::from_headers(headers.clone()),
        credential: names.extract(target, headers),
        unknown_fields: 0,
    }
}
