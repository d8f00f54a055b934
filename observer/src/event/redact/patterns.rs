//! The user's token formats: regular expressions (`redaction.patterns` in the config file,
//! `--redact-pattern` on the command line) for the secrets an API issues in shapes of its own,
//! which the built-in formats ([`super::tokens`]) do not know. Owns their validation, their
//! bounds and their matching; imports nothing of observer.
//!
//! A pattern is searched for, unanchored, in each path segment and query value: a match
//! anywhere in it makes the whole segment or value a secret, as a built-in format does
//! (anchor with `^...$` to match whole segments only). Matching is case-sensitive unless the
//! pattern says `(?i)`.
//!
//! The cost is bounded twice: the `regex` crate matches in time linear in the text (no
//! backtracking, so traffic cannot make a pattern slow), and each pattern is compiled under a
//! size limit, so a pattern that would take much memory is refused at start, not at the
//! first request.

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

/// Most patterns a run takes: each adds to the work done per path segment and query value.
pub const MAX_PATTERNS: usize = 64;

/// Longest pattern text, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Heap one compiled pattern may take (`RegexBuilder::size_limit`). A token format such as
/// `acme_live_[0-9a-f]{24}` takes a few KiB; a long repetition of a Unicode class
/// (`\w{64}`: thousands of code point ranges, each repeated) takes megabytes.
pub const PATTERN_SIZE_LIMIT: usize = 128 << 10;

/// Heap of the compiled set of every pattern: each may use its full limit.
const SET_SIZE_LIMIT: usize = MAX_PATTERNS * PATTERN_SIZE_LIMIT;

/// Cache of the lazy DFA the set matches with (`dfa_size_limit`): past it the matcher clears
/// its cache or falls back to a slower engine, never grows.
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// How much of a refused pattern an error quotes: a pattern near [`MAX_PATTERN_BYTES`] would
/// drown the message.
const QUOTED: usize = 80;

/// Why a pattern was refused; each message quotes the pattern and says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error(
        "\"{pattern}\" is not a regular expression observer can use ({reason}); fix the pattern \
         (the syntax is that of Rust's regex crate: no look-around, no back-references)"
    )]
    Invalid { pattern: String, reason: String },
    #[error(
        "\"{pattern}\" compiles to more than {limit} bytes; make it smaller: shorter \
         repetitions, or ASCII classes ([0-9a-f], [A-Za-z0-9_], or (?-u)) instead of \\w and \\d"
    )]
    TooLarge { pattern: String, limit: usize },
    #[error(
        "\"{pattern}\" can match an empty string, so it would redact every path segment and query \
         value; make it require the token's characters ([0-9a-f]{{24}}, not [0-9a-f]*)"
    )]
    MatchesEmpty { pattern: String },
    #[error("\"{pattern}\" can never match (a class with nothing in it); fix the pattern")]
    NeverMatches { pattern: String },
    #[error(
        "\"{pattern}\"... is {len} bytes long; shorten it to at most {MAX_PATTERN_BYTES} bytes"
    )]
    TooLong { pattern: String, len: usize },
    #[error("{count} patterns are too many; merge some with | into at most {MAX_PATTERNS}")]
    TooMany { count: usize },
}

/// The start of a pattern for a message, cut on a character boundary, its control characters
/// escaped so the message stays one line (backslashes stay as written: `\w`, not `\\w`).
fn quoted(pattern: &str) -> String {
    let mut end = pattern.len().min(QUOTED);
    while !pattern.is_char_boundary(end) {
        end -= 1;
    }
    pattern[..end]
        .chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Checks one pattern as [`SecretPatterns::new`] would, so that a caller holding many can name
/// the one refused.
pub fn check(pattern: &str) -> Result<(), PatternError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(PatternError::TooLong {
            pattern: quoted(pattern),
            len: pattern.len(),
        });
    }
    // The syntax tree says what the compiled program cannot: whether a match may be empty. An
    // empty match is found at the start of any text, so such a pattern redacts everything.
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| PatternError::Invalid {
            pattern: quoted(pattern),
            reason: one_line(&e.to_string()),
        })?;
    match hir.properties().minimum_len() {
        Some(0) => {
            return Err(PatternError::MatchesEmpty {
                pattern: quoted(pattern),
            });
        }
        // A pattern that redacts nothing is a mistake its author wants to hear about.
        None => {
            return Err(PatternError::NeverMatches {
                pattern: quoted(pattern),
            });
        }
        Some(_) => {}
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .map(drop)
        .map_err(|e| refused(pattern, e))
}

fn refused(pattern: &str, e: regex::Error) -> PatternError {
    match e {
        regex::Error::CompiledTooBig(limit) => PatternError::TooLarge {
            pattern: quoted(pattern),
            limit,
        },
        other => PatternError::Invalid {
            pattern: quoted(pattern),
            reason: one_line(&other.to_string()),
        },
    }
}

/// The regex crates explain a syntax error over several lines (the pattern, a caret, the
/// reason): its last line is the reason, and a startup error stays one line.
fn one_line(message: &str) -> String {
    let last = message.lines().rev().find(|l| !l.trim().is_empty());
    last.unwrap_or(message)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// The user's patterns, compiled into one set so a value is scanned once whatever their
/// number. `Default` is no pattern: the built-in formats alone.
#[derive(Clone, Default)]
pub struct SecretPatterns {
    /// As given, for the configuration hash and for messages.
    sources: Vec<String>,
    /// `None` when there is no pattern.
    set: Option<RegexSet>,
}

impl SecretPatterns {
    /// Compiles `patterns`, each checked by [`check`]; the first refused one is the error.
    pub fn new(patterns: Vec<String>) -> Result<Self, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany {
                count: patterns.len(),
            });
        }
        for p in &patterns {
            check(p)?;
        }
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| refused(&patterns.join("|"), e))?;
        Ok(Self {
            sources: patterns,
            set: Some(set),
        })
    }

    /// The patterns as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Some pattern matches somewhere in `s`.
    pub fn matches(&self, s: &str) -> bool {
        self.set.as_ref().is_some_and(|set| set.is_match(s))
    }
}

/// The sources only: the compiled form is theirs, and the configuration hash reads this.
impl std::fmt::Debug for SecretPatterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretPatterns")
            .field(&self.sources)
            .finish()
    }
}

/// Patterns are equal when their sources are: the compiled form follows from them.
impl PartialEq for SecretPatterns {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
    }
}

impl Eq for SecretPatterns {}
