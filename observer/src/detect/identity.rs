//! Who made a request, without keeping secrets: how its credential was carried and a keyed
//! fingerprint of the secret itself, and a keyed hash of the user name it carries.
//!
//! Fingerprints are HMAC-SHA256 under a host secret (a file created 0600 on first run), so the
//! log never holds a credential nor anything an attacker with the log alone could test guesses
//! against. The carrier is not part of what is hashed: a key sent in a header, as a bearer
//! token and in a query parameter has one fingerprint, and an investigator with the key
//! computes it with `observer fingerprint` to find every request it made. Logs of earlier
//! versions hashed the carrier's type along with the secret ([`Fingerprinter::legacy`]).
//!
//! Owns the host key and the fingerprints; the raw credentials come from `http`. Must not
//! import `capture`, `event` or `sink`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{CredentialKind, MAX_SECRET, RawCredential, RawUser};

/// Where the host secret lives unless configured otherwise.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/observer/secret.key";
const KEY_LEN: usize = 32;
/// Hex characters of a fingerprint (128 bits).
const FINGERPRINT_HEX: usize = 32;

/// The HMAC domain of a credential's fingerprint: the secret alone, whatever carried it.
const SECRET_DOMAIN: &[u8] = b"secret";

/// What the log says about a credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credential {
    /// How it was carried.
    pub kind: CredentialKind,
    /// Of the secret alone: the same for every carrier.
    pub fingerprint: String,
    /// Keyed hash of the user name (Basic) or of an unverified JWT `sub`.
    pub user_hash: Option<String>,
}

