//! The `--config` file (TOML): detection thresholds, credential names and redaction patterns
//! over the defaults, validated, every key named in its error; `[run]` is in `run_file`.

use std::path::PathBuf;

use super::ConfigError;
use crate::detect::login::{LoginConfig, LoginRoute};
use crate::detect::rules::{DetectConfig, Spread, Threshold};
use crate::event::redact::MAX_PATTERNS;
use crate::event::{Redactor, SecretPatterns, check_pattern};
use crate::http::form::norm;
use crate::http::{CredentialNames, FieldNames, TrustedProxies};

/// The `--config` file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default)]
    pub detection: DetectionFile,
    #[serde(default)]
    pub redaction: RedactionFile,
    #[serde(default)]
    pub run: super::run_file::RunFile,
}

/// `[redaction]`: what is redacted beyond the built-in rules.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionFile {
    /// Token formats (regular expressions) redacted wherever the built-in formats are.
    pub patterns: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    pub key_file: Option<PathBuf>,
    pub api_key_headers: Option<Vec<String>>,
    /// Query parameters that carry credentials (replaces the default list).
    pub query_credentials: Option<Vec<String>>,
    pub session_cookies: Option<Vec<String>>,
    /// `[[identity.login]]`: login routes, tried before the default ones.
    pub login: Option<Vec<LoginRouteFile>>,
    /// Last path segments that make a POST a login attempt (replaces the default list).
    pub login_segments: Option<Vec<String>>,
    /// Requests whose body carries a user name and a password are logins on any route.
    pub login_bodies: Option<bool>,
    /// Body fields that name the user of a login, in order of preference.
    pub user_fields: Option<Vec<String>>,
    /// Body fields that carry its password (hashed in memory for password spraying, never
    /// written).
    pub password_fields: Option<Vec<String>>,
    /// Reverse proxies whose forwarding headers name the client (as `--trusted-proxy`).
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRouteFile {
    /// `POST` unless given; `*` for any method.
    pub method: Option<String>,
    pub path: String,
    pub failure_statuses: Option<Vec<u16>>,
    pub failure_marker: Option<String>,
}

/// Most `[[identity.login]]` routes.
const MAX_LOGIN_ROUTES: usize = 256;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionFile {
    pub cooldown_seconds: Option<u64>,
    pub max_keys: Option<usize>,
    pub brute_force: Option<ThresholdFile>,
    pub credential_stuffing: Option<ThresholdFile>,
    pub distributed_brute_force: Option<ThresholdFile>,
    pub authz_probing: Option<ThresholdFile>,
    pub excess_404: Option<ThresholdFile>,
    pub error_spike: Option<ErrorSpikeFile>,
    pub credential_stuffing_accounts: Option<ThresholdFile>,
    pub success_after_fail: Option<ThresholdFile>,
    pub attack_tool: Option<AttackToolFile>,
    pub distributed_credential_stuffing: Option<SpreadFile>,
    pub password_spraying: Option<ThresholdFile>,
}

