//! `[target.credential]` as the config reads it: each kind's keys, every
//! mistake refused with the key and what to do, the files registered for
//! reload but never read at load (a check that cannot run is a finding at
//! run time), the credential kept out of the target's fingerprint (changing
//! it keeps the routes' health), and its own fingerprint following the
//! files' contents.

use std::path::Path;

use egress_sentinel::config::{AzureSecret, Config, CredentialKind, TwilioAuth};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";

fn parse(credential: &str) -> Result<Config, String> {
    parse_in(Path::new("/nonexistent/c.toml"), credential)
}

fn parse_in(path: &Path, credential: &str) -> Result<Config, String> {
    let text = format!(
        "[[target]]\nname = \"t\"\nurl = \"https://api.twilio.test/\"\nroutes = [\"direct\"]\n[target.credential]\n{credential}"
    );
    Config::parse(path, &text).map_err(|e| e.to_string())
}

fn err(credential: &str) -> String {
    match parse(credential) {
        Ok(_) => panic!("accepted: {credential}"),
        Err(e) => e,
    }
}

#[test]
fn azure_ad_with_a_secret_gets_the_default_scope_token_url_and_interval() {
    let c = parse("kind = \"azure-ad\"\ntenant = \"contoso.test\"\nclient_id = \"abc-123\"\nclient_secret_file = \"secret\"\n")
        .expect("valid");
    let cred = c.targets[0].credential.as_ref().expect("a credential");
    assert_eq!(cred.every.as_secs(), 300);
    assert_eq!(cred.kind_name(), "azure-ad");
    let CredentialKind::AzureAd {
        tenant,
        scope,
        secret,
        ..
    } = &cred.kind
    else {
        panic!("not azure-ad: {cred:?}");
    };
    assert_eq!(tenant, "contoso.test");
    assert_eq!(scope, "https://graph.microsoft.com/.default");
    assert_eq!(
        secret,
        &AzureSecret::ClientSecret {
            file: Path::new("/nonexistent/secret").to_path_buf()
        }
    );
    let url = cred
        .token_url
        .as_ref()
        .expect("a token URL")
        .canonical_url();
    assert_eq!(
        url,
        "https://login.microsoftonline.com/contoso.test/oauth2/v2.0/token"
    );
}

#[test]
fn twilio_takes_a_token_or_an_api_key() {
    let c = parse(&format!(
        "kind = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token_file = \"t\"\nevery = \"2m\"\n"
    ))
    .expect("valid");
    let cred = c.targets[0].credential.as_ref().expect("credential");
    assert_eq!(cred.every.as_secs(), 120);
    assert!(matches!(
        &cred.kind,
        CredentialKind::Twilio {
            auth: TwilioAuth::AuthToken { .. },
            ..
        }
    ));
    let c = parse(&format!(
        "kind = \"twilio\"\naccount_sid = \"{SID}\"\napi_key_sid = \"{KEY_SID}\"\napi_key_secret_file = \"k\"\n"
    ))
    .expect("valid");
    let cred = c.targets[0].credential.as_ref().expect("credential");
    assert!(matches!(
        &cred.kind,
        CredentialKind::Twilio {
            auth: TwilioAuth::ApiKey { .. },
            ..
        }
    ));
}

