//! Log lines as operators read them: text on a terminal (ANSI colours only
//! when the caller says stderr is one), JSON lines otherwise.
//!
//! In both formats the fields `target`, `route` and `reason` mean ours: a
//! target's name, a route's name, a failure reason. tracing's own JSON
//! formatter writes the event's module path as `target`; here the module
//! path goes to `module` (JSON) or away (text), and a field written
//! `target_name` (the older spelling, still used in a few call sites) is
//! shown as `target`.
//!
//! Every value, the message included, passes through
//! [`redact_userinfo`] on its way out: a URL's `user:password@` (an app
//! that put credentials in its proxy request, a detail quoting a URL)
//! never reaches a log line, whatever the call site formatted.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The field name shown for a field written `name`.
fn shown(name: &str) -> &str {
    match name {
        "target_name" => "target",
        other => other,
    }
}

/// A subscriber writing `format` lines to `writer`, filtered by `filter`;
/// ANSI colours (text only) when `ansi`.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(
            builder
                .with_ansi(ansi)
                .with_target(false)
                .fmt_fields(TextFields)
                .finish(),
        ),
        LogFormat::Json => Box::new(builder.with_ansi(false).event_format(JsonLines).finish()),
    }
}

// === redaction ===

/// Characters that end a token: a URL or an authority never holds them
/// unescaped, and formatted values put them around strings.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || "\"'`<>()[]{},;\\".contains(c)
}

/// `s` with every `user:password@` of a URL or authority replaced by
/// `***@`: `http://u:p@host/` → `http://***@host/`, `u:p@host:443` →
/// `***@host:443`. Errs on the side of hiding: in a token with an `@`,
/// everything from the scheme (or the token's start) to the last `@` goes.
pub fn redact_userinfo(s: &str) -> Cow<'_, str> {
    if !s.contains('@') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(ends_token).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        out.push_str(&redact_token(token));
        let sep_len = tail.chars().next().map_or(0, char::len_utf8);
        out.push_str(&tail[..sep_len]);
        rest = &tail[sep_len..];
    }
    Cow::Owned(out)
}

fn redact_token(token: &str) -> Cow<'_, str> {
    let Some(at) = token.rfind('@') else {
        return Cow::Borrowed(token);
    };
    let start = token.find("://").map_or(0, |i| i + 3);
    if at <= start {
        return Cow::Borrowed(token);
    }
    Cow::Owned(format!("{}***{}", &token[..start], &token[at..]))
}

// === text ===

/// Text fields: `message` first as it is, then `name=value`.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let text = format!("{value:?}");
        let text = redact_userinfo(&text);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{text}")
        } else {
            write!(self.writer, "{sep}{}={text}", shown(field.name()))
        };
    }
}

// === JSON ===

/// One JSON object per event: `timestamp` (RFC 3339, UTC, milliseconds),
/// `level`, `message`, the event's fields, `module`.
struct JsonLines;

#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Vec<(String, serde_json::Value)>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = shown(field.name());
        // `target` written both ways: the explicit one wins.
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| n == name) {
            if field.name() == name {
                slot.1 = value;
            }
            return;
        }
        self.fields.push((name.to_string(), value));
    }
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let text = redact_userinfo(&text).into_owned();
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, serde_json::Value::String(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let text = redact_userinfo(value).into_owned();
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, serde_json::Value::String(text));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let v = serde_json::Number::from_f64(value)
            .map_or(serde_json::Value::Null, serde_json::Value::Number);
        self.put(field, v);
    }
}

/// `2026-11-23T11:47:05.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let whole = crate::dial::tls::rfc3339(secs);
    let base = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{base}.{:03}Z", d.subsec_millis())
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut v = JsonVisitor::default();
        event.record(&mut v);
        let mut line = String::with_capacity(256);
        line.push('{');
        let _ = write!(
            line,
            "\"timestamp\":{},\"level\":{}",
            json_string(&rfc3339_millis(SystemTime::now())),
            json_string(meta.level().as_str())
        );
        if let Some(m) = &v.message {
            let _ = write!(line, ",\"message\":{}", json_string(m));
        }
        for (name, value) in &v.fields {
            if matches!(name.as_str(), "timestamp" | "level" | "message" | "module") {
                continue;
            }
            let _ = write!(line, ",{}:{value}", json_string(name));
        }
        let _ = write!(line, ",\"module\":{}", json_string(meta.target()));
        line.push('}');
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn userinfo_is_redacted_wherever_it_appears() {
        for (input, want) in [
            (
                "bad host in URL \"http://alice:s3cret@api.example/x\"",
                "bad host in URL \"http://***@api.example/x\"",
            ),
            (
                "CONNECT target must be host:port, got \"bob:hunter2@push.test:443\"",
                "CONNECT target must be host:port, got \"***@push.test:443\"",
            ),
            ("http://u:p@h http://h/ok", "http://***@h http://h/ok"),
            ("no at sign here", "no at sign here"),
            ("http://@h", "http://@h"),
        ] {
            assert_eq!(redact_userinfo(input), want, "{input}");
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn capture(format: LogFormat, ansi: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub = subscriber(EnvFilter::new("info"), format, ansi, buf.clone());
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn json_lines_carry_our_target_and_the_module_apart() {
        let out = capture(LogFormat::Json, false, || {
            tracing::warn!(target_name = %"apns", route = %"provider", reason = %"proxy_upstream_error", n = 3u64, "route unhealthy");
            tracing::info!(target = %"sms", url = %"http://u:pw@sms.test/", "explicit target field");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["target"], "apns");
        assert_eq!(lines[0]["route"], "provider");
        assert_eq!(lines[0]["reason"], "proxy_upstream_error");
        assert_eq!(lines[0]["n"], 3);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["message"], "route unhealthy");
        assert_eq!(lines[0]["module"], module_path!());
        assert!(lines[0].get("target_name").is_none());
        assert_eq!(lines[1]["target"], "sms");
        assert_eq!(lines[1]["url"], "http://***@sms.test/");
        let ts = lines[0]["timestamp"].as_str().expect("timestamp");
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }

    #[test]
    fn text_lines_have_no_ansi_unless_asked_and_rename_target_name() {
        let plain = capture(LogFormat::Text, false, || {
            tracing::warn!(target_name = %"apns", "route unhealthy");
        });
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(plain.contains("route unhealthy target=apns"), "{plain}");
        assert!(!plain.contains(module_path!()), "{plain}");
        let coloured = capture(LogFormat::Text, true, || {
            tracing::warn!(target_name = %"apns", "route unhealthy");
        });
        assert!(coloured.contains('\u{1b}'), "{coloured:?}");
    }
}
