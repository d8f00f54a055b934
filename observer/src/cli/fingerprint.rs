//! `observer fingerprint`: the fingerprint a secret read from standard input has in the log,
//! whatever carried it, or (`--legacy`) the per-type one earlier versions wrote. The command
//! layer: reads stdin, loads the key, asks `detect::identity`.

use std::io::Read as _;

use anyhow::Context as _;

use super::{CarrierArg, FingerprintArgs};
use crate::detect::identity::Fingerprinter;
use crate::http::{CredentialKind, parse_authorization};

/// Most bytes read from standard input: far more than any credential.
const MAX_INPUT: u64 = 64 * 1024;

/// A secret as the investigator gave it, and how it was carried when that is known.
#[derive(PartialEq, Eq)]
pub struct Given {
    pub kind: Option<CredentialKind>,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Given({:?}, {} bytes)", self.kind, self.secret.len())
    }
}

/// `observer fingerprint`: the fingerprint of the credential on standard input.
pub fn fingerprint_stdin(args: &FingerprintArgs) -> anyhow::Result<String> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .context("reading the credential from standard input")?;
    if input.len() as u64 > MAX_INPUT {
        anyhow::bail!("standard input holds more than {MAX_INPUT} bytes: give one credential");
    }
    let given = read_input(&input, args.kind)?;
    let key = Fingerprinter::load(&args.key_file, false).with_context(|| {
        format!(
            "observer creates its key on its first run; pass the one it used with --key-file \
             (looked at {})",
            args.key_file.display()
        )
    })?;
    fingerprint(&key, &given, args.legacy)
}

/// The fingerprint of `given` as this version writes it, or as earlier ones did (`legacy`).
pub fn fingerprint(key: &Fingerprinter, given: &Given, legacy: bool) -> anyhow::Result<String> {
    if !legacy {
        return Ok(key.fingerprint(&given.secret));
    }
    let Some(kind) = given.kind else {
        anyhow::bail!(
            "earlier versions hashed how a credential was carried with it: give --type \
             basic|bearer|api_key|cookie with --legacy (run once per type when unsure), or a \
             whole Authorization value (`Bearer ...`)"
        );
    };
    Ok(key.legacy(kind, &given.secret)?)
}

