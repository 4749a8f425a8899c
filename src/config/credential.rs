//! Compiling `[target.credential]`: the app's own credential a target may
//! carry (DESIGN "Credential checks"). Checks the keys and names the files;
//! it never reads a credential file (a file that cannot be read is the
//! check's finding at run time, never a reason not to start), but registers
//! each one so a change to it (a Kubernetes `..data` swap included) builds a
//! new generation and a fresh check.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Endpoint;
use super::compile::{Compiler, Result};

/// `[target.credential]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    pub kind: Spanned<String>,
    pub every: Option<Spanned<String>>,
    pub token_url: Option<Spanned<String>>,
    // azure-ad
    pub tenant: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
    // twilio
    pub account_sid: Option<Spanned<String>>,
    pub auth_token_file: Option<Spanned<String>>,
    pub api_key_sid: Option<Spanned<String>>,
    pub api_key_secret_file: Option<Spanned<String>>,
    // apns-token
    pub key_file: Option<Spanned<String>>,
    pub key_id: Option<Spanned<String>>,
    pub team_id: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    // fcm
    pub service_account_file: Option<Spanned<String>>,
}

/// The default `every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);
/// The shortest `every`: providers rate-limit token endpoints.
pub const MIN_EVERY: Duration = Duration::from_secs(60);
/// The default Entra ID scope.
pub const AZURE_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The credential a target carries, checked on its own schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// What it is and where its secret lives.
    pub kind: CredentialKind,
    /// How often it is checked (jittered).
    pub every: Duration,
    /// Where the token request goes, for kinds that make one: Entra's
    /// (always set), FCM's `token_url` as written (`None`: the service
    /// account file's `token_uri`, read at check time).
    pub token_url: Option<Endpoint>,
    /// Identifies the table and its files' contents: a reload that changes
    /// it checks again at once.
    pub fingerprint: u64,
}

/// The kinds of credential, with their settings. Paths only: secrets are
/// read at check time and live in memory for one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// Entra ID (Azure AD) client credentials.
    AzureAd {
        /// Directory (tenant) id or domain.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// The scope asked for.
        scope: String,
        /// The secret or certificate.
        secret: AzureSecret,
    },
    /// Twilio's REST API credentials.
    Twilio {
        /// `AC…`: the account read.
        account_sid: String,
        /// The auth token, or an API key.
        auth: TwilioAuth,
    },
    /// An APNs provider token signed with a `.p8` key (ES256), sent to the
    /// target's own host.
    ApnsToken {
        /// The `.p8` key (PKCS#8 PEM, P-256).
        key_file: PathBuf,
        /// The key's id in Apple's developer account (10 characters).
        key_id: String,
        /// The team id (10 characters): the token's issuer.
        team_id: String,
        /// The app's bundle id (`apns-topic`).
        topic: String,
    },
    /// An FCM HTTP v1 service account: an OAuth token traded for a signed
    /// assertion, then a `validate_only` send on the target's host.
    Fcm {
        /// The service-account JSON Google issues.
        service_account_file: PathBuf,
    },
}

/// An Entra ID application credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureSecret {
    /// A client secret in a file.
    ClientSecret {
        /// The file.
        file: PathBuf,
    },
    /// A certificate credential: the signed `client_assertion`.
    Certificate {
        /// The certificate (PEM).
        cert: PathBuf,
        /// Its RSA private key (PEM, PKCS#8 or PKCS#1).
        key: PathBuf,
    },
}

/// How a Twilio check authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioAuth {
    /// The account's auth token.
    AuthToken {
        /// The file.
        file: PathBuf,
    },
    /// An API key (`SK…`) and its secret.
    ApiKey {
        /// The key's SID.
        key_sid: String,
        /// The file holding its secret.
        secret_file: PathBuf,
    },
}

