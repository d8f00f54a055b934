//! The rules on accounts and tools: credential stuffing counted by distinct accounts, known
//! attack tools per source and tool, and an account that logs in after many failures.

use super::window::{cap, slot};
use super::{Alert, Detector, Facts, LoginOutcome, Rule, SAMPLES};

impl Detector {
    /// Failed logins from one source naming many distinct accounts.
    pub(super) fn accounts(&mut self, ip: &str, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let failed = matches!(f.login, Some(LoginOutcome::Fail | LoginOutcome::Lock));
        if let (true, Some(user)) = (failed, f.user) {
            let c = self.cfg.credential_stuffing_accounts;
            self.distinct((Rule::CredentialStuffing, "user.hash"), c, ip, user, f, out);
        }
    }

    /// A known attack tool: alerted at its first request from a source, then quiet for the
    /// cooldown (whose summary counts the rest).
    pub(super) fn attack_tool(&mut self, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let Some(tool) = f.tool else { return };
        let key = format!("{} {tool}", f.source_ip.unwrap_or("-"));
        let c = self.cfg.attack_tool;
        self.count(Rule::AttackTool, c, &key, f, out);
    }

    /// Failed logins of an account, from any source, then a successful one.
    pub(super) fn success_after_fail(&mut self, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let c = self.cfg.success_after_fail;
        let (Some(user), Some(login), true) = (f.user, f.login, c.enabled) else {
            return;
        };
        let max = self.cfg.max_keys;
        let table = self.counts.entry(Rule::SuccessAfterFail).or_default();
        if login != LoginOutcome::Success {
            let state = slot(table, user, max, &mut self.counters.evicted);
            state.last_ns = f.ts_ns;
            state.hits.push_back((f.ts_ns, f.sequence));
            while state.hits.len() > cap(c.threshold) {
                state.hits.pop_front();
            }
            return;
        }
        // A success ends the account's run of failures, whatever it was.
        let Some(mut state) = table.remove(user) else {
            return;
        };
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        state.hits.retain(|(t, _)| *t >= cutoff);
        let failures = state.hits.len() as u64;
        if failures < c.threshold.max(1) {
            return;
        }
        let first = state.hits.front().map_or(f.ts_ns, |h| h.0);
        let mut samples = state.last_sequences(SAMPLES - 1);
        samples.push(f.sequence);
        self.fire(
            (Rule::SuccessAfterFail, None),
            user,
            failures,
            c.threshold,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }
}
