//! Turns the raw schema into a checked [`Config`]: parsing with located
//! errors, the `Compiler` with the helpers every table shares (errors,
//! named files, fingerprints, durations, names), and the wiring that
//! compiles the tables in order.
//!
//! The tables themselves are compiled next door: `settings.rs` (listen,
//! probe, admin, forward, run, shutdown, runtime, watch), `resolve.rs`
//! (`[resolve]`, `[dns]`), `roots.rs` (TLS trust), `routes.rs` and
//! `targets.rs`. The order in `Compiler::config` is the order mistakes are
//! reported in. Nothing here reads a file except through
//! `Compiler::file`, and nothing dials.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::Locator;
use super::raw::RawConfig;
use super::{Config, ConfigError, ResolveSettings, defaults, parse_duration};

/// The most bytes read from a credentials or certificate file.
pub(super) const MAX_SECRET_FILE: u64 = 256 * 1024;

/// Label values (route and target names) are kept short and plain.
pub(super) const MAX_NAME_LEN: usize = 64;

pub(super) type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn compile(path: &Path, text: &str) -> Result<Config> {
    let loc = Locator { file: path, text };
    let raw: RawConfig = {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> shows up in the path as a private field name.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            let key = if key == "." { String::new() } else { key };
            loc.error(inner.span(), key, inner.message().trim().to_string())
        })?
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tables: toml::Table = text.parse().unwrap_or_default();
    let c = Compiler {
        loc,
        base_dir,
        tables,
        files: Default::default(),
    };
    c.config(raw)
}

pub(super) struct Compiler<'a> {
    pub(super) loc: Locator<'a>,
    base_dir: PathBuf,
    /// The file as plain TOML values, for fingerprints.
    tables: toml::Table,
    /// Every file the config names, as read.
    files: std::cell::RefCell<std::collections::BTreeMap<PathBuf, Option<u64>>>,
}

pub(super) fn hash_of(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Compiler<'_> {
    pub(super) fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        self.loc.error(Some(span), key, msg)
    }

    fn config(self, raw: RawConfig) -> Result<Config> {
        let listen = self.listen(&raw)?;
        let probe = self.probe(&raw)?;
        let admin = self.admin(&raw)?;
        let resolve = Arc::new(ResolveSettings {
            overrides: self.resolve(&raw)?,
            dns: self.dns(&raw.dns)?,
        });
        let base_roots = self.base_roots(&raw)?;
        let routes = self.routes(&raw.routes, &base_roots, probe.timeout)?;
        let targets = self.targets(&raw.targets, &raw.tls, &base_roots, &routes, &probe)?;
        let forward = self.forward(&raw.forward, &routes)?;
        let compliance = self.compliance(&raw)?;
        let status = self.status(&raw)?;
        let state_dir = raw.state_dir.as_ref().map(|s| self.path(s.get_ref()));
        let run = self.run(&raw)?;
        let shutdown = self.shutdown(&raw)?;
        // Last: every located mistake is reported before this one.
        if targets.is_empty() {
            return Err(self.loc.error(
                None,
                "target",
                "no target: add at least one [[target]] (e.g. `name = \"apns\"`, `preset = \"apns\"`) — there is nothing to probe or route",
            ));
        }
        Ok(Config {
            file: self.loc.file.to_path_buf(),
            listen,
            probe,
            admin,
            resolve,
            routes,
            targets,
            forward,
            compliance,
            status,
            state_dir,
            run,
            shutdown,
            watch_processes: self.watch_processes(&raw)?,
            runtime: self.runtime(&raw)?,
            files: self.files.take().into_iter().collect(),
            config_hash: crate::files::content_hash_of(self.loc.text.as_bytes()),
        })
    }

    /// A fingerprint of the `index`th entry of the array `table` plus the
    /// tables every entry depends on.
    pub(super) fn fingerprint(&self, table: &str, index: usize, extra: &[u64]) -> u64 {
        let entry = self
            .tables
            .get(table)
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(index))
            .map(|v| {
                // A credential has its own schedule and its own
                // fingerprint: changing it keeps the routes' health.
                let mut v = v.clone();
                if let Some(t) = v.as_table_mut() {
                    t.remove("credential");
                }
                v.to_string()
            })
            .unwrap_or_default();
        let shared = |k: &str| {
            self.tables
                .get(k)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let extra = format!("{extra:?}");
        hash_of(&[
            &entry,
            &shared("tls"),
            &shared("resolve"),
            &shared("dns"),
            &extra,
        ])
    }

    /// A file the config names, resolved against the config's folder and
    /// remembered: a change to it builds a new generation.
    pub(super) fn file(&self, p: &str) -> PathBuf {
        let path = self.path(p);
        // Hashed before it is read: a change after this point, even one
        // before the generation is in force, is seen by the next poll.
        self.files
            .borrow_mut()
            .entry(path.clone())
            .or_insert_with(|| crate::files::content_hash(&path));
        path
    }

    /// The content hash [`Compiler::file`] registered for `path`.
    pub(super) fn file_hash(&self, path: &Path) -> Option<u64> {
        self.files.borrow().get(path).copied().flatten()
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A duration, or `"off"` (`None`), or `default` when absent.
    pub(super) fn duration_or_off(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Option<Duration>> {
        match v {
            Some(v) if v.get_ref() == "off" => Ok(None),
            other => Ok(Some(self.duration(other, key)?.unwrap_or(default))),
        }
    }

    /// A duration greater than zero and at most a day: intervals, timeouts,
    /// holds and grace periods.
    pub(super) fn duration(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
    ) -> Result<Option<Duration>> {
        self.duration_up_to(v, key, defaults::MAX_SETTING_DURATION)
    }

    /// A duration greater than zero and at most `max`.
    pub(super) fn duration_up_to(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        max: Duration,
    ) -> Result<Option<Duration>> {
        let Some(v) = v else { return Ok(None) };
        let d = parse_duration(v.get_ref()).map_err(|m| self.err(v.span(), key, m))?;
        if d.is_zero() {
            return Err(self.err(v.span(), key, "must be greater than zero"));
        }
        if d > max {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "`{}` is out of range: at most {}",
                    v.get_ref(),
                    super::duration::describe(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    pub(super) fn name(&self, s: &Spanned<String>, key: &str) -> Result<String> {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.len() <= MAX_NAME_LEN
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return Err(self.err(
                s.span(),
                key,
                format!("`{n}` is not a valid name: use 1 to {MAX_NAME_LEN} of a-z, A-Z, 0-9, '-', '_', '.'"),
            ));
        }
        Ok(n.clone())
    }
}
