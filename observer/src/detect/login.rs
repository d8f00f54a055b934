//! Login attempts: which exchanges are logins (a POST to a route that looks like one, a route
//! the config names, a body that carries a user name and a password) and how each ended, in
//! the OWASP Logging Vocabulary's terms.
//!
//! Stateless and plain data: the method, the path, the status and the prefix of the response
//! body in, an outcome out. Imports nothing of the crate.

/// Last path segments (lower case, an extension such as `.php` left out) that make a POST a
/// login attempt unless configured otherwise.
pub const DEFAULT_LOGIN_SEGMENTS: &[&str] = &[
    "login",
    "log-in",
    "log_in",
    "signin",
    "sign-in",
    "sign_in",
    "logon",
    "log-on",
    "auth",
    "authenticate",
    "authentication",
    "token",
    "access_token",
    "session",
    "sessions",
    "j_security_check",
    "wp-login",
];

/// A login route named in the config file (`[[identity.login]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRoute {
    /// Upper case; `None` for any method.
    pub method: Option<String>,
    /// A path pattern: `*` matches any run of characters within a segment, a segment `**` any
    /// number of segments; anything else matches itself.
    pub path: String,
    /// Statuses that mean a failed login on this route, besides every 4xx.
    pub failure_statuses: Vec<u16>,
    /// Text whose presence in the copied part of a 2xx/3xx response body means a failed login
    /// (APIs that answer 200 with an error, GraphQL included).
    pub failure_marker: Option<String>,
}

/// Which exchanges are login attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginConfig {
    /// Routes named in the config file, tried first.
    pub routes: Vec<LoginRoute>,
    /// Last path segments that make a POST a login attempt.
    pub segments: Vec<String>,
    /// Requests whose body carries a user name and a password are logins, whatever the route.
    pub credential_bodies: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            segments: DEFAULT_LOGIN_SEGMENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            credential_bodies: true,
        }
    }
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// `authn_login_success`: 2xx or 3xx.
    Success,
    /// `authn_login_fail`: a 4xx (400 and 422 included), a configured failure status, or a
    /// success carrying the configured failure marker.
    Fail,
    /// `authn_login_lock`: 423 Locked, or 429 Too Many Requests.
    Lock,
}

/// A login attempt, and the configured route it matched, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub route: Option<&'a LoginRoute>,
}

impl LoginConfig {
    /// Whether a request is a login attempt: a configured route first, then a POST whose last
    /// path segment looks like a login, then (when `credential_body`) a body carrying
    /// credentials.
    pub fn attempt(&self, method: &str, path: &str, credential_body: bool) -> Option<Attempt<'_>> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if let Some(route) = self.routes.iter().find(|r| {
            r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_matches(&r.path, path)
        }) {
            return Some(Attempt { route: Some(route) });
        }
        let looks = method.eq_ignore_ascii_case("POST") && {
            let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or_default();
            let stem = last.split_once('.').map_or(last, |(stem, _)| stem);
            self.segments.iter().any(|s| s.eq_ignore_ascii_case(stem))
        };
        (looks || (self.credential_bodies && credential_body)).then_some(Attempt { route: None })
    }
}

impl Attempt<'_> {
    /// How the attempt ended; `None` when the answer says nothing of the credentials (a
    /// server error, an informational status).
    pub fn outcome(&self, status: u16, response_body: &[u8]) -> Option<LoginOutcome> {
        if let Some(r) = self.route {
            if r.failure_statuses.contains(&status) {
                return Some(LoginOutcome::Fail);
            }
            if let Some(m) = r.failure_marker.as_deref()
                && (200..400).contains(&status)
                && memchr::memmem::find(response_body, m.as_bytes()).is_some()
            {
                return Some(LoginOutcome::Fail);
            }
        }
        match status {
            423 | 429 => Some(LoginOutcome::Lock),
            200..=399 => Some(LoginOutcome::Success),
            400..=499 => Some(LoginOutcome::Fail),
            _ => None,
        }
    }
}

/// Whether `path` matches `pattern` (see [`LoginRoute::path`]). Segment by segment, so the
/// work is bounded by the product of their lengths whatever the pattern.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    // reach[j]: the pattern's first i segments match the path's first j.
    let mut reach = vec![false; segs.len() + 1];
    reach[0] = true;
    for p in &pat {
        let mut next = vec![false; segs.len() + 1];
        if *p == "**" {
            let mut any = false;
            for j in 0..=segs.len() {
                any |= reach[j];
                next[j] = any;
            }
        } else {
            for j in 0..segs.len() {
                if reach[j] && segment_matches(p.as_bytes(), segs[j].as_bytes()) {
                    next[j + 1] = true;
                }
            }
        }
        reach = next;
    }
    reach[segs.len()]
}

