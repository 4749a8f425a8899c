//! Presets: the request and expectation that prove a real upstream is
//! reachable end to end, without credentials. A target's own keys override a
//! preset's field by field (tests point `url` at a loopback stand-in).
//!
//! Each preset asks something the upstream answers *without* our account, so
//! the probe needs no secret and a success proves DNS, the route, TLS with
//! the real certificate and the upstream's application all work:
//! - `apns`: HTTP/2 `POST /3/device/<64 zeros>` to `api.push.apple.com`. With
//!   no provider token Apple answers 403 `{"reason":"MissingProviderToken"}`,
//!   with a client certificate 400 `{"reason":"BadDeviceToken"}`: either is
//!   APNs itself speaking.
//! - `fcm`: `POST /v1/projects/egress-sentinel-probe/messages:send` to
//!   `fcm.googleapis.com` with no OAuth token: Google answers 401 with a JSON
//!   `error` object.
//! - `azure-ad`: `GET` the OpenID configuration of `login.microsoftonline.com`:
//!   200 and a document with `"issuer"`, what every Entra ID login fetches first.
//! - `twilio`: `GET /2010-04-01/Accounts.json` on `api.twilio.com` unauthenticated:
//!   401 from Twilio's API.

/// The defaults a preset fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name in the config.
    pub name: &'static str,
    /// The URL probed.
    pub url: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    /// Extra request headers.
    pub headers: &'static [(&'static str, &'static str)],
    /// The request body.
    pub body: &'static str,
    /// The statuses that prove the upstream answered.
    pub expect_status: &'static [u16],
    /// A substring the body must contain.
    pub expect_body: Option<&'static str>,
    /// Whether HTTP/2 is required.
    pub http2_required: bool,
}

/// Every preset, by name.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "apns",
        url: "https://api.push.apple.com/3/device/0000000000000000000000000000000000000000000000000000000000000000",
        method: "POST",
        headers: &[
            ("apns-push-type", "alert"),
            ("content-type", "application/json"),
        ],
        body: "{\"aps\":{}}",
        expect_status: &[400, 403],
        expect_body: Some("\"reason\""),
        http2_required: true,
    },
    Preset {
        name: "fcm",
        url: "https://fcm.googleapis.com/v1/projects/egress-sentinel-probe/messages:send",
        method: "POST",
        headers: &[("content-type", "application/json")],
        body: "{}",
        expect_status: &[401],
        expect_body: Some("\"error\""),
        http2_required: false,
    },
    Preset {
        name: "azure-ad",
        url: "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
        method: "GET",
        headers: &[],
        body: "",
        expect_status: &[200],
        expect_body: Some("\"issuer\""),
        http2_required: false,
    },
    Preset {
        name: "twilio",
        url: "https://api.twilio.com/2010-04-01/Accounts.json",
        method: "GET",
        headers: &[],
        body: "",
        expect_status: &[401],
        expect_body: None,
        http2_required: false,
    },
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset names, for error messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| format!("\"{}\"", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}