impl Credential {
    /// The kind's name, as written in the config and shown on every screen.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            CredentialKind::AzureAd { .. } => "azure-ad",
            CredentialKind::Twilio { .. } => "twilio",
            CredentialKind::ApnsToken { .. } => "apns-token",
            CredentialKind::Fcm { .. } => "fcm",
        }
    }

    /// The files the check reads.
    pub fn files(&self) -> Vec<&PathBuf> {
        match &self.kind {
            CredentialKind::AzureAd { secret, .. } => match secret {
                AzureSecret::ClientSecret { file } => vec![file],
                AzureSecret::Certificate { cert, key } => vec![cert, key],
            },
            CredentialKind::Twilio { auth, .. } => match auth {
                TwilioAuth::AuthToken { file } => vec![file],
                TwilioAuth::ApiKey { secret_file, .. } => vec![secret_file],
            },
            CredentialKind::ApnsToken { key_file, .. } => vec![key_file],
            CredentialKind::Fcm {
                service_account_file,
            } => vec![service_account_file],
        }
    }
}

/// One kind's keys, by name, as written.
type Keys<'a> = &'a [(&'a str, &'a Option<Spanned<String>>)];

/// The kinds this build checks, for messages.
const KINDS: &str = "`apns-token`, `fcm`, `azure-ad`, `twilio`";