#[test]
fn mistakes_are_refused_with_the_key_and_what_to_do() {
    let cases: &[(&str, &str, &str)] = &[
        ("kind = \"ldap\"\n", "credential.kind", "expected one of"),
        (
            "kind = \"azure-ad\"\nclient_id = \"a\"\nclient_secret_file = \"s\"\n",
            "credential.tenant",
            "needs `tenant`",
        ),
        (
            "kind = \"azure-ad\"\ntenant = \"t\"\nclient_id = \"a\"\n",
            "credential.client_secret_file",
            "client_cert",
        ),
        (
            "kind = \"azure-ad\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_cert = \"c\"\n",
            "credential.client_cert",
            "both",
        ),
        (
            "kind = \"azure-ad\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_secret_file = \"s\"\nclient_cert = \"c\"\nclient_key = \"k\"\n",
            "credential.client_secret_file",
            "not both",
        ),
        (
            "kind = \"azure-ad\"\ntenant = \"t/../x\"\nclient_id = \"a\"\nclient_secret_file = \"s\"\n",
            "credential.tenant",
            "GUID or a domain",
        ),
        (
            "kind = \"azure-ad\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_secret_file = \"s\"\ntoken_url = \"http://login.test/token\"\n",
            "credential.token_url",
            "https://",
        ),
        (
            "kind = \"twilio\"\naccount_sid = \"AC123\"\nauth_token_file = \"t\"\n",
            "credential.account_sid",
            "32 hex digits",
        ),
        (
            "kind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n",
            "credential.auth_token_file",
            "api_key_sid",
        ),
        (
            "kind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token_file = \"t\"\ntenant = \"x\"\n",
            "credential.tenant",
            "does not belong",
        ),
        (
            "kind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token_file = \"t\"\nevery = \"30s\"\n",
            "credential.every",
            "at least 1m",
        ),
        (
            "kind = \"apns-token\"\n",
            "credential.key_file",
            "needs `key_file`",
        ),
        (
            "kind = \"twilio\"\nbogus = 1\n",
            "credential",
            "unknown field",
        ),
    ];
    for (text, key, words) in cases {
        let e = err(text);
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(e.contains(words), "{text:?}: {e}");
    }
}

const APNS: &str = "kind = \"apns-token\"\nkey_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\ntopic = \"com.example.app\"\n";

#[test]
fn apns_token_takes_a_p8_key_its_ids_and_a_topic() {
    let c = parse(APNS).expect("valid");
    let cred = c.targets[0].credential.as_ref().expect("credential");
    assert_eq!(cred.kind_name(), "apns-token");
    assert_eq!(cred.token_url, None, "the check goes to the target itself");
    assert_eq!(
        cred.kind,
        CredentialKind::ApnsToken {
            key_file: Path::new("/nonexistent/AuthKey_ABC123DEFG.p8").to_path_buf(),
            key_id: "ABC123DEFG".into(),
            team_id: "DEF123GHIJ".into(),
            topic: "com.example.app".into(),
        }
    );
    assert_eq!(
        cred.files(),
        [&Path::new("/nonexistent/AuthKey_ABC123DEFG.p8").to_path_buf()]
    );
    assert!(
        c.files
            .iter()
            .any(|(p, _)| p.ends_with("AuthKey_ABC123DEFG.p8"))
    );
}

#[test]
fn fcm_takes_a_service_account_file_and_may_override_its_token_uri() {
    let c = parse("kind = \"fcm\"\nservice_account_file = \"sa.json\"\n").expect("valid");
    let cred = c.targets[0].credential.as_ref().expect("credential");
    assert_eq!(cred.kind_name(), "fcm");
    assert_eq!(
        cred.token_url, None,
        "the file's token_uri, read at check time"
    );
    assert_eq!(
        cred.kind,
        CredentialKind::Fcm {
            service_account_file: Path::new("/nonexistent/sa.json").to_path_buf()
        }
    );
    let c = parse(
        "kind = \"fcm\"\nservice_account_file = \"sa.json\"\ntoken_url = \"https://oauth2.test:8443/token\"\n",
    )
    .expect("valid");
    let url = c.targets[0]
        .credential
        .as_ref()
        .expect("c")
        .token_url
        .as_ref()
        .expect("url")
        .url();
    assert_eq!(url, "https://oauth2.test:8443/token");
}

