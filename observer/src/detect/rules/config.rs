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
    DistributedStuffing,
    PasswordSpraying,
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
    pub const ALL: [Rule; 10] = [
        Rule::BruteForce,
        Rule::CredentialStuffing,
        Rule::DistributedBruteForce,
        Rule::AuthzProbing,
        Rule::Excess404,
        Rule::ErrorSpike,
        Rule::AttackTool,
        Rule::SuccessAfterFail,
        Rule::DistributedStuffing,
        Rule::PasswordSpraying,
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
            Rule::DistributedStuffing => "distributed_credential_stuffing",
            Rule::PasswordSpraying => "password_spraying",
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
            Rule::DistributedStuffing => {
                "Failed logins of many distinct accounts from many sources, most logins of the \
                 service failing"
            }
            Rule::PasswordSpraying => "One password failing to log in to many distinct accounts",
        }
    }

    /// What the rule counts per key.
    pub fn key_field(self) -> &'static str {
        match self {
            Rule::DistributedBruteForce => "observer.credential.fingerprint",
            Rule::ErrorSpike | Rule::DistributedStuffing | Rule::PasswordSpraying => "service",
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

/// Failed logins spread over many sources, for one service: fires when, within `window_ns`,
/// failed logins named at least `accounts` distinct accounts from at least `sources` distinct
/// sources, and at least `ratio` of the service's login attempts (at least `min_attempts` of
/// them) failed. The ratio is what keeps a busy service's normal typos quiet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub enabled: bool,
    pub accounts: u64,
    pub sources: u64,
    pub ratio: f64,
    pub min_attempts: u64,
    pub window_ns: u64,
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
    /// Stuffing or spraying spread over many sources, per service.
    pub distributed_stuffing: Spread,
    /// One password (a keyed hash held in memory) failing for this many distinct accounts.
    pub password_spraying: Threshold,
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
            // 20 accounts from 10 sources in 10 minutes, with 30 % of at least 20 login attempts
            // failing: a typo rate of a few percent (up to 10 % on phones) stays three times
            // below the ratio; stuffing fails for nearly every attempt. See README.
            distributed_stuffing: Spread {
                enabled: true,
                accounts: 20,
                sources: 10,
                ratio: 0.30,
                min_attempts: 20,
                window_ns: 600 * SEC,
            },
            // Ten accounts failing with one password in 10 minutes: users mistyping their own
            // passwords seldom mistype them into the same string.
            password_spraying: t(10, 600),
            cooldown_ns: 300 * SEC,
            max_keys: 10_000,
        }
    }
}
