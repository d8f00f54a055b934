//! `observer fingerprint`: the fingerprint a credential read from standard input has in the
//! log. The command layer: reads stdin, loads the key, asks `detect::identity`.

use std::io::Read as _;

use anyhow::Context as _;

use super::FingerprintArgs;
use crate::detect::identity::Fingerprinter;
use crate::http::{CredentialKind, RawCredential, parse_authorization};

/// `observer fingerprint`: the fingerprint of the credential on standard input.
pub fn fingerprint_stdin(args: &FingerprintArgs) -> anyhow::Result<String> {
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
}
