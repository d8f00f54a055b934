//! gRPC calls in detection's terms: a call's `grpc-status` read as the HTTP status that means
//! the same to the rules (the HTTP status of a gRPC call is 200 whatever happened), and the
//! status codes' names. Imports only `http`'s exchange.

use crate::http::Exchange;

/// The gRPC status codes (grpc/doc/statuscodes.md), by number.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a gRPC status code; `None` for a number gRPC does not define.
pub fn status_name(code: u32) -> Option<&'static str> {
    NAMES.get(code as usize).copied()
}

/// The HTTP status the rules and the classification see for a gRPC status:
/// UNAUTHENTICATED counts as an authentication failure (401), PERMISSION_DENIED as an
/// authorization failure (403), INVALID_ARGUMENT as failed input validation (400),
/// RESOURCE_EXHAUSTED as rate limiting (429), NOT_FOUND as 404 (the excess-404 rule), and
/// the server-side failures INTERNAL, UNAVAILABLE, UNKNOWN and DATA_LOSS as 500 (the error
/// spike). The rest (the caller's own cancellations and deadlines, preconditions, and codes
/// gRPC does not define) carry no security meaning of their own and stay as the HTTP status
/// was.
fn as_http(code: u32, http: u16) -> u16 {
    match code {
        0 => http,
        16 => 401,
        7 => 403,
        3 => 400,
        8 => 429,
        5 => 404,
        2 | 13 | 14 | 15 => 500,
        _ => http,
    }
}

/// The status an exchange counts with: its HTTP status, or for a gRPC call that ended with a
/// `grpc-status`, what that status means in HTTP terms.
pub fn effective_status(x: &Exchange) -> u16 {
    match x.grpc.as_ref().and_then(|g| g.status) {
        Some(code) => as_http(code, x.response.status),
        None => x.response.status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_numbers() {
        assert_eq!(status_name(0), Some("OK"));
        assert_eq!(status_name(7), Some("PERMISSION_DENIED"));
        assert_eq!(status_name(16), Some("UNAUTHENTICATED"));
        assert_eq!(status_name(17), None);
    }

    #[test]
    fn statuses_map_onto_what_the_rules_count() {
        assert_eq!(as_http(16, 200), 401);
        assert_eq!(as_http(7, 200), 403);
        assert_eq!(as_http(3, 200), 400);
        for code in [2, 13, 14, 15] {
            assert_eq!(as_http(code, 200), 500);
        }
        assert_eq!(as_http(0, 200), 200);
        assert_eq!(as_http(1, 200), 200);
        assert_eq!(as_http(99, 200), 200);
    }
}
