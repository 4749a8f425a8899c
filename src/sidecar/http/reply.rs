//! What the listeners answer with: [`Reply`] and the helpers that build
//! one (plain text with a trailing newline, JSON, or a reply that closes
//! the connection).
//!
//! Shapes a reply, never decides one: the status and the words come from
//! the handler that calls it.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

/// A response with a plain body.
pub type Reply = Response<Full<Bytes>>;

pub(super) fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

pub(super) fn json(status: StatusCode, body: String) -> Reply {
    reply(status, "application/json", body)
}

/// A reply after which the connection closes (the request was not read
/// whole, or the client is misbehaving).
pub(super) fn closing(mut r: Reply) -> Reply {
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}
