//! Schema checks: every output line one JSON object matching docs/events.schema.json.

use std::path::Path;

use serde_json::Value;

use crate::workspace_root;

/// Every line of an output file, each checked to be one JSON object matching the schema.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("reading an output file");
    text.lines()
        .map(|l| {
            let v = serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()));
            assert_schema(&v, l);
            v
        })
        .collect()
}

/// Panics unless `event` matches docs/events.schema.json.
pub fn assert_schema(event: &Value, line: &str) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(workspace_root().join("docs/events.schema.json"))
            .expect("docs/events.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    });
    let errors: Vec<String> = v.iter_errors(event).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "event does not match docs/events.schema.json: {errors:?}\n{line}"
    );
}