/// Reads a credential as an investigator pastes it: a bare secret, or a whole Authorization
/// value (`Basic ...`, `Bearer ...`, also after `Authorization:`), whose secret is what that
/// carrier's requests are fingerprinted by (Basic: the decoded `user:password`).
pub fn read_input(input: &[u8], kind: Option<CarrierArg>) -> anyhow::Result<Given> {
    let line = input.strip_suffix(b"\n").unwrap_or(input);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        anyhow::bail!(
            "no credential on standard input: pipe it in, e.g. printf '%s' \"$KEY\" | observer \
             fingerprint"
        );
    }
    if line.contains(&b'\n') {
        anyhow::bail!("standard input holds more than one line: give one credential per run");
    }
    let header = b"authorization:";
    let line = match line.get(..header.len()) {
        Some(h) if h.eq_ignore_ascii_case(header) => line[header.len()..].trim_ascii(),
        _ => line,
    };
    let lower = line.to_ascii_lowercase();
    if lower.starts_with(b"basic ") || lower.starts_with(b"bearer ") {
        let raw = parse_authorization(line);
        if let Some(k) = kind
            && k.kind() != raw.kind
        {
            anyhow::bail!(
                "the input is a {} Authorization value, not {}: drop --type or the scheme",
                raw.kind.as_str(),
                k.kind().as_str()
            );
        }
        if raw.is_empty() {
            anyhow::bail!("the Authorization value on standard input carries no secret");
        }
        return Ok(Given {
            kind: Some(raw.kind),
            secret: raw.secret().to_vec(),
        });
    }
    let secret = match kind {
        Some(CarrierArg::Basic) if !line.contains(&b':') => {
            // The base64 of a Basic header, without its scheme.
            let raw = parse_authorization(&[b"Basic ", line].concat());
            if !raw.secret().contains(&b':') {
                anyhow::bail!(
                    "a Basic credential is `user:password` or its base64, and this is neither"
                );
            }
            raw.secret().to_vec()
        }
        _ => line.to_vec(),
    };
    Ok(Given {
        kind: kind.map(CarrierArg::kind),
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(input: &str, kind: Option<CarrierArg>, legacy: bool) -> anyhow::Result<String> {
        let key = Fingerprinter::with_key(b"0123456789abcdef0123456789abcdef");
        fingerprint(&key, &read_input(input.as_bytes(), kind)?, legacy)
    }

    #[test]
    fn a_bare_secret_needs_no_type() {
        // HMAC-SHA256(key, "secret" 0 "sk_live_4f9a"), as requests carrying it have.
        let want = "3c0e2bdbf71601649b444d01eda42844";
        for input in ["sk_live_4f9a", "sk_live_4f9a\n", "sk_live_4f9a\r\n"] {
            assert_eq!(fp(input, None, false).unwrap(), want);
        }
        for input in [
            "Bearer sk_live_4f9a",
            "bearer   sk_live_4f9a \n",
            "Authorization: Bearer sk_live_4f9a",
        ] {
            assert_eq!(fp(input, None, false).unwrap(), want, "{input}");
        }
        // --type changes nothing where the type no longer counts.
        for kind in [CarrierArg::ApiKey, CarrierArg::Bearer, CarrierArg::Query] {
            assert_eq!(fp("sk_live_4f9a", Some(kind), false).unwrap(), want);
        }
    }

    #[test]
    fn basic_is_user_and_password_however_given() {
        let header = fp("Basic YWxpY2U6d29uZGVybGFuZA==\n", None, false).unwrap();
        assert_eq!(fp("alice:wonderland", None, false).unwrap(), header);
        let bare = Some(CarrierArg::Basic);
        assert_eq!(fp("alice:wonderland", bare, false).unwrap(), header);
        assert_eq!(fp("YWxpY2U6d29uZGVybGFuZA==", bare, false).unwrap(), header);
        assert!(
            fp("bm90LWJhc2lj", bare, false).is_err(),
            "base64 without a colon"
        );
        assert!(
            fp("Bearer tok", bare, false).is_err(),
            "another scheme than --type"
        );
    }

    #[test]
    fn legacy_fingerprints_need_the_type() {
        // HMAC-SHA256(key, "credential:<type>" 0 secret): what earlier versions wrote.
        let api = "c8d90c45af8fa43b21bb200e4c8a6e07";
        assert_eq!(
            fp("sk_live_4f9a", Some(CarrierArg::ApiKey), true).unwrap(),
            api
        );
        let bearer = "f5e6997d7d8175922b8f528b76c63a4f";
        assert_eq!(fp("Bearer sk_live_4f9a", None, true).unwrap(), bearer);
        assert_eq!(
            fp("sk_live_4f9a", Some(CarrierArg::Bearer), true).unwrap(),
            bearer
        );
        let basic = "517971d874c9ae391b88509eff254280";
        assert_eq!(
            fp("Basic YWxpY2U6d29uZGVybGFuZA==", None, true).unwrap(),
            basic
        );
        assert_eq!(
            fp("alice:wonderland", Some(CarrierArg::Basic), true).unwrap(),
            basic
        );
        let no_type = fp("sk_live_4f9a", None, true).unwrap_err().to_string();
        assert!(no_type.contains("--type"), "{no_type}");
        let query = fp("k", Some(CarrierArg::Query), true)
            .unwrap_err()
            .to_string();
        assert!(query.contains("query parameters"), "{query}");
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        for (input, says) in [
            ("", "no credential"),
            ("\n", "no credential"),
            ("a\nb", "more than one line"),
            ("Bearer ", "carries no secret"),
        ] {
            let e = fp(input, None, false).unwrap_err().to_string();
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }
}