/// `[detection.distributed_credential_stuffing]`: failed logins across many sources.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadFile {
    pub enabled: Option<bool>,
    /// Distinct accounts whose logins failed.
    pub accounts: Option<u64>,
    /// Distinct sources those failures came from.
    pub sources: Option<u64>,
    /// Fraction of the service's login attempts that failed.
    pub failure_ratio: Option<f64>,
    pub min_attempts: Option<u64>,
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackToolFile {
    pub enabled: Option<bool>,
    /// User-Agent words (replaces the default list).
    pub tools: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFile {
    pub enabled: Option<bool>,
    pub threshold: Option<u64>,
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpikeFile {
    pub enabled: Option<bool>,
    pub ratio: Option<f64>,
    pub min_requests: Option<u64>,
    pub window_seconds: Option<u64>,
    pub consecutive: Option<u64>,
}

pub(super) const SEC: u64 = 1_000_000_000;
/// Longest window a rule may have (a day): keeps nanosecond arithmetic far from overflow.
const MAX_WINDOW_SECONDS: u64 = 86_400;

fn bad(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn seconds(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 || v > MAX_WINDOW_SECONDS {
        return Err(bad(key, "must be from 1 to 86400 seconds"));
    }
    Ok(v * SEC)
}

fn apply_threshold(
    base: &mut Threshold,
    f: &Option<ThresholdFile>,
    rule: &str,
) -> Result<(), ConfigError> {
    let Some(f) = f else { return Ok(()) };
    if let Some(e) = f.enabled {
        base.enabled = e;
    }
    if let Some(t) = f.threshold {
        if t == 0 {
            return Err(bad(
                &format!("detection.{rule}.threshold"),
                "must be at least 1",
            ));
        }
        base.threshold = t;
    }
    if let Some(w) = f.window_seconds {
        base.window_ns = seconds(&format!("detection.{rule}.window_seconds"), w)?;
    }
    Ok(())
}

fn apply_spread(base: &mut Spread, f: &Option<SpreadFile>) -> Result<(), ConfigError> {
    let Some(f) = f else { return Ok(()) };
    let key = |k: &str| format!("detection.distributed_credential_stuffing.{k}");
    let at_least_one = |k: &str, v: Option<u64>, to: &mut u64| match v {
        Some(0) => Err(bad(&key(k), "must be at least 1")),
        Some(n) => {
            *to = n;
            Ok(())
        }
        None => Ok(()),
    };
    if let Some(e) = f.enabled {
        base.enabled = e;
    }
    at_least_one("accounts", f.accounts, &mut base.accounts)?;
    at_least_one("sources", f.sources, &mut base.sources)?;
    at_least_one("min_attempts", f.min_attempts, &mut base.min_attempts)?;
    if let Some(r) = f.failure_ratio {
        if !(r > 0.0 && r <= 1.0) {
            return Err(bad(&key("failure_ratio"), "must be above 0 and at most 1"));
        }
        base.ratio = r;
    }
    if let Some(w) = f.window_seconds {
        base.window_ns = seconds(&key("window_seconds"), w)?;
    }
    Ok(())
}

fn names(
    key: &str,
    v: &Option<Vec<String>>,
    default: Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    match v {
        None => Ok(default),
        Some(list) => {
            if list.iter().any(|s| s.trim().is_empty() || !s.is_ascii()) {
                return Err(bad(key, "names must be non-empty ASCII"));
            }
            Ok(list.iter().map(|s| s.trim().to_ascii_lowercase()).collect())
        }
    }
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Detection settings: the defaults with this file's values over them, validated.
    pub fn detection(&self) -> Result<DetectConfig, ConfigError> {
        let mut c = DetectConfig::default();
        let d = &self.detection;
        if let Some(s) = d.cooldown_seconds {
            c.cooldown_ns = seconds("detection.cooldown_seconds", s)?;
        }
        if let Some(m) = d.max_keys {
            if m == 0 || m > 1_000_000 {
                return Err(bad("detection.max_keys", "must be from 1 to 1000000"));
            }
            c.max_keys = m;
        }
        apply_threshold(&mut c.brute_force, &d.brute_force, "brute_force")?;
        apply_threshold(
            &mut c.credential_stuffing,
            &d.credential_stuffing,
            "credential_stuffing",
        )?;
        apply_threshold(
            &mut c.distributed_brute_force,
            &d.distributed_brute_force,
            "distributed_brute_force",
        )?;
        apply_threshold(&mut c.authz_probing, &d.authz_probing, "authz_probing")?;
        apply_threshold(&mut c.excess_404, &d.excess_404, "excess_404")?;
        apply_threshold(
            &mut c.credential_stuffing_accounts,
            &d.credential_stuffing_accounts,
            "credential_stuffing_accounts",
        )?;
        apply_threshold(
            &mut c.success_after_fail,
            &d.success_after_fail,
            "success_after_fail",
        )?;
        apply_spread(
            &mut c.distributed_stuffing,
            &d.distributed_credential_stuffing,
        )?;
        apply_threshold(
            &mut c.password_spraying,
            &d.password_spraying,
            "password_spraying",
        )?;
        if let Some(t) = &d.attack_tool {
            if let Some(e) = t.enabled {
                c.attack_tool.enabled = e;
            }
            if t.tools.as_ref().is_some_and(|l| l.len() > 256) {
                return Err(bad("detection.attack_tool.tools", "at most 256 names"));
            }
            c.attack_tools = names("detection.attack_tool.tools", &t.tools, c.attack_tools)?;
        }
        if let Some(e) = &d.error_spike {
            let s = &mut c.error_spike;
            if let Some(v) = e.enabled {
                s.enabled = v;
            }
            if let Some(r) = e.ratio {
                if !(r > 0.0 && r <= 1.0) {
                    return Err(bad(
                        "detection.error_spike.ratio",
                        "must be above 0 and at most 1",
                    ));
                }
                s.ratio = r;
            }
            if let Some(m) = e.min_requests {
                if m == 0 {
                    return Err(bad(
                        "detection.error_spike.min_requests",
                        "must be at least 1",
                    ));
                }
                s.min_requests = m;
            }
            if let Some(w) = e.window_seconds {
                s.window_ns = seconds("detection.error_spike.window_seconds", w)?;
            }
            if let Some(n) = e.consecutive {
                s.consecutive = n;
            }
        }
        Ok(c)
    }

    /// Which exchanges are login attempts: the defaults with this file's routes before them.
    pub fn login(&self) -> Result<LoginConfig, ConfigError> {
        let mut c = LoginConfig::default();
        let id = &self.identity;
        if let Some(segs) = &id.login_segments {
            c.segments = names("identity.login_segments", &Some(segs.clone()), Vec::new())?;
        }
        if let Some(b) = id.login_bodies {
            c.credential_bodies = b;
        }
        let routes = id.login.as_deref().unwrap_or_default();
        if routes.len() > MAX_LOGIN_ROUTES {
            return Err(bad("identity.login", "at most 256 routes"));
        }
        for (i, r) in routes.iter().enumerate() {
            let key = |k: &str| format!("identity.login[{i}].{k}");
            let method = match r.method.as_deref().map(str::trim) {
                None => Some("POST".to_string()),
                Some("*") => None,
                Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    Some(m.to_ascii_uppercase())
                }
                Some(_) => return Err(bad(&key("method"), "must be a method name or \"*\"")),
            };
            if !(r.path.starts_with('/') || r.path.starts_with("**")) || r.path.len() > 1024 {
                return Err(bad(
                    &key("path"),
                    "must start with / (or **) and be at most 1024 bytes",
                ));
            }
            let statuses = r.failure_statuses.clone().unwrap_or_default();
            if statuses.iter().any(|s| !(100..=599).contains(s)) {
                return Err(bad(&key("failure_statuses"), "must be from 100 to 599"));
            }
            if let Some(m) = &r.failure_marker
                && (m.is_empty() || m.len() > 256)
            {
                return Err(bad(&key("failure_marker"), "must be 1 to 256 bytes"));
            }
            c.routes.push(LoginRoute {
                method,
                path: r.path.clone(),
                failure_statuses: statuses,
                failure_marker: r.failure_marker.clone(),
            });
        }
        Ok(c)
    }

    /// The trusted proxies of this file and of `flags` (`--trusted-proxy`), together.
    pub fn trusted_proxies(&self, flags: &[String]) -> Result<TrustedProxies, ConfigError> {
        let mut t = TrustedProxies::default();
        let file = self.identity.trusted_proxies.iter().flatten();
        let all = flags
            .iter()
            .map(|v| ("--trusted-proxy".to_string(), v))
            .chain(
                file.enumerate()
                    .map(|(i, v)| (format!("identity.trusted_proxies[{i}]"), v)),
            );
        for (n, (key, value)) in all.enumerate() {
            if n >= crate::http::forwarded::MAX_TRUSTED {
                return Err(bad(&key, "is one too many: at most 1024 trusted proxies"));
            }
            t.add(value).map_err(|e| bad(&key, &e.to_string()))?;
        }
        Ok(t)
    }

    /// Redaction with the token formats of `flags` (`--redact-pattern`) and of this file
    /// (`redaction.patterns`), together; a refused pattern is named by its flag or key.
    pub fn redactor(&self, flags: &[String]) -> Result<Redactor, ConfigError> {
        let file = self.redaction.patterns.iter().flatten();
        let all: Vec<(String, &String)> = flags
            .iter()
            .map(|v| ("--redact-pattern".to_string(), v))
            .chain(
                file.enumerate()
                    .map(|(i, v)| (format!("redaction.patterns[{i}]"), v)),
            )
            .collect();
        for (n, (key, value)) in all.iter().enumerate() {
            if n >= MAX_PATTERNS {
                return Err(bad(
                    key,
                    &format!(
                        "is one too many: at most {MAX_PATTERNS} patterns, flags and config \
                         file together; merge some with |"
                    ),
                ));
            }
            // Checked one by one first so the error names the flag or key; the set compiles
            // them again, a cost paid once at start.
            check_pattern(value).map_err(|e| bad(key, &e.to_string()))?;
        }
        let patterns = all.into_iter().map(|(_, v)| v.clone()).collect();
        SecretPatterns::new(patterns)
            .map(Redactor::new)
            .map_err(|e| bad("redaction.patterns", &e.to_string()))
    }

    pub fn credential_names(&self) -> Result<CredentialNames, ConfigError> {
        let d = CredentialNames::default();
        let markers = self
            .identity
            .login
            .iter()
            .flatten()
            .any(|r| r.failure_marker.is_some());
        let fields = |key: &str, v: &Option<Vec<String>>, default: Vec<String>| {
            names(key, v, default).map(|l| l.iter().map(|n| norm(n.as_bytes())).collect())
        };
        let f = FieldNames::default();
        let password = fields(
            "identity.password_fields",
            &self.identity.password_fields,
            f.password,
        )?;
        let query_params: Vec<String> = fields(
            "identity.query_credentials",
            &self.identity.query_credentials,
            d.query_params,
        )?;
        // A password is a login's, never a credential to fingerprint.
        if let Some(p) = query_params.iter().find(|q| password.contains(q)) {
            return Err(bad(
                "identity.query_credentials",
                &format!("names the password field {p}: passwords are never fingerprinted"),
            ));
        }
        Ok(CredentialNames {
            query_params,
            keep_response_body: markers,
            fields: FieldNames {
                user: fields("identity.user_fields", &self.identity.user_fields, f.user)?,
                password,
            },
            api_key_headers: names(
                "identity.api_key_headers",
                &self.identity.api_key_headers,
                d.api_key_headers,
            )?,
            session_cookies: names(
                "identity.session_cookies",
                &self.identity.session_cookies,
                d.session_cookies,
            )?,
        })
    }
}
