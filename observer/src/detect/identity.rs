//! Who made a request, without keeping secrets: the credential's type and a keyed fingerprint,
//! and a keyed hash of the user name it carries.
//!
//! Fingerprints are HMAC-SHA256 under a host secret (a file created 0600 on first run), so the
//! log never holds a credential nor anything an attacker with the log alone could test guesses
//! against. An investigator with the key computes the fingerprint of a leaked credential with
//! `observer fingerprint` and finds every request it made.
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

use crate::http::{CredentialKind, RawCredential, RawUser};

/// Where the host secret lives unless configured otherwise.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/observer/secret.key";
const KEY_LEN: usize = 32;
/// Hex characters of a fingerprint (128 bits).
const FINGERPRINT_HEX: usize = 32;

/// What the log says about a credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credential {
    pub kind: CredentialKind,
    pub fingerprint: String,
    /// Keyed hash of the user name (Basic) or of an unverified JWT `sub`.
    pub user_hash: Option<String>,
}

/// The user name a credential names, if any: Basic's user, or an unverified JWT's `sub`.
fn user_of(c: &RawCredential) -> Option<Vec<u8>> {
    match c.kind {
        CredentialKind::Basic => {
            let colon = c.secret().iter().position(|&b| b == b':')?;
            Some(c.secret()[..colon].to_vec())
        }
        CredentialKind::Bearer => {
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
            fingerprint: self.mac(domain.as_bytes(), raw.secret()),
            user_hash: user_of(raw).map(|u| self.user_hash(&u)),
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
