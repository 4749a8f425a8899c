//! [`ConfigError`]: what is wrong with a configuration, where (file, line,
//! column, key) and what was expected. Every message is safe to print: it
//! never quotes the content of a credentials or key file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One configuration problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), with `line`.
    pub column: Option<usize>,
    /// The dotted key, e.g. `target[1].expect_status` (empty for the whole file).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// A problem with no position in the file (unreadable file, and so on).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Builds located errors for one file's text.
pub(crate) struct Locator<'a> {
    /// The file, for messages.
    pub file: &'a Path,
    /// Its text, to turn byte offsets into line and column.
    pub text: &'a str,
}

impl Locator<'_> {
    /// An error at the byte range `span` (or nowhere) for `key`.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = self.line_col(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let loc = Locator {
            file: Path::new("x.toml"),
            text: "a = 1\nbé = 2\n",
        };
        let e = loc.error(Some(10..11), "b", "bad");
        assert_eq!((e.line, e.column), (Some(2), Some(4)));
        assert_eq!(e.to_string(), "x.toml:2:4: key `b`: bad");
    }
}
