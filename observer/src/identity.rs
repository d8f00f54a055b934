//! Who made a request, without keeping secrets: the credential's type and a keyed fingerprint,
//! and a keyed hash of the user name it carries.
//!
//! Fingerprints are HMAC-SHA256 under a host secret (a file created 0600 on first run), so the
//! log never holds a credential nor anything an attacker with the log alone could test guesses
//! against. An investigator with the key computes the fingerprint of a leaked credential with
//! `observer fingerprint` and finds every request it made.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where the host secret lives unless configured otherwise.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/observer/secret.key";
const KEY_LEN: usize = 32;
/// Hex characters of a fingerprint (128 bits).
const FINGERPRINT_HEX: usize = 32;

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
}

/// What the log says about a credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credential {
    pub kind: CredentialKind,
    pub fingerprint: String,
    /// Keyed hash of the user name (Basic) or of an unverified JWT `sub`.
    pub user_hash: Option<String>,
}

/// Which headers and cookies carry credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialNames {
    /// Lower-case header names.
    pub api_key_headers: Vec<String>,
    /// Cookie names, compared case-insensitively.
    pub session_cookies: Vec<String>,
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

/// The user name a credential names, if any: Basic's user, or an unverified JWT's `sub`.
fn user_of(c: &RawCredential) -> Option<Vec<u8>> {
    match c.kind {
        CredentialKind::Basic => {
            let colon = c.secret.iter().position(|&b| b == b':')?;
            Some(c.secret[..colon].to_vec())
        }
        CredentialKind::Bearer => {
            let parts: Vec<&[u8]> = c.secret.split(|&b| b == b'.').collect();
            if parts.len() != 3 {
                return None;
            }
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&payload).ok()?;
            Some(v.get("sub")?.as_str()?.as_bytes().to_vec())
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create the directory of key file {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} holds {len} bytes, fewer than 16: it is not one observer made; \
         point --key-file at another path to make a new one"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`, since \
         anyone with the key can test guesses against the log's fingerprints"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// Computes fingerprints under the host secret.
#[derive(Clone)]
pub struct Fingerprinter {
    key: Vec<u8>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(..)")
    }
}

impl Fingerprinter {
    pub fn with_key(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// Loads the key, creating it (0600, random) when the file does not exist. With `create`
    /// false a missing file is an error.
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyError> {
        let path_buf = path.to_path_buf();
        match fs::read(path) {
            Ok(key) => {
                let mode = fs::metadata(path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o077 != 0 {
                    return Err(KeyError::Exposed {
                        path: path_buf,
                        mode: mode & 0o777,
                    });
                }
                if key.len() < 16 {
                    return Err(KeyError::TooShort {
                        path: path_buf,
                        len: key.len(),
                    });
                }
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|source| KeyError::Dir {
                        path: path_buf.clone(),
                        source,
                    })?;
                }
                let mut key = vec![0u8; KEY_LEN];
                rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty()).map_err(
                    |e| KeyError::Create {
                        path: path_buf.clone(),
                        source: e.into(),
                    },
                )?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| KeyError::Create {
                        path: path_buf.clone(),
                        source,
                    })?;
                f.write_all(&key)
                    .and_then(|_| f.sync_all())
                    .map_err(|source| KeyError::Create {
                        path: path_buf.clone(),
                        source,
                    })?;
                tracing::info!("created the fingerprint key {}", path.display());
                Ok(Self { key })
            }
            Err(source) => Err(KeyError::Read {
                path: path_buf,
                source,
            }),
        }
    }

    fn mac(&self, domain: &[u8], data: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(domain);
        m.update(&[0]);
        m.update(data);
        let mut h = hex::encode(m.finalize().into_bytes());
        h.truncate(FINGERPRINT_HEX);
        h
    }

    pub fn credential(&self, raw: &RawCredential) -> Credential {
        let domain = format!("credential:{}", raw.kind.as_str());
        Credential {
            kind: raw.kind,
            fingerprint: self.mac(domain.as_bytes(), &raw.secret),
            user_hash: user_of(raw).map(|u| self.user_hash(&u)),
        }
    }

    /// The keyed hash of a user name, as `user.hash` carries it.
    pub fn user_hash(&self, user: &[u8]) -> String {
        self.mac(b"user", user)
    }
}

/// `observer fingerprint`: the fingerprint of the credential on standard input.
pub fn fingerprint_stdin(args: &crate::config::FingerprintArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut input = Vec::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_end(&mut input)
        .context("reading the credential from standard input")?;
    let key = Fingerprinter::load(&args.key_file, false).with_context(|| {
        format!(
            "observer creates its key on its first run; pass the one it used with --key-file              (looked at {})",
            args.key_file.display()
        )
    })?;
    Ok(key
        .credential(&credential_from_input(&input, args.kind.as_deref())?)
        .fingerprint)
}