#[test]
fn push_credential_mistakes_are_refused_with_the_key_and_what_to_do() {
    let without = |key: &str| {
        APNS.lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (without("key_id"), "credential.key_id", "needs `key_id`"),
        (without("topic"), "credential.topic", "needs `topic`"),
        (
            APNS.replace("DEF123GHIJ", "def123"),
            "credential.team_id",
            "10 characters A-Z and 0-9",
        ),
        (
            APNS.replace("\"ABC123DEFG\"", "\"ABC-123\""),
            "credential.key_id",
            "10 characters A-Z and 0-9",
        ),
        (
            APNS.replace("com.example.app", "com example"),
            "credential.topic",
            "bundle id",
        ),
        (
            format!("{APNS}service_account_file = \"sa.json\"\n"),
            "credential.service_account_file",
            "does not belong to a `apns-token` credential",
        ),
        (
            format!("{APNS}token_url = \"https://login.test/token\"\n"),
            "credential.token_url",
            "makes no token request",
        ),
        (
            "kind = \"fcm\"\n".into(),
            "credential.service_account_file",
            "needs `service_account_file`",
        ),
        (
            "kind = \"fcm\"\nservice_account_file = \"sa.json\"\nkey_id = \"ABC123DEFG\"\n".into(),
            "credential.key_id",
            "does not belong to a `fcm` credential",
        ),
        (
            "kind = \"fcm\"\nservice_account_file = \"sa.json\"\ntenant = \"t\"\n".into(),
            "credential.tenant",
            "does not belong",
        ),
        (
            "kind = \"fcm\"\nservice_account_file = \"sa.json\"\ntoken_url = \"http://oauth2.test/token\"\n".into(),
            "credential.token_url",
            "https://",
        ),
        (
            format!("kind = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token_file = \"t\"\ntopic = \"x\"\n"),
            "credential.topic",
            "does not belong",
        ),
    ];
    for (text, key, words) in &cases {
        let e = err(text);
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(e.contains(words), "{text:?}: {e}");
    }
}

#[test]
fn a_p8_key_change_changes_the_credential_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(dir.path().join("AuthKey_ABC123DEFG.p8"), "one").expect("write");
    let fp = || {
        parse_in(&path, APNS).expect("valid").targets[0]
            .credential
            .as_ref()
            .expect("c")
            .fingerprint
    };
    let a = fp();
    assert_eq!(a, fp());
    std::fs::write(dir.path().join("AuthKey_ABC123DEFG.p8"), "two").expect("write");
    assert_ne!(a, fp());
}

#[test]
fn a_plain_http_target_cannot_carry_a_credential() {
    let text = format!(
        "[[target]]\nname = \"t\"\nurl = \"http://api.test/\"\nroutes = [\"direct\"]\n[target.credential]\nkind = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token_file = \"t\"\n"
    );
    let e = Config::parse(Path::new("c.toml"), &text)
        .expect_err("plain http")
        .to_string();
    assert!(e.contains("https://"), "{e}");
}

#[test]
fn the_credential_has_its_own_fingerprint_and_leaves_the_targets_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").expect("write");
    let with = |every: &str| {
        parse_in(
            &path,
            &format!(
                "kind = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token_file = \"token\"\nevery = \"{every}\"\n"
            ),
        )
        .expect("valid")
    };
    let a = with("5m");
    let b = with("6m");
    let (ta, tb) = (&a.targets[0], &b.targets[0]);
    assert_eq!(ta.fingerprint, tb.fingerprint, "the routes' health is kept");
    let fa = ta.credential.as_ref().expect("credential").fingerprint;
    let fb = tb.credential.as_ref().expect("credential").fingerprint;
    assert_ne!(fa, fb, "a changed credential is checked again");
    assert_eq!(
        fa,
        with("5m").targets[0]
            .credential
            .as_ref()
            .expect("c")
            .fingerprint
    );
    // The file's content is part of it (a rotated secret is checked again),
    // and the file is watched for reload.
    std::fs::write(&token, "second\n").expect("write");
    let fc = with("5m").targets[0]
        .credential
        .as_ref()
        .expect("c")
        .fingerprint;
    assert_ne!(fa, fc);
    assert!(a.files.iter().any(|(p, _)| *p == token), "{:?}", a.files);
    // No file at all is not a config error: the check will say so.
    std::fs::remove_file(&token).expect("rm");
    with("5m");
}