impl Compiler<'_> {
    /// `target[i].credential`, if any; `endpoint` is the target's URL.
    pub(super) fn credential(
        &self,
        i: usize,
        raw: Option<&RawCredential>,
        endpoint: &Endpoint,
    ) -> Result<Option<Credential>> {
        let Some(c) = raw else { return Ok(None) };
        let key = |k: &str| format!("target[{i}].credential.{k}");
        if !endpoint.tls {
            return Err(self.err(
                c.kind.span(),
                &key("kind"),
                "a credential check needs an https:// target URL: the credential would cross the network in clear",
            ));
        }
        let every = self
            .duration(c.every.as_ref(), &key("every"))?
            .unwrap_or(DEFAULT_EVERY);
        if let Some(e) = &c.every
            && every < MIN_EVERY
        {
            return Err(self.err(
                e.span(),
                &key("every"),
                format!(
                    "`{}` is too often: at least 1m (providers rate-limit token endpoints)",
                    e.get_ref()
                ),
            ));
        }
        let kind = match c.kind.get_ref().as_str() {
            "azure-ad" => self.azure(i, c)?,
            "twilio" => self.twilio(i, c)?,
            "apns-token" => self.apns(i, c)?,
            "fcm" => CredentialKind::Fcm {
                service_account_file: self.file(
                    self.required(
                        c.service_account_file.as_ref(),
                        &c.kind,
                        &key("service_account_file"),
                        "fcm",
                    )?
                    .get_ref(),
                ),
            },
            other => {
                return Err(self.err(
                    c.kind.span(),
                    &key("kind"),
                    format!("unknown credential kind `{other}`: expected one of {KINDS}"),
                ));
            }
        };
        let token_url = self.token_url(i, c, &kind)?;
        self.refuse_foreign_keys(i, c, &kind)?;
        let mut parts = vec![format!("{kind:?}"), format!("{every:?} {token_url:?}")];
        let cred = Credential {
            kind,
            every,
            token_url,
            fingerprint: 0,
        };
        for f in cred.files() {
            parts.push(format!("{:?}", self.file_hash(f)));
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(Some(Credential {
            fingerprint: super::compile::hash_of(&refs),
            ..cred
        }))
    }

    fn azure(&self, i: usize, c: &RawCredential) -> Result<CredentialKind> {
        let key = |k: &str| format!("target[{i}].credential.{k}");
        let tenant = self.required(c.tenant.as_ref(), &c.kind, &key("tenant"), "azure-ad")?;
        let client_id =
            self.required(c.client_id.as_ref(), &c.kind, &key("client_id"), "azure-ad")?;
        for (v, k) in [(&tenant, "tenant"), (&client_id, "client_id")] {
            if !v
                .get_ref()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
                || v.get_ref().is_empty()
                || v.get_ref().len() > 128
            {
                return Err(self.err(
                    v.span(),
                    &key(k),
                    "expected a GUID or a domain (letters, digits, '-', '.')",
                ));
            }
        }
        let scope = match &c.scope {
            Some(s) if s.get_ref().trim().is_empty() || s.get_ref().len() > 512 => {
                return Err(self.err(
                    s.span(),
                    &key("scope"),
                    "expected a scope such as `https://graph.microsoft.com/.default`",
                ));
            }
            Some(s) => s.get_ref().clone(),
            None => AZURE_DEFAULT_SCOPE.to_string(),
        };
        let secret = match (&c.client_secret_file, &c.client_cert, &c.client_key) {
            (Some(f), None, None) => AzureSecret::ClientSecret {
                file: self.file(f.get_ref()),
            },
            (None, Some(cert), Some(k)) => AzureSecret::Certificate {
                cert: self.file(cert.get_ref()),
                key: self.file(k.get_ref()),
            },
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(self.err(
                    c.kind.span(),
                    &key("client_cert"),
                    "a certificate credential needs both `client_cert` and `client_key`",
                ));
            }
            (None, None, None) => {
                return Err(self.err(
                    c.kind.span(),
                    &key("client_secret_file"),
                    "azure-ad needs `client_secret_file`, or `client_cert` and `client_key` (a certificate credential)",
                ));
            }
            (Some(f), _, _) => {
                return Err(self.err(
                    f.span(),
                    &key("client_secret_file"),
                    "give either `client_secret_file` or `client_cert` + `client_key`, not both",
                ));
            }
        };
        Ok(CredentialKind::AzureAd {
            tenant: tenant.get_ref().clone(),
            client_id: client_id.get_ref().clone(),
            scope,
            secret,
        })
    }

    fn twilio(&self, i: usize, c: &RawCredential) -> Result<CredentialKind> {
        let key = |k: &str| format!("target[{i}].credential.{k}");
        let sid = self.required(
            c.account_sid.as_ref(),
            &c.kind,
            &key("account_sid"),
            "twilio",
        )?;
        self.sid(sid, "AC", &key("account_sid"))?;
        let auth = match (&c.auth_token_file, &c.api_key_sid, &c.api_key_secret_file) {
            (Some(f), None, None) => TwilioAuth::AuthToken {
                file: self.file(f.get_ref()),
            },
            (None, Some(k), Some(f)) => {
                self.sid(k, "SK", &key("api_key_sid"))?;
                TwilioAuth::ApiKey {
                    key_sid: k.get_ref().clone(),
                    secret_file: self.file(f.get_ref()),
                }
            }
            (Some(f), _, _) => {
                return Err(self.err(
                    f.span(),
                    &key("auth_token_file"),
                    "give either `auth_token_file` or `api_key_sid` + `api_key_secret_file`, not both",
                ));
            }
            _ => {
                return Err(self.err(
                    c.kind.span(),
                    &key("auth_token_file"),
                    "twilio needs `auth_token_file`, or `api_key_sid` and `api_key_secret_file`",
                ));
            }
        };
        Ok(CredentialKind::Twilio {
            account_sid: sid.get_ref().clone(),
            auth,
        })
    }

    fn apns(&self, i: usize, c: &RawCredential) -> Result<CredentialKind> {
        let key = |k: &str| format!("target[{i}].credential.{k}");
        let need = |v: Option<&'_ Spanned<String>>, k: &str| {
            self.required(v, &c.kind, &key(k), "apns-token").cloned()
        };
        let key_file = need(c.key_file.as_ref(), "key_file")?;
        let key_id = need(c.key_id.as_ref(), "key_id")?;
        let team_id = need(c.team_id.as_ref(), "team_id")?;
        let topic = need(c.topic.as_ref(), "topic")?;
        for (v, k, what) in [
            (&key_id, "key_id", "the Key ID Apple shows for the .p8 key"),
            (&team_id, "team_id", "the Team ID of the developer account"),
        ] {
            let s = v.get_ref();
            if s.len() != 10
                || !s
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
            {
                return Err(self.err(
                    v.span(),
                    &key(k),
                    format!("expected 10 characters A-Z and 0-9: {what}"),
                ));
            }
        }
        let t = topic.get_ref();
        if t.is_empty() || t.len() > 255 || !t.chars().all(|ch| ch.is_ascii_graphic()) {
            return Err(self.err(
                topic.span(),
                &key("topic"),
                "expected the app's bundle id, e.g. `com.example.app`",
            ));
        }
        Ok(CredentialKind::ApnsToken {
            key_file: self.file(key_file.get_ref()),
            key_id: key_id.get_ref().clone(),
            team_id: team_id.get_ref().clone(),
            topic: t.clone(),
        })
    }

    /// A Twilio SID: `prefix` and 32 hex digits.
    fn sid(&self, v: &Spanned<String>, prefix: &str, key: &str) -> Result<()> {
        let s = v.get_ref();
        let ok =
            s.len() == 34 && s.starts_with(prefix) && s[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(())
        } else {
            Err(self.err(
                v.span(),
                key,
                format!("expected `{prefix}` and 32 hex digits (as Twilio's console shows it)"),
            ))
        }
    }

    fn required<'v>(
        &self,
        v: Option<&'v Spanned<String>>,
        kind: &Spanned<String>,
        key: &str,
        what: &str,
    ) -> Result<&'v Spanned<String>> {
        v.ok_or_else(|| {
            let name = key.rsplit('.').next().unwrap_or(key);
            self.err(kind.span(), key, format!("{what} needs `{name}`"))
        })
    }

    /// The token endpoint: `token_url`, else Entra's for the tenant (for
    /// FCM, `None` means the service account's `token_uri`).
    fn token_url(
        &self,
        i: usize,
        c: &RawCredential,
        kind: &CredentialKind,
    ) -> Result<Option<Endpoint>> {
        let key = format!("target[{i}].credential.token_url");
        let ep = match (kind, &c.token_url) {
            (CredentialKind::AzureAd { .. } | CredentialKind::Fcm { .. }, Some(u)) => {
                self.endpoint(u.get_ref(), u.span(), &key)?
            }
            (CredentialKind::AzureAd { tenant, .. }, None) => self.endpoint(
                &format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                c.kind.span(),
                &key,
            )?,
            (_, None) => return Ok(None),
            (_, Some(u)) => {
                return Err(self.err(
                    u.span(),
                    &key,
                    format!(
                        "{} makes no token request: remove `token_url`",
                        c.kind.get_ref()
                    ),
                ));
            }
        };
        if !ep.tls {
            let span = c
                .token_url
                .as_ref()
                .map_or_else(|| c.kind.span(), |u| u.span());
            return Err(self.err(
                span,
                &key,
                "the token URL must be https://: the credential would cross the network in clear",
            ));
        }
        Ok(Some(ep))
    }

    /// Keys of another kind are a mistake worth naming.
    fn refuse_foreign_keys(
        &self,
        i: usize,
        c: &RawCredential,
        kind: &CredentialKind,
    ) -> Result<()> {
        let azure = [
            ("tenant", &c.tenant),
            ("client_id", &c.client_id),
            ("client_secret_file", &c.client_secret_file),
            ("client_cert", &c.client_cert),
            ("client_key", &c.client_key),
            ("scope", &c.scope),
        ];
        let twilio = [
            ("account_sid", &c.account_sid),
            ("auth_token_file", &c.auth_token_file),
            ("api_key_sid", &c.api_key_sid),
            ("api_key_secret_file", &c.api_key_secret_file),
        ];
        let apns = [
            ("key_file", &c.key_file),
            ("key_id", &c.key_id),
            ("team_id", &c.team_id),
            ("topic", &c.topic),
        ];
        let fcm = [("service_account_file", &c.service_account_file)];
        let own = match kind {
            CredentialKind::AzureAd { .. } => 0,
            CredentialKind::Twilio { .. } => 1,
            CredentialKind::ApnsToken { .. } => 2,
            CredentialKind::Fcm { .. } => 3,
        };
        let groups: [Keys<'_>; 4] = [&azure, &twilio, &apns, &fcm];
        let foreign = groups
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != own)
            .flat_map(|(_, keys)| keys.iter());
        for (name, v) in foreign {
            if let Some(v) = v {
                return Err(self.err(
                    v.span(),
                    &format!("target[{i}].credential.{name}"),
                    format!(
                        "`{name}` does not belong to a `{}` credential",
                        c.kind.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }
}
