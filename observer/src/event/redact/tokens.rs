//! What a secret looks like when nothing names it: the formats of well-known tokens (JWTs,
//! cloud and forge keys, chat and payment tokens) and long high-entropy strings, as they turn up
//! in URL paths (`/reset/<token>`, `/bot<token>/`, webhook paths) and in query values. Pure
//! functions on text; owns the formats only.

/// Prefixes of well-known tokens, each followed by at least `min` characters of the token's
/// alphabet (letters, digits, `_`, `-`).
const PREFIXES: &[(&str, usize)] = &[
    // GitHub: personal, OAuth, user-to-server, server-to-server, refresh; fine-grained.
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    // GitLab: personal, deploy, runner, pipeline trigger, feed tokens.
    ("glpat-", 16),
    ("gldt-", 16),
    ("glrt-", 16),
    ("glptt-", 16),
    ("glft-", 16),
    // Slack bot, user, app-level, legacy tokens; its webhook secrets are long segments.
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxs-", 10),
    ("xoxe-", 10),
    ("xapp-", 10),
    // Stripe secret, restricted and webhook-signing keys.
    ("sk_live_", 10),
    ("sk_test_", 10),
    ("rk_live_", 10),
    ("rk_test_", 10),
    ("whsec_", 10),
    // Google API keys.
    ("AIza", 30),
    // npm, PyPI, Hugging Face, OpenAI-style keys.
    ("npm_", 30),
    ("pypi-", 30),
    ("hf_", 30),
    ("sk-", 20),
];

/// AWS access key ids: a four-letter kind, then 16 upper-case letters and digits.
const AWS_KINDS: &[&str] = &[
    "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
];

/// Shortest run of token characters taken for a random secret when no format names it.
pub const HIGH_ENTROPY_MIN: usize = 32;

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')
}

/// `s` is, or starts with, a secret of a known format or is a long random-looking string.
pub fn looks_like_secret(s: &str) -> bool {
    let b = s.as_bytes();
    known_prefix(b) || aws_key(b) || jwt(b) || telegram_bot(b) || high_entropy(b)
}

fn known_prefix(b: &[u8]) -> bool {
    PREFIXES.iter().any(|(p, min)| {
        b.starts_with(p.as_bytes())
            && b[p.len()..].iter().take_while(|&&c| token_char(c)).count() >= *min
    })
}

fn aws_key(b: &[u8]) -> bool {
    b.len() >= 20
        && AWS_KINDS.iter().any(|k| b.starts_with(k.as_bytes()))
        && b[4..20]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Three base64url parts separated by dots, the first a JSON object (`eyJ` is `{"`).
fn jwt(b: &[u8]) -> bool {
    if !b.starts_with(b"eyJ") {
        return false;
    }
    let mut parts = 0;
    for part in b.split(|&c| c == b'.') {
        parts += 1;
        if parts <= 2 && (part.len() < 4 || !part.iter().all(|&c| token_char(c) || c == b'=')) {
            return false;
        }
    }
    parts == 3
}

/// A chat bot's token as its API puts it in the path: `bot<digits>:<35 characters>`.
fn telegram_bot(b: &[u8]) -> bool {
    let rest = b.strip_prefix(b"bot").unwrap_or(b);
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (6..=12).contains(&digits)
        && rest.get(digits) == Some(&b':')
        && rest[digits + 1..]
            .iter()
            .take_while(|&&c| token_char(c))
            .count()
            >= 30
}

/// At least [`HIGH_ENTROPY_MIN`] characters of a token alphabet mixing letters and digits with
/// few separators: random keys, reset and webhook tokens, hex digests. Slugs (many dashes) and
/// UUIDs (identifiers an investigation needs) are kept.
fn high_entropy(b: &[u8]) -> bool {
    if b.len() < HIGH_ENTROPY_MIN || uuid(b) {
        return false;
    }
    if !b
        .iter()
        .all(|&c| token_char(c) || matches!(c, b'.' | b'~' | b'+' | b'/' | b'='))
    {
        return false;
    }
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let separators = b
        .iter()
        .filter(|c| matches!(c, b'-' | b'_' | b'.' | b'~'))
        .count();
    letters > 0 && digits >= 2 && separators * 8 <= b.len()
}

fn uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
