//! Reading a request body within its bounds: at most [`MAX_BODY`] bytes,
//! whole within [`BODY_TIMEOUT`], a Content-Length over the cap refused
//! before a byte is read.
//!
//! The only reader of request bodies: a handler never collects a body
//! itself, so none can wait on a client without the connection counting
//! as waiting (and so evictable).

use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::listener::Conn;
use super::reply::{Reply, closing, text};
use super::{BODY_TIMEOUT, MAX_BODY};

/// Reads a request body: at most [`MAX_BODY`] bytes within
/// [`BODY_TIMEOUT`], empty or a JSON value. While it waits, the connection
/// counts as waiting on its client (evictable past [`super::SOFT_CAP`]).
pub(super) async fn read_json(body: Incoming, conn: &Conn) -> Result<Option<Value>, Reply> {
    let too_large = || {
        closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        ))
    };
    // A Content-Length over the cap is refused before a byte is read.
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    conn.waiting();
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
    conn.working();
    let bytes = match read {
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "admin request body not received in time");
            return Err(closing(text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {}",
                    crate::dial::fmt_duration(BODY_TIMEOUT)
                ),
            )));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(closing(text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )));
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not JSON: {e}"),
        )
    })
}