/// Reads a credential as an investigator pastes it: an Authorization value (`Basic ...`,
/// `Bearer ...`), or a bare secret with its type.
pub fn credential_from_input(input: &[u8], kind: Option<&str>) -> anyhow::Result<RawCredential> {
    let line = input.strip_suffix(b"\n").unwrap_or(input);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        anyhow::bail!("no credential on standard input");
    }
    let lower = line.to_ascii_lowercase();
    let looks_like_header = lower.starts_with(b"basic ") || lower.starts_with(b"bearer ");
    match kind {
        None if looks_like_header => Ok(parse_authorization(line)),
        None => anyhow::bail!(
            "say what the credential is with --type basic|bearer|api_key|cookie, or give a \
             whole Authorization value (`Bearer ...`)"
        ),
        Some(k) => {
            let kind = CredentialKind::parse(k)
                .filter(|k| *k != CredentialKind::Other)
                .ok_or_else(|| {
                    anyhow::anyhow!("unknown --type {k}: use basic, bearer, api_key or cookie")
                })?;
            if looks_like_header {
                let raw = parse_authorization(line);
                if raw.kind != kind {
                    anyhow::bail!("the input is a {} credential, not {k}", raw.kind.as_str());
                }
                return Ok(raw);
            }
            // A bare Basic credential is `user:password`.
            Ok(RawCredential::new(kind, line))
        }
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
    fn basic_is_decoded_and_names_its_user() {
        let raw = parse_authorization(b"Basic YWxpY2U6d29uZGVybGFuZA==");
        assert_eq!(
            raw,
            RawCredential::new(CredentialKind::Basic, b"alice:wonderland")
        );
        let f = Fingerprinter::with_key(b"0123456789abcdef0123456789abcdef");
        let c = f.credential(&raw);
        assert_eq!(c.user_hash, Some(f.user_hash(b"alice")));
        assert_eq!(c.fingerprint.len(), 32);
        // Same secret, other type: another fingerprint.
        let other = f.credential(&RawCredential::new(
            CredentialKind::Bearer,
            b"alice:wonderland",
        ));
        assert_ne!(other.fingerprint, c.fingerprint);
        // Another key: another fingerprint.
        let g = Fingerprinter::with_key(b"another key of sixteen+ bytes...");
        assert_ne!(g.credential(&raw).fingerprint, c.fingerprint);
    }

    #[test]
    fn jwt_sub_is_hashed_without_verification() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"bob"}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let raw = parse_authorization(format!("Bearer {token}").as_bytes());
        let f = Fingerprinter::with_key(&[7; 32]);
        assert_eq!(f.credential(&raw).user_hash, Some(f.user_hash(b"bob")));
        // Garbage tokens name nobody and never panic.
        for t in ["a.b.c", "...", "x", "a.%%%.c"] {
            let raw = RawCredential::new(CredentialKind::Bearer, t.as_bytes());
            assert_eq!(f.credential(&raw).user_hash, None);
        }
    }

    #[test]
    fn fingerprint_input_forms_agree() {
        let f = Fingerprinter::with_key(&[1; 32]);
        let header = credential_from_input(b"Basic YWxpY2U6d29uZGVybGFuZA==\n", None).unwrap();
        let bare = credential_from_input(b"alice:wonderland\n", Some("basic")).unwrap();
        assert_eq!(f.credential(&header), f.credential(&bare));
        let t1 = credential_from_input(b"Bearer tok", None).unwrap();
        let t2 = credential_from_input(b"tok\r\n", Some("bearer")).unwrap();
        assert_eq!(f.credential(&t1), f.credential(&t2));
        assert!(credential_from_input(b"tok", None).is_err());
        assert!(credential_from_input(b"", Some("bearer")).is_err());
        assert!(credential_from_input(b"tok", Some("weird")).is_err());
        assert!(credential_from_input(b"Bearer tok", Some("basic")).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let raw = RawCredential::new(CredentialKind::ApiKey, b"sk-live-very-secret");
        assert!(!format!("{raw:?}").contains("secret"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("observer-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/secret.key");
        let a = Fingerprinter::load(&path, true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Fingerprinter::load(&path, false).unwrap();
        let raw = RawCredential::new(CredentialKind::Bearer, b"t");
        assert_eq!(a.credential(&raw), b.credential(&raw));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Fingerprinter::load(&path, false),
            Err(KeyError::Exposed { .. })
        ));
        assert!(Fingerprinter::load(&dir.join("missing"), false).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
