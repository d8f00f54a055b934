//! The rules' settings: which rules there are, what each reports, and their thresholds and
//! windows (the defaults; the config file overrides them through `cli`).

pub(super) const SEC: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    BruteForce,
    CredentialStuffing,
    DistributedBruteForce,
    AuthzProbing,
    Excess404,
    ErrorSpike,
    AttackTool,
    SuccessAfterFail,
}

/// User-Agent words of known attack tools, matched case-insensitively anywhere in the header,
/// in this order (so `dirbuster` is told before `dirb`), unless configured otherwise.
pub const DEFAULT_ATTACK_TOOLS: &[&str] = &[
    "hydra",
    "sqlmap",
    "nikto",
    "nuclei",
    "ffuf",
    "gobuster",
    "wfuzz",
    "dirbuster",
    "feroxbuster",
    "dirb",
    "masscan",
    "zgrab",
    "nmap",
    "wpscan",
    "medusa",
    "acunetix",
    "netsparker",
    "w3af",
    "arachni",
    "skipfish",
    "commix",
    "havij",
    "openvas",
    "jaeles",
    "xsstrike",
];

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::BruteForce,
        Rule::CredentialStuffing,
        Rule::DistributedBruteForce,
        Rule::AuthzProbing,
        Rule::Excess404,
        Rule::ErrorSpike,
        Rule::AttackTool,
        Rule::SuccessAfterFail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::BruteForce => "brute_force",
            Rule::CredentialStuffing => "credential_stuffing",
            Rule::DistributedBruteForce => "distributed_brute_force",
            Rule::AuthzProbing => "authz_probing",
            Rule::Excess404 => "excess_404",
            Rule::ErrorSpike => "error_spike",
            Rule::AttackTool => "attack_tool",
            Rule::SuccessAfterFail => "success_after_fail",
        }
    }

    /// `event.action`: the OWASP Logging Vocabulary where it has a word for it.
    pub fn action(self) -> &'static str {
        match self {
            Rule::BruteForce => "authn_login_fail_max",
            Rule::Excess404 => "malicious_excess_404",
            Rule::AttackTool => "malicious_attack_tool",
            Rule::SuccessAfterFail => "authn_login_successafterfail",
            other => other.name(),
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Rule::BruteForce => "Many failed authentications from one source",
            Rule::CredentialStuffing => {
                "Many distinct credentials or accounts failing authentication from one source"
            }
            Rule::DistributedBruteForce => {
                "One credential failing authentication from many sources"
            }
            Rule::AuthzProbing => "Many denied authorizations for one source",
            Rule::Excess404 => "Many requests for paths that do not exist from one source",
            Rule::ErrorSpike => "Server errors well above normal for one service",
            Rule::AttackTool => "Requests from a known attack tool",
            Rule::SuccessAfterFail => "An account logged in after many failed logins",
        }
    }

    /// What the rule counts per key.
    pub fn key_field(self) -> &'static str {
        match self {
            Rule::DistributedBruteForce => "observer.credential.fingerprint",
            Rule::ErrorSpike => "service",
            Rule::AttackTool => "source.ip,user_agent.name",
            Rule::SuccessAfterFail => "user.hash",
            _ => "source.ip",
        }
    }
}

/// A counting rule: fires at `threshold` hits within `window_ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub enabled: bool,
    pub threshold: u64,
    pub window_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorSpike {
    pub enabled: bool,
    /// Fraction of 5xx among the window's requests.
    pub ratio: f64,
    pub min_requests: u64,
    pub window_ns: u64,
    /// Or this many 5xx in a row.
    pub consecutive: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    pub brute_force: Threshold,
    pub credential_stuffing: Threshold,
    /// Credential stuffing counted by distinct accounts (`user.hash`) of failed logins.
    pub credential_stuffing_accounts: Threshold,
    pub distributed_brute_force: Threshold,
    pub authz_probing: Threshold,
    pub excess_404: Threshold,
    pub error_spike: ErrorSpike,
    /// Requests from a known attack tool, per source and tool.
    pub attack_tool: Threshold,
    /// Lower-case User-Agent words, in the order they are tried.
    pub attack_tools: Vec<String>,
    /// A login of an account after this many failures (from any source) in the window.
    pub success_after_fail: Threshold,
    /// After an alert, repeats of the same rule and key are counted, not emitted, this long.
    pub cooldown_ns: u64,
    pub max_keys: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        let t = |threshold, secs: u64| Threshold {
            enabled: true,
            threshold,
            window_ns: secs * SEC,
        };
        Self {
            brute_force: t(5, 600),
            credential_stuffing: t(10, 600),
            credential_stuffing_accounts: t(10, 600),
            distributed_brute_force: t(5, 600),
            authz_probing: t(10, 300),
            // "More than 100".
            excess_404: t(101, 300),
            error_spike: ErrorSpike {
                enabled: true,
                ratio: 0.10,
                min_requests: 20,
                window_ns: 60 * SEC,
                consecutive: 5,
            },
            attack_tool: t(1, 600),
            attack_tools: DEFAULT_ATTACK_TOOLS.iter().map(|s| s.to_string()).collect(),
            success_after_fail: t(5, 600),
            cooldown_ns: 300 * SEC,
            max_keys: 10_000,
        }
    }
}