/// One segment against a pattern with `*` wildcards: the usual linear-time greedy match.
fn segment_matches(p: &[u8], s: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == s[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_login(c: &LoginConfig, method: &str, path: &str) -> bool {
        c.attempt(method, path, false).is_some()
    }

    #[test]
    fn default_routes_are_posts_to_login_looking_last_segments() {
        let c = LoginConfig::default();
        for p in [
            "/login",
            "/login/",
            "/api/v1/auth/login",
            "/auth",
            "/users/sign_in",
            "/sign-in?next=/",
            "/oauth/token",
            "/auth/jwt/login",
            "/session",
            "/api/sessions",
            "/wp-login.php",
            "/LOGIN",
            "/j_security_check",
        ] {
            assert!(is_login(&c, "POST", p), "{p}");
        }
        for p in [
            "/auth/register",
            "/auth/logout",
            "/api/tokens/123",
            "/blogin",
            "/",
            "",
            "/api/items",
        ] {
            assert!(!is_login(&c, "POST", p), "{p}");
        }
        assert!(!is_login(&c, "GET", "/login"), "a GET shows the form");
        // A body with credentials makes any route a login, unless turned off.
        assert!(c.attempt("POST", "/api/v2/do", true).is_some());
        let off = LoginConfig {
            credential_bodies: false,
            ..LoginConfig::default()
        };
        assert!(off.attempt("POST", "/api/v2/do", true).is_none());
    }

    #[test]
    fn configured_routes_match_method_and_pattern() {
        let route = |method: Option<&str>, path: &str| LoginRoute {
            method: method.map(str::to_string),
            path: path.into(),
            failure_statuses: Vec::new(),
            failure_marker: None,
        };
        let c = LoginConfig {
            routes: vec![
                route(Some("PUT"), "/api/*/credentials"),
                route(None, "/graphql"),
                route(Some("POST"), "/tenants/**/enter"),
            ],
            segments: Vec::new(),
            credential_bodies: false,
        };
        assert!(is_login(&c, "PUT", "/api/v3/credentials"));
        assert!(!is_login(&c, "POST", "/api/v3/credentials"));
        assert!(
            !is_login(&c, "PUT", "/api/v3/x/credentials"),
            "* stays in a segment"
        );
        assert!(is_login(&c, "GET", "/graphql?query=x"));
        assert!(is_login(&c, "POST", "/tenants/enter"));
        assert!(is_login(&c, "POST", "/tenants/a/b/c/enter"));
        assert!(!is_login(&c, "POST", "/tenants/a/b/c/leave"));
        assert!(!is_login(&c, "POST", "/login"), "no default segments");
    }

    #[test]
    fn patterns_match_in_bounded_time() {
        assert!(path_matches("/a*b*c", "/aXbYc"));
        assert!(!path_matches("/a*b*c", "/aXbY"));
        assert!(path_matches("/*", "/"));
        assert!(path_matches("**", "/any/thing"));
        let long = format!("/{}", "a".repeat(5000));
        let pat = format!("/{}b", "*a".repeat(200));
        assert!(!path_matches(&pat, &long));
        let many = format!("/{}x", "**/".repeat(200));
        assert!(path_matches(&many, &"/x".repeat(500)));
    }

    #[test]
    fn outcomes_follow_the_vocabulary() {
        use LoginOutcome::*;
        let plain = Attempt { route: None };
        let cases = [
            (200, Some(Success)),
            (204, Some(Success)),
            (302, Some(Success)),
            (400, Some(Fail)),
            (401, Some(Fail)),
            (403, Some(Fail)),
            (422, Some(Fail)),
            (423, Some(Lock)),
            (429, Some(Lock)),
            (500, None),
            (503, None),
            (101, None),
        ];
        for (status, want) in cases {
            assert_eq!(plain.outcome(status, b""), want, "{status}");
        }
        let route = LoginRoute {
            method: None,
            path: "/graphql".into(),
            failure_statuses: vec![302],
            failure_marker: Some("\"INVALID_CREDENTIALS\"".into()),
        };
        let r = Attempt {
            route: Some(&route),
        };
        assert_eq!(r.outcome(302, b""), Some(Fail));
        assert_eq!(
            r.outcome(200, br#"{"errors":[{"code":"INVALID_CREDENTIALS"}]}"#),
            Some(Fail)
        );
        assert_eq!(r.outcome(200, br#"{"data":{"token":"x"}}"#), Some(Success));
        // A marker in an error body changes nothing: it failed anyway.
        assert_eq!(r.outcome(401, b"\"INVALID_CREDENTIALS\""), Some(Fail));
    }
}
