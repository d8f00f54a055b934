//! Arbitrary bytes in every field that comes from traffic (method, path, query, host, user
//! agent, credentials, other headers, status reason) and login bodies: the output is exactly one
//! JSON object per line, each matching docs/events.schema.json, the hash chain verifies, and no
//! secret appears (credentials, passwords, user names).

use std::io::Write;
use std::sync::{Arc, Mutex};

use observer::capture::{Meta, encode};
use observer::conn::host::NoHost;
use observer::detect::identity::Fingerprinter;
use observer::event::{Clock, lifecycle_event};
use observer::pipeline::Pipeline;
use observer::sink::Sink;
use observer::sink::integrity::Chain;
use observer::sink::verify::verify;
use observer_common::Direction;
use proptest::prelude::*;
use serde_json::Value;

fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes for one field: mostly those an HTTP parser lets through but that matter to JSON and
/// to terminals (quotes, backslashes, braces, percent signs, bytes that are not UTF-8), and
/// sometimes anything at all (CR, LF, NUL, escape sequences), which may end parsing.
fn nasty(lenient_set: &'static [u8], high: bool) -> impl Strategy<Value = Vec<u8>> {
    let top = if high { 0xff } else { b'z' };
    let lenient = prop::collection::vec(
        prop_oneof![prop::sample::select(lenient_set.to_vec()), b'a'..=top,],
        0..60,
    );
    let anything = prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![b'\r', b'\n', 0, 0x1b, 0x7f, b'"', b'\\'])
        ],
        0..60,
    );
    prop_oneof![7 => lenient, 1 => anything]
}

/// In a request target (with letters; bytes past ASCII are refused there).
const URI: &[u8] = b"\"\\{}%<>'`|^;,=&?/";
/// In header values and the reason phrase (with letters and bytes past ASCII).
const VALUE: &[u8] = b"\"\\{}%<>'`|^;,=&?/ \t";
/// In a header name.
const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~";

#[derive(Debug)]
struct Traffic {
    request: Vec<u8>,
    response: Vec<u8>,
    /// Bytes of the request's body, after its head.
    body_len: usize,
    secrets: Vec<Vec<u8>>,
}

