//! Login bodies read from generated forms and JSON: fields, cuts, escapes, garbage.

use super::*;

fn read(kind: BodyKind, body: &str, whole: bool) -> (Option<String>, bool) {
    let f = FieldNames::default().read(kind, body.as_bytes(), whole);
    (
        f.user
            .map(|u| String::from_utf8_lossy(u.bytes()).into_owned()),
        f.password,
    )
}

fn user(kind: BodyKind, body: &str) -> Option<String> {
    read(kind, body, true).0
}

#[test]
fn forms_are_percent_decoded_and_the_first_field_wins() {
    use BodyKind::Form;
    assert_eq!(
        read(Form, "username=al%69ce+b&password=x", true),
        (Some("alice b".into()), true)
    );
    assert_eq!(user(Form, "user=a&user=b"), Some("a".into()));
    // A better-named field wins over an earlier one.
    assert_eq!(user(Form, "email=e%40x&username=u"), Some("u".into()));
    assert_eq!(user(Form, "User_Name=mixed"), Some("mixed".into()));
    assert_eq!(user(Form, "username=&password=x"), None);
    assert_eq!(user(Form, "username"), None);
    assert_eq!(user(Form, "%zz=1&username=%4"), Some("%4".into()));
    // A cut body: the last pair may be cut, so it is not read.
    assert_eq!(read(Form, "password=x&username=ali", false), (None, true));
    assert_eq!(
        read(Form, "username=alice&password=hun", false),
        (Some("alice".into()), false)
    );
    // The password's value is never part of what is read.
    let f = FieldNames::default().read(Form, b"username=a&password=hunter2", true);
    assert!(!format!("{f:?}").contains("hunter2"));
}

#[test]
fn json_top_level_and_one_nested_object() {
    use BodyKind::Json;
    assert_eq!(
        read(Json, r#" {"username": "alice", "password": "x"}"#, true),
        (Some("alice".into()), true)
    );
    assert_eq!(
        read(Json, r#"{"user":{"email":"a@x","password":"p"}}"#, true),
        (Some("a@x".into()), true)
    );
    // The top level wins over a nested object, whatever the order.
    assert_eq!(
        user(Json, r#"{"credentials":{"username":"n"},"email":"t"}"#),
        Some("t".into())
    );
    // Deeper objects, arrays and other values are skipped.
    assert_eq!(
        user(
            Json,
            r#"{"a":[1,{"username":"no"}],"b":{"c":{"username":"deep"}},"n":1.5e3,"t":true,"login":"yes"}"#
        ),
        Some("yes".into())
    );
    // The last occurrence wins, as JSON parsers read duplicates.
    assert_eq!(user(Json, r#"{"user":"a","user":"b"}"#), Some("b".into()));
    assert_eq!(
        user(Json, r#"{"username":"\u0041l\u00efce\ud83d\ude00\"q"}"#),
        Some("Alïce😀\"q".into())
    );
    assert_eq!(
        user(Json, r#"{"username":"\ud800x"}"#),
        Some("\u{fffd}x".into())
    );
    assert_eq!(user(Json, r#"{"username":12}"#), None);
    assert_eq!(user(Json, "not json"), None);
    assert_eq!(user(Json, "{"), None);
    // JSON sent as a form (curl -d) is read as JSON.
    assert_eq!(
        read(
            BodyKind::Form,
            r#"{"user":"alice","password":"guess"}"#,
            true
        ),
        (Some("alice".into()), true)
    );
}

#[test]
fn cut_json_keeps_only_whole_values() {
    let body = r#"{"username":"alice","password":"hunter2","remember":true}"#;
    for cut in 0..body.len() {
        let (u, _) = read(BodyKind::Json, &body[..cut], false);
        let whole_value = cut >= r#"{"username":"alice""#.len();
        assert_eq!(u.is_some(), whole_value, "cut at {cut}: {u:?}");
    }
}

#[test]
fn content_types() {
    assert_eq!(
        BodyKind::of(Some(b"application/x-www-form-urlencoded; charset=UTF-8")),
        Some(BodyKind::Form)
    );
    assert_eq!(
        BodyKind::of(Some(b"Application/JSON")),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::of(Some(b"application/vnd.api+json")),
        Some(BodyKind::Json)
    );
    assert_eq!(BodyKind::of(Some(b"multipart/form-data; boundary=x")), None);
    assert_eq!(BodyKind::of(Some(b"text/plain")), None);
    assert_eq!(BodyKind::of(None), Some(BodyKind::Form));
}

#[test]
fn garbage_never_panics() {
    let n = FieldNames::default();
    let samples: [&[u8]; 8] = [
        b"{\"a\":\"\\",
        b"{\"username\":\"\\u12",
        b"{\"x\":[[[[[[[[",
        b"{\"x\":}}}}",
        b"\xff\xfe{\"user\"\xff:\"\xff\"}",
        b"%%%&&&===",
        b"{\"user\":{\"user\":{\"user\":\"x\"}}}",
        b"{,}",
    ];
    for s in samples {
        for cut in 0..=s.len() {
            let _ = n.read(BodyKind::Json, &s[..cut], false);
            let _ = n.read(BodyKind::Form, &s[..cut], cut == s.len());
        }
    }
}

fn secret(kind: BodyKind, body: &str, whole: bool) -> Option<String> {
    FieldNames::default()
        .read(kind, body.as_bytes(), whole)
        .secret
        .map(|p| String::from_utf8_lossy(p.bytes()).into_owned())
}

#[test]
fn password_values_are_read_whole_and_never_shown() {
    use BodyKind::{Form, Json};
    assert_eq!(
        secret(Form, "username=a&password=hun%74er+2", true),
        Some("hunter 2".into())
    );
    // The first field wins in a form, the last in JSON, as the frameworks read them.
    assert_eq!(
        secret(Form, "password=one&password=two&user=a", true),
        Some("one".into())
    );
    assert_eq!(
        secret(Json, r#"{"password":"one","password":"two"}"#, true),
        Some("two".into())
    );
    assert_eq!(
        secret(
            Json,
            r#"{"auth":{"user":"a","passwd":"n\u00e9sted"}}"#,
            true
        ),
        Some("nésted".into())
    );
    // Cut values, empty values and values that are not strings are not passwords to count.
    assert_eq!(secret(Form, "username=a&password=hun", false), None);
    assert_eq!(secret(Form, "username=a&password=&x=1", true), None);
    assert_eq!(secret(Json, r#"{"password":12345}"#, true), None);
    let body = r#"{"username":"alice","password":"hunter2"}"#;
    for cut in 0..body.len() {
        let s = secret(Json, &body[..cut], false);
        assert!(
            s.is_none() || s.as_deref() == Some("hunter2"),
            "cut at {cut}"
        );
    }
    let f = FieldNames::default().read(Json, body.as_bytes(), true);
    assert!(f.secret.is_some() && f.credentials());
    let shown = format!("{f:?}");
    assert!(!shown.contains("hunter2") && shown.contains("RawPassword(7 bytes)"));
}
