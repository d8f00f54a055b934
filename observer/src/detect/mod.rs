//! Detection: what an exchange means for security.
//!
//! Classification is stateless: one exchange in, its OWASP Logging Vocabulary action, ECS
//! category/type and outcome out ([`Classifier`]; [`login`] tells login attempts and how they
//! ended). The windowed rules in [`rules`] are stateful; [`identity`] fingerprints credentials
//! under the host key; [`grpc`] reads a gRPC call's status in the same terms.
//!
//! Imports only `http` (the exchanges it classifies, the raw credentials it fingerprints),
//! never `capture`, `conn`, `event` or `sink`.

pub mod grpc;
pub mod identity;
pub mod login;
pub mod rules;

use crate::http::Exchange;
use login::{LoginConfig, LoginOutcome};

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

/// What classification says of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub class: Classification,
    /// Set when the exchange was a login attempt whose answer tells how it ended.
    pub login: Option<LoginOutcome>,
    /// The known attack tool its User-Agent names (`user_agent.name`).
    pub tool: Option<&'a str>,
}

/// Classifies exchanges: login attempts by [`LoginConfig`], the rest by status; User-Agents
/// of known attack tools by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classifier {
    pub login: LoginConfig,
    /// Lower-case User-Agent words of attack tools, tried in order.
    pub tools: Vec<String>,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new(LoginConfig::default())
    }
}

impl Classifier {
    pub fn new(login: LoginConfig) -> Self {
        Self {
            login,
            tools: rules::DEFAULT_ATTACK_TOOLS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// The attack tool a User-Agent names, matched case-insensitively anywhere in it.
    pub fn tool(&self, user_agent: &str) -> Option<&str> {
        let head = &user_agent.as_bytes()[..user_agent.len().min(512)];
        let ua = head.to_ascii_lowercase();
        self.tools
            .iter()
            .find(|t| memchr::memmem::find(&ua, t.as_bytes()).is_some())
            .map(String::as_str)
    }

    pub fn classify(&self, x: &Exchange) -> Verdict<'_> {
        let status = grpc::effective_status(x);
        let login = self
            .login
            .attempt(
                &x.request.method.value,
                &x.request.target.value,
                x.request.login.credentials(),
            )
            .and_then(|a| a.outcome(status, &x.response.body_prefix));
        Verdict {
            class: login.map_or_else(|| classify(status), classify_login),
            login,
            tool: x
                .request
                .user_agent
                .as_ref()
                .and_then(|u| self.tool(&u.value)),
        }
    }
}

/// A login attempt's classification.
pub fn classify_login(o: LoginOutcome) -> Classification {
    let authn: &'static [&'static str] = &["web", "authentication"];
    let (action, outcome, kind): (_, _, &'static [_]) = match o {
        LoginOutcome::Success => (
            "authn_login_success",
            Outcome::Success,
            &["access", "start"],
        ),
        LoginOutcome::Fail => ("authn_login_fail", Outcome::Failure, &["access", "denied"]),
        LoginOutcome::Lock => ("authn_login_lock", Outcome::Failure, &["access", "denied"]),
    };
    Classification {
        action,
        outcome,
        category: authn,
        kind,
    }
}

/// An exchange that is not a login attempt, by its status alone.
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
        429 => (
            "excess_rate_limit_exceeded",
            Failure,
            &["web"],
            &["access", "denied"],
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
        assert_eq!(classify(429).action, "excess_rate_limit_exceeded");
        assert_eq!(classify(423).action, "http_request");
    }

    #[test]
    fn attack_tools_are_told_by_their_user_agent() {
        let c = Classifier::default();
        assert_eq!(c.tool("Mozilla/4.0 (Hydra)"), Some("hydra"));
        assert_eq!(
            c.tool("sqlmap/1.7.2#stable (https://sqlmap.org)"),
            Some("sqlmap")
        );
        assert_eq!(
            c.tool("Mozilla/5.0 (compatible; Nmap Scripting Engine)"),
            Some("nmap")
        );
        assert_eq!(c.tool("DirBuster-1.0-RC1"), Some("dirbuster"));
        assert_eq!(c.tool("Fuzz Faster U Fool v2.1.0 (ffuf)"), Some("ffuf"));
        assert_eq!(c.tool("curl/8.1.2"), None);
        assert_eq!(
            c.tool("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
            None
        );
        assert_eq!(c.tool(""), None);
    }

    #[test]
    fn login_attempts_have_their_own_words() {
        assert_eq!(
            classify_login(LoginOutcome::Success).action,
            "authn_login_success"
        );
        assert_eq!(
            classify_login(LoginOutcome::Success).outcome,
            Outcome::Success
        );
        assert_eq!(
            classify_login(LoginOutcome::Fail).action,
            "authn_login_fail"
        );
        assert_eq!(
            classify_login(LoginOutcome::Lock).action,
            "authn_login_lock"
        );
        assert_eq!(
            classify_login(LoginOutcome::Lock).category,
            &["web", "authentication"]
        );
    }
}