fn traffic() -> impl Strategy<Value = Traffic> {
    (
        prop::sample::select(vec![b"GET".to_vec(), b"POST".to_vec(), b"X\x01Y".to_vec()]),
        prop_oneof![nasty(URI, false), Just(b"login".to_vec())],
        nasty(URI, false),
        nasty(VALUE, true),
        nasty(VALUE, true),
        (
            prop::collection::vec(prop::sample::select(TOKEN.to_vec()), 1..10),
            nasty(VALUE, true),
            // 1xx are interim answers: the exchange waits for the final one.
            200u16..1000,
            nasty(VALUE, true),
        ),
        ("[A-Za-z0-9]{8,24}", "[a-z0-9]{6,16}", 0usize..4),
    )
        .prop_map(
            |(
                method,
                path,
                query,
                host,
                agent,
                (name, value, status, reason),
                (secret, user, shape),
            )| {
                let secret = format!("S3cr3t{secret}").into_bytes();
                let user = format!("us3rn4me{user}");
                let pw = String::from_utf8_lossy(&secret).into_owned();
                let (content_type, body) = match shape {
                    0 => (
                        "application/x-www-form-urlencoded",
                        format!("username={user}&password={pw}"),
                    ),
                    1 => (
                        "application/json",
                        format!(r#"{{"email":"{user}","password":"{pw}"}}"#),
                    ),
                    2 => (
                        "application/x-www-form-urlencoded",
                        format!(r#"{{"user":{{"login":"{user}","pass":"{pw}"}}}}"#),
                    ),
                    _ => ("text/plain", format!("{user}:{pw}")),
                };
                let request = [
                    &method[..],
                    b" /",
                    &path,
                    b"?",
                    &query,
                    b"&token=",
                    &secret,
                    b" HTTP/1.1\r\nHost: ",
                    &host,
                    b"\r\nUser-Agent: ",
                    &agent,
                    b"\r\nAuthorization: Bearer ",
                    &secret,
                    b"\r\nCookie: session=",
                    &secret,
                    b"\r\nX-",
                    &name,
                    b": ",
                    &value,
                    b"\r\nContent-Type: ",
                    content_type.as_bytes(),
                    format!("\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    body.as_bytes(),
                ]
                .concat();
                let response = [
                    format!("HTTP/1.1 {status} ").as_bytes(),
                    &reason,
                    b"\r\nSet-Cookie: session=",
                    &secret,
                    b"\r\nContent-Length: 0\r\n\r\n",
                ]
                .concat();
                Traffic {
                    request,
                    response,
                    body_len: body.len(),
                    secrets: vec![secret, user.into_bytes()],
                }
            },
        )
}

/// Whether the bytes are a head httparse accepts whole.
fn parses(req: &[u8], body_len: usize, resp: &[u8]) -> bool {
    let mut h = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Request::new(&mut h);
    let head = req.len() - body_len;
    let req_ok = matches!(r.parse(req), Ok(httparse::Status::Complete(n)) if n == head);
    let mut h = [httparse::EMPTY_HEADER; 32];
    let mut s = httparse::Response::new(&mut h);
    let resp_ok = matches!(s.parse(resp), Ok(httparse::Status::Complete(n)) if n == resp.len());
    req_ok && resp_ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_line_is_one_schema_valid_object(t in traffic(), cut in prop::option::of(1usize..200)) {
        let mut p = Pipeline::new(NoHost, Clock::with_offset(0), "prop".into())
            .with_fingerprinter(Fingerprinter::with_key(b"a test key of sixteen+ bytes"));
        let buf = Buffer::default();
        let mut sink = Sink::new(Box::new(buf.clone()), Chain::new("prop", None));
        let start = p.stamp(lifecycle_event("sys_startup", Clock::with_offset(0).wall(0), "prop", vec![7], None));
        sink.emit(start).unwrap();
        let meta = |ts| Meta { ts_ns: ts, tgid: 7, tid: 7, fd: 5 };
        let peer = encode::sockaddr_in("192.0.2.1:40000".parse().unwrap());
        let mut out = Vec::new();
        p.handle_raw(&encode::conn(&meta(1), 3, &peer), &mut out);
        // Sometimes the kernel copied only a prefix: heads cut short take another path.
        let copied = cut.map_or(t.request.len(), |c| c.min(t.request.len()));
        p.handle_raw(&encode::data(&meta(2), Direction::Ingress, t.request.len() as u64, &t.request[..copied]), &mut out);
        p.handle_raw(&encode::data(&meta(3), Direction::Egress, t.response.len() as u64, &t.response), &mut out);
        p.handle_raw(&encode::close(&meta(4)), &mut out);
        let exchanges = out.iter().filter(|e| matches!(e, observer::event::Event::Exchange(_))).count();
        for ev in out {
            sink.emit(ev).unwrap();
        }
        let end = p.stamp(lifecycle_event("sys_shutdown", Clock::with_offset(0).wall(5), "prop", vec![], None));
        sink.emit(end).unwrap();
        sink.flush().unwrap();

        let bytes = buf.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).expect("the output is UTF-8");
        prop_assert!(text.ends_with('\n'));
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("each line is one JSON value");
            prop_assert!(v.is_object());
            let errors: Vec<String> = validator().iter_errors(&v).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{errors:?}\n{line}");
            for s in &t.secrets {
                prop_assert!(!line.contains(std::str::from_utf8(s).unwrap()), "secret in {line}");
            }
        }
        if parses(&t.request, t.body_len, &t.response) && copied == t.request.len() {
            prop_assert_eq!(exchanges, 1, "{}", text);
        } else {
            prop_assert!(exchanges <= 1);
        }
        let dir = std::env::temp_dir().join(format!("observer-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(&path, &text).unwrap();
        let summary = verify(std::slice::from_ref(&path), Default::default());
        prop_assert!(summary.is_ok(), "{:?}", summary.err());
    }
}