/// The user name a credential names, if any: Basic's user, or the `sub` of an unverified JWT
/// sent as a bearer token or in a query parameter (`?access_token=`).
fn user_of(c: &RawCredential) -> Option<Vec<u8>> {
    match c.kind {
        CredentialKind::Basic => {
            let colon = c.secret().iter().position(|&b| b == b':')?;
            Some(c.secret()[..colon].to_vec())
        }
        CredentialKind::Bearer | CredentialKind::Query => {
            let parts: Vec<&[u8]> = c.secret().split(|&b| b == b'.').collect();
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error(
        "earlier versions did not fingerprint credentials in query parameters; their logs \
         hold only the redacted url.query: search them by path and time instead"
    )]
    NoQuery,
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

    /// What the log says of `raw`: its carrier, the fingerprint of its secret, and the user
    /// it names.
    pub fn credential(&self, raw: &RawCredential) -> Credential {
        Credential {
            kind: raw.kind,
            fingerprint: self.fingerprint(raw.secret()),
            user_hash: user_of(raw).map(|u| self.user_hash(&u)),
        }
    }

    /// The fingerprint of a secret, whatever carried it: of its first
    /// [`crate::http::MAX_SECRET`] bytes, as requests keep them.
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        self.mac(SECRET_DOMAIN, &secret[..secret.len().min(MAX_SECRET)])
    }

    /// The fingerprint earlier versions wrote for `secret` carried as `kind`: the carrier's
    /// type was hashed with the secret (`credential:<type>`), so one key had one fingerprint
    /// per type, and query parameters had none.
    pub fn legacy(&self, kind: CredentialKind, secret: &[u8]) -> Result<String, LegacyError> {
        match kind {
            CredentialKind::Query => Err(LegacyError::NoQuery),
            kind => {
                let domain = format!("credential:{}", kind.as_str());
                Ok(self.mac(domain.as_bytes(), secret))
            }
        }
    }

    /// The keyed hash of a user name, as `user.hash` carries it: normalised first (trimmed,
    /// lower-cased), so `Alice` in a form and `alice` in Basic auth are one account.
    pub fn user_hash(&self, user: &[u8]) -> String {
        let name = String::from_utf8_lossy(user);
        self.mac(b"user", name.trim().to_lowercase().as_bytes())
    }

    /// The keyed hash of a login body's user name.
    pub fn login_user(&self, user: &RawUser) -> String {
        self.user_hash(user.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_authorization;

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
        // Another key: another fingerprint.
        let g = Fingerprinter::with_key(b"another key of sixteen+ bytes...");
        assert_ne!(g.credential(&raw).fingerprint, c.fingerprint);
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn one_secret_has_one_fingerprint_whatever_carried_it() {
        let f = Fingerprinter::with_key(KEY);
        let names = crate::http::CredentialNames::default();
        let headers: [&[(&str, &str)]; 5] = [
            &[("X-API-Key", "sk_live_4f9a")],
            &[("Authorization", "Bearer sk_live_4f9a")],
            &[],
            &[("Cookie", "session=sk_live_4f9a")],
            &[("Authorization", "Basic c2tfbGl2ZV80ZjlhOg==")],
        ];
        let targets = ["/a", "/a", "/a?api_key=sk%5Flive%5F4f9a", "/a", "/a"];
        let seen: Vec<Credential> = targets
            .iter()
            .zip(headers)
            .map(|(t, h)| {
                let raw = names
                    .extract(t, h.iter().map(|(n, v)| (*n, v.as_bytes())))
                    .expect("a credential");
                f.credential(&raw)
            })
            .collect();
        // HMAC-SHA256(key, "secret" 0 "sk_live_4f9a"), computed apart (Python's hmac).
        for c in &seen[..4] {
            assert_eq!(c.fingerprint, "3c0e2bdbf71601649b444d01eda42844", "{c:?}");
        }
        let kinds: Vec<&str> = seen.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["api_key", "bearer", "query", "cookie", "basic"]);
        // Basic's secret is `user:password`: `sk_live_4f9a:` is another secret.
        assert_ne!(seen[4].fingerprint, seen[0].fingerprint);
    }

    #[test]
    fn legacy_fingerprints_are_those_earlier_versions_wrote() {
        let f = Fingerprinter::with_key(KEY);
        let legacy = |kind| f.legacy(kind, b"sk_live_4f9a");
        // HMAC-SHA256(key, "credential:<type>" 0 secret), as earlier versions computed it.
        assert_eq!(
            legacy(CredentialKind::ApiKey).unwrap(),
            "c8d90c45af8fa43b21bb200e4c8a6e07"
        );
        assert_eq!(
            legacy(CredentialKind::Bearer).unwrap(),
            "f5e6997d7d8175922b8f528b76c63a4f"
        );
        assert_eq!(
            f.legacy(CredentialKind::Basic, b"alice:wonderland")
                .unwrap(),
            "517971d874c9ae391b88509eff254280"
        );
        assert_eq!(legacy(CredentialKind::Query), Err(LegacyError::NoQuery));
        // Never equal to the new fingerprint of the same secret.
        let now = f.fingerprint(b"sk_live_4f9a");
        for kind in [
            CredentialKind::ApiKey,
            CredentialKind::Bearer,
            CredentialKind::Cookie,
        ] {
            assert_ne!(legacy(kind).unwrap(), now);
        }
    }

    #[test]
    fn long_secrets_are_fingerprinted_by_their_kept_prefix() {
        let f = Fingerprinter::with_key(KEY);
        let long = vec![b'k'; MAX_SECRET + 100];
        let raw = RawCredential::new(CredentialKind::ApiKey, &long);
        assert_eq!(f.credential(&raw).fingerprint, f.fingerprint(&long));
        assert_eq!(f.fingerprint(&long), f.fingerprint(&long[..MAX_SECRET]));
        assert_ne!(f.fingerprint(&long), f.fingerprint(&long[..MAX_SECRET - 1]));
    }

    #[test]
    fn jwt_sub_is_hashed_without_verification() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"bob"}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let raw = parse_authorization(format!("Bearer {token}").as_bytes());
        let f = Fingerprinter::with_key(&[7; 32]);
        assert_eq!(f.credential(&raw).user_hash, Some(f.user_hash(b"bob")));
        // A JWT in a query parameter names its subject too.
        let query = RawCredential::new(CredentialKind::Query, token.as_bytes());
        assert_eq!(f.credential(&query).user_hash, Some(f.user_hash(b"bob")));
        // Garbage tokens name nobody and never panic.
        for t in ["a.b.c", "...", "x", "a.%%%.c"] {
            let raw = RawCredential::new(CredentialKind::Bearer, t.as_bytes());
            assert_eq!(f.credential(&raw).user_hash, None);
        }
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

    #[test]
    fn user_names_are_normalised_before_hashing() {
        let f = Fingerprinter::with_key(&[9; 32]);
        let h = f.user_hash(b"alice@example.com");
        assert_eq!(f.user_hash(b"  Alice@Example.COM\t"), h);
        assert_eq!(f.login_user(&RawUser::new(b"ALICE@example.com ")), h);
        assert_ne!(f.user_hash(b"bob@example.com"), h);
        assert_eq!(
            f.user_hash("ÉLODIE".as_bytes()),
            f.user_hash("élodie".as_bytes())
        );
        // Invalid UTF-8 is hashed as replaced, never a panic.
        assert_eq!(f.user_hash(b"\xff").len(), 32);
    }
}
