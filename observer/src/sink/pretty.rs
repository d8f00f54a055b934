//! `--format pretty`: one short line per event for a terminal, every field from traffic
//! escaped so it cannot move the cursor or fake another line.

/// A field for a terminal: control characters and quotes escaped, so traffic cannot move the
/// cursor, clear the screen or fake another line.
fn term(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.escape_debug().to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn endpoint(v: &serde_json::Value) -> String {
    match (v["ip"].as_str(), v["port"].as_u64(), v["address"].as_str()) {
        (Some(ip), Some(p), _) if ip.contains(':') => format!("[{ip}]:{p}"),
        (Some(ip), Some(p), _) => format!("{ip}:{p}"),
        (Some(ip), None, _) => term(&serde_json::Value::String(ip.into())),
        (None, Some(p), _) => format!("*:{p}"),
        (_, _, Some(a)) => term(&serde_json::Value::String(a.into())),
        _ => "?".into(),
    }
}

/// One human line per event.
pub(super) fn pretty(e: &serde_json::Value) -> String {
    let ts = e["@timestamp"].as_str().unwrap_or_default();
    let action = term(&e["event"]["action"]);
    let seq = &e["event"]["sequence"];
    if e.get("http").is_some() {
        let ms = e["event"]["duration"].as_u64().unwrap_or(0) as f64 / 1e6;
        let who = match e["user"]["hash"].as_str() {
            Some(h) => format!(" user {}", h.chars().take(8).collect::<String>()),
            None => String::new(),
        };
        // Behind a trusted proxy: the client it named, before the proxy the connection came from.
        let client = match (&e["client"], &e["source"]) {
            (c, s) if c.is_object() && c["ip"] != s["ip"] => format!("{} via ", endpoint(c)),
            _ => String::new(),
        };
        let query = match e["url"]["query"].as_str() {
            Some(q) => format!("?{}", q.escape_debug()),
            None => String::new(),
        };
        format!(
            "{ts} #{seq} {client}{} → {} {} {}{query} {} {action} {}B/{}B {ms:.1}ms {}[{}] {}{who}",
            endpoint(&e["source"]),
            endpoint(&e["destination"]),
            term(&e["http"]["request"]["method"]),
            term(&e["url"]["path"]),
            e["http"]["response"]["status_code"],
            e["http"]["request"]["bytes"],
            e["http"]["response"]["bytes"],
            term(&e["process"]["name"]),
            e["process"]["pid"],
            term(&e["observer"]["role"]),
        )
    } else if e["event"]["kind"] == "alert" {
        let a = &e["observer"]["alert"];
        format!(
            "{ts} #{seq} ALERT {} ({action}) {}={}: {} in {} s, threshold {}{}",
            term(&e["rule"]["name"]),
            term(&a["key"]["field"]),
            term(&a["key"]["value"]),
            a["count"],
            a["window_seconds"],
            a["threshold"],
            match a["suppressed"].as_u64() {
                Some(n) => format!(" (summary: {n} more during cooldown)"),
                None => String::new(),
            }
        )
    } else {
        let detail = match action.as_str() {
            "loss" => format!("LOST {}", e["observer"]["loss"]),
            "heartbeat" => {
                let m = &e["observer"]["metrics"];
                format!(
                    "exchanges {} open connections {} rss {} KiB",
                    m["exchanges"], m["connections"]["open"], m["process"]["rss_kib"]
                )
            }
            _ => format!("run {}", term(&e["observer"]["run_id"])),
        };
        format!("{ts} #{seq} {action} {detail}")
    }
}
