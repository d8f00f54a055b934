//! Detection: what an exchange means for security.
//!
//! Classification is stateless: one exchange in, its OWASP Logging Vocabulary action, ECS
//! category/type and outcome out. The windowed rules in [`rules`] are stateful; [`identity`]
//! fingerprints credentials under the host key.
//!
//! Imports only `http` (the raw credentials it fingerprints), never `capture`, `conn`, `event`
//! or `sink`.

pub mod identity;
pub mod rules;

/// How one exchange is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// `event.action`, from the OWASP Logging Vocabulary where one applies.
    pub action: &'static str,
    pub outcome: Outcome,
    pub category: &'static [&'static str],
    pub kind: &'static [&'static str],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

pub fn classify(status: u16) -> Classification {
    use Outcome::*;
    let (action, outcome, category, kind): (_, _, &'static [_], &'static [_]) = match status {
        401 | 407 => (
            "authn_login_fail",
            Failure,
            &["web", "authentication"],
            &["access", "denied"],
        ),
        403 => (
            "authz_fail",
            Failure,
            &["web", "iam"],
            &["access", "denied"],
        ),
        400 | 422 => (
            "input_validation_fail",
            Failure,
            &["web"],
            &["access", "error"],
        ),
        100..=399 => ("http_request", Success, &["web"], &["access"]),
        400..=499 => ("http_request", Failure, &["web"], &["access", "denied"]),
        500..=599 => ("http_request", Failure, &["web"], &["access", "error"]),
        _ => ("http_request", Unknown, &["web"], &["access"]),
    };
    Classification {
        action,
        outcome,
        category,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary() {
        assert_eq!(classify(401).action, "authn_login_fail");
        assert_eq!(classify(407).action, "authn_login_fail");
        assert_eq!(classify(403).action, "authz_fail");
        assert_eq!(classify(400).action, "input_validation_fail");
        assert_eq!(classify(422).action, "input_validation_fail");
        assert_eq!(classify(200).outcome, Outcome::Success);
        assert_eq!(classify(302).outcome, Outcome::Success);
        assert_eq!(classify(404).outcome, Outcome::Failure);
        assert_eq!(classify(503).kind, &["access", "error"]);
        assert_eq!(classify(999).outcome, Outcome::Unknown);
    }
}
