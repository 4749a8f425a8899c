//! Twilio: the account reads itself with Basic auth on the target's own
//! host (the account SID and auth token; an API key reads the account's
//! balance instead, since standard keys cannot read the Accounts
//! resource), and how the REST API's answer is read.

use bytes::Bytes;
use http::{HeaderValue, Method, header};

use super::reply::{back_off, field, json, sanitise, unexpected};
use super::{Call, CannotRun, Material, Reply, Verdict};
use crate::config::{Endpoint, TwilioAuth};

/// Twilio's code for a suspended or forbidden account.
const FORBIDDEN: u64 = 20403;

/// The account read, on `target`'s scheme, host and port.
pub(super) fn account_read(
    target: &Endpoint,
    account_sid: &str,
    auth: &TwilioAuth,
    material: &Material,
) -> Result<Call, CannotRun> {
    let Material::Secret(secret) = material else {
        return Err(CannotRun(
            "twilio: the loaded material is not a secret; load the credential again".into(),
        ));
    };
    let (user, path, what) = match auth {
        TwilioAuth::AuthToken { .. } => (
            account_sid,
            format!("/2010-04-01/Accounts/{account_sid}.json"),
            "account read",
        ),
        TwilioAuth::ApiKey { key_sid, .. } => (
            key_sid.as_str(),
            format!("/2010-04-01/Accounts/{account_sid}/Balance.json"),
            "balance read",
        ),
    };
    let basic = crate::config::base64(format!("{user}:{}", secret.expose()).as_bytes());
    let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|_| CannotRun("twilio: the credential makes no valid header".into()))?;
    authorization.set_sensitive(true);
    Ok(Call {
        endpoint: Endpoint {
            path_and_query: path,
            ..target.clone()
        },
        method: Method::GET,
        headers: vec![
            (header::AUTHORIZATION, authorization),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
        ],
        body: Bytes::new(),
        what,
    })
}

/// What the REST API's answer to the `what` read proves.
pub(super) fn classify(what: &str, reply: &Reply) -> Verdict {
    if reply.status == 200 {
        return Verdict::Proven(format!("{what} (HTTP 200)"));
    }
    if let Some(v) = back_off(reply) {
        return v;
    }
    let body = json(reply);
    let code = body.as_ref().and_then(|b| b.get("code")).and_then(|c| {
        c.as_u64()
            .map(|n| n.to_string())
            .or_else(|| c.as_str().map(sanitise))
    });
    let message = body
        .as_ref()
        .and_then(|b| field(b, "message"))
        .map(sanitise)
        .unwrap_or_else(|| format!("HTTP {}", reply.status));
    match (reply.status, code) {
        (401, code) => Verdict::Rejected {
            code: code.unwrap_or_else(|| "401".into()),
            detail: message,
        },
        (403, Some(code)) if code == FORBIDDEN.to_string() => Verdict::Rejected {
            code,
            detail: message,
        },
        _ => unexpected(what, reply),
    }
}
