//! `observer verify`: reads the keys and options, runs the check ([`crate::sink::verify`]) and
//! words its result: what was checked, from where to where the log is proven, and for a live
//! log how old its last line and seal are.

use crate::sink::seal::{VerifyKey, unix_now};
use crate::sink::verify::{Options, Summary, unix_seconds, verify};

use super::VerifyArgs;

/// Whether the log verified, and the report to print; `Err` for unusable arguments.
pub fn run(args: &VerifyArgs) -> Result<(bool, String), String> {
    let key = match &args.integrity_key {
        Some(p) => Some(crate::sink::integrity::load_key(p).map_err(|e| format!("{e:#}"))?),
        None => None,
    };
    let verify_key = match &args.verify_key {
        Some(p) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read verification key {}: {e}", p.display()))?,
            );
            Some(VerifyKey::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let expect_head = match &args.expect_head {
        Some(h) => {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h.trim(), &mut b)
                .map_err(|_| format!("--expect-head {h}: not 64 hex digits"))?;
            Some(b)
        }
        None => None,
    };
    let schedule = verify_key.as_ref().map(|k| k.schedule);
    let opts = Options {
        key: key.as_deref(),
        open: args.open,
        accept_restart: args.accept_restart,
        verify_key,
        expect_head,
    };
    Ok(match verify(&args.paths, opts) {
        Ok(sum) => (true, report(&sum, args, schedule)),
        Err(p) => {
            let mut out = format!("TAMPERED: {p}\n");
            match &p.proven {
                Some(place) => out.push_str(&format!(
                    "proven up to: {place} (the lines before the failure)\n"
                )),
                None => out.push_str("proven: nothing\n"),
            }
            (false, out)
        }
    })
}

fn report(
    sum: &Summary,
    args: &VerifyArgs,
    schedule: Option<crate::sink::seal::Schedule>,
) -> String {
    let mut out = format!(
        "intact: {} lines, {} run{}\n",
        sum.lines,
        sum.runs,
        if sum.runs == 1 { "" } else { "s" }
    );
    if let Some((place, how)) = &sum.begins {
        out.push_str(&format!("kept history begins at: {place}: {how}\n"));
    }
    if let Some(last) = &sum.last {
        out.push_str(&format!("proven up to: {last}\n"));
    }
    let chain = if args.integrity_key.is_some() {
        "sequence and keyed hash chain (--integrity-key)"
    } else {
        "sequence and hash chain (unkeyed: whoever can write the files could have recomputed it)"
    };
    if sum.seals_checked {
        out.push_str(&format!(
            "checked: {chain}, and the seals of all {} sealed lines with the verification key\n",
            sum.sealed
        ));
        if sum.unsealed > 0 {
            out.push_str(&format!(
                "note: {} lines are unsealed: they are dated before the sealing key was made\n",
                sum.unsealed
            ));
        }
    } else if sum.sealed > 0 {
        out.push_str(&format!(
            "checked: {chain} only: {} lines are sealed, but without --verify-key their seals \
             were not checked\n",
            sum.sealed
        ));
    } else {
        out.push_str(&format!(
            "checked: {chain} only: no line is sealed (`observer seal-init` makes a host seal)\n"
        ));
    }
    if let Some(h) = &sum.head_reached {
        out.push_str(&format!("expected head reached at: {h}\n"));
    }
    if sum.legacy_runs > 0 {
        out.push_str(&format!(
            "note: {} run(s) were written by an earlier version of observer: sequence and chain \
             within each are checked; their links to other runs, retention checkpoints and \
             seals cannot be, as those lines do not carry them\n",
            sum.legacy_runs
        ));
    }
    for n in &sum.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if args.open
        && let Some(last) = &sum.last
    {
        let now = unix_now();
        if let Some(t) = unix_seconds(&last.timestamp) {
            out.push_str(&format!(
                "open: the last line is dated {}, {} s ago\n",
                last.timestamp,
                now.saturating_sub(t)
            ));
        }
        match (last.epoch, schedule) {
            (Some(e), Some(s)) => out.push_str(&format!(
                "open: the last seal is of epoch {e}, which began {} s ago\n",
                now.saturating_sub(s.epoch_start(e))
            )),
            (Some(e), None) => out.push_str(&format!(
                "open: the last seal is of epoch {e} (give --verify-key to date it)\n"
            )),
            _ => {}
        }
    }
    out
}
