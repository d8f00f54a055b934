//! The user's token formats: where they redact, and the patterns refused at start with a
//! message that names them.

use super::patterns::{MAX_PATTERN_BYTES, PATTERN_SIZE_LIMIT};
use super::*;

fn patterns(list: &[&str]) -> Result<SecretPatterns, PatternError> {
    SecretPatterns::new(list.iter().map(|p| p.to_string()).collect())
}

fn redactor(list: &[&str]) -> Redactor {
    Redactor::new(patterns(list).expect("valid patterns"))
}

const KEY: &str = "acme_live_0123456789abcdef";

#[test]
fn a_user_format_is_redacted_in_path_segments_and_query_values() {
    let r = redactor(&["acme_live_[0-9a-f]{16}"]);
    let target = format!("/v1/keys/{KEY}/rotate?q={KEY}&page=2&{KEY}");
    // Short enough and regular enough that no built-in format takes it.
    assert_eq!(
        Redactor::default().split_target(&target),
        (
            format!("/v1/keys/{KEY}/rotate"),
            Some(format!("q={KEY}&page=2&{KEY}"))
        )
    );
    assert_eq!(
        r.split_target(&target),
        (
            "/v1/keys/REDACTED/rotate".to_string(),
            Some("q=REDACTED&page=2&REDACTED".to_string())
        )
    );
    // A token inside a segment or value takes all of it, as a built-in format does; so does
    // a percent-encoded one, and one in a path parameter.
    let (path, q) = r.split_target(&format!(
        "/files/{KEY}.json;v={KEY}/x?ref=key:{KEY}&e=acme%5Flive_0123456789abcdef"
    ));
    assert_eq!(path, "/files/REDACTED;v=REDACTED/x");
    assert_eq!(q.as_deref(), Some("ref=REDACTED&e=REDACTED"));
    // Other segments and values stay, and a near miss is not a match.
    let (path, q) = r.split_target("/v1/keys/acme_live_0123/rotate?q=acme_test_0123456789abcdef");
    assert_eq!(path, "/v1/keys/acme_live_0123/rotate");
    assert_eq!(q.as_deref(), Some("q=acme_test_0123456789abcdef"));
}

#[test]
fn anchored_patterns_match_whole_segments_and_case_follows_the_pattern() {
    let r = redactor(&["^S[0-9]{10}$", "(?i)sess-[a-z0-9]{8}"]);
    assert_eq!(
        r.split_target("/a/S0123456789/b/xS0123456789/c/SESS-ab12cd34x")
            .0,
        "/a/REDACTED/b/xS0123456789/c/REDACTED"
    );
    let exact = redactor(&["sess-[a-z0-9]{8}"]);
    assert_eq!(exact.split_target("/c/SESS-ab12cd34").0, "/c/SESS-ab12cd34");
}

#[test]
fn a_cut_target_is_redacted_with_the_user_formats_too() {
    let r = redactor(&["acme_live_[0-9a-f]{16}"]);
    let (path, q) = r.split_cut_target(&format!("/k/{KEY}/x?a={KEY}&b=1&c=Ab"));
    assert_eq!(path, "/k/REDACTED/x");
    assert_eq!(q.as_deref(), Some("a=REDACTED&b=1&c=REDACTED"));
}

#[test]
fn an_invalid_pattern_is_refused_with_its_text() {
    for bad in ["acme_(live", "tok[0-9", "(?=lookahead)x", "x{2,1}"] {
        let e = patterns(&["fine_[0-9]{8}", bad]).unwrap_err();
        assert!(matches!(e, PatternError::Invalid { .. }), "{bad}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("\"{bad}\"")), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    // A control character cannot break the message's line.
    let e = patterns(&["tok\n(["]).unwrap_err().to_string();
    assert!(e.contains(r#""tok\n([""#) && !e.contains('\n'), "{e}");
}

#[test]
fn a_pattern_too_large_is_refused() {
    // A long repetition of a Unicode class compiles to megabytes.
    let e = patterns(&[r"\w{200}"]).unwrap_err();
    assert_eq!(
        e,
        PatternError::TooLarge {
            pattern: r"\w{200}".into(),
            limit: PATTERN_SIZE_LIMIT
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains(r#""\w{200}""#) && msg.contains("(?-u)"),
        "{msg}"
    );
    // Its ASCII form is small enough.
    patterns(&["[A-Za-z0-9_]{200}"]).unwrap();
    let long = format!("tok_{}", "[0-9]".repeat(MAX_PATTERN_BYTES));
    let e = patterns(&[&long]).unwrap_err();
    assert!(
        matches!(e, PatternError::TooLong { len, .. } if len == long.len()),
        "{e:?}"
    );
    assert!(
        e.to_string().len() < 300,
        "the message quotes the start only"
    );
    let many: Vec<String> = (0..=MAX_PATTERNS)
        .map(|i| format!("k{i}_[0-9]{{8}}"))
        .collect();
    assert_eq!(
        SecretPatterns::new(many).unwrap_err(),
        PatternError::TooMany {
            count: MAX_PATTERNS + 1
        }
    );
}

#[test]
fn a_pattern_that_could_redact_everything_or_nothing_is_refused() {
    for empty in ["[0-9a-f]*", "x?", r"\b", "(?m)^", "a|"] {
        assert_eq!(
            patterns(&[empty]).unwrap_err(),
            PatternError::MatchesEmpty {
                pattern: empty.into()
            },
            "{empty}"
        );
    }
    assert!(matches!(
        patterns(&["[a&&b]"]).unwrap_err(),
        PatternError::NeverMatches { .. }
    ));
}

#[test]
fn patterns_compare_and_print_by_their_text() {
    let a = patterns(&["k_[0-9]{8}"]).unwrap();
    assert_eq!(a, patterns(&["k_[0-9]{8}"]).unwrap());
    assert_ne!(a, patterns(&["k_[0-9]{9}"]).unwrap());
    assert_ne!(a, SecretPatterns::default());
    assert_eq!(format!("{a:?}"), r#"SecretPatterns(["k_[0-9]{8}"])"#);
    assert!(!SecretPatterns::default().matches("anything"));
}
