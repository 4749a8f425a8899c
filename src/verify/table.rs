//! Aligned plain-text tables: every column as wide as its widest cell, two
//! spaces between columns, the last column left ragged.

use std::fmt::Write as _;

/// Renders `rows` (the first is the header) as aligned lines.
pub fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `3d 4h`, `5h 12m`, `42m`, `17s`: a span for a person.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_spans_read_well() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string(), "C".to_string()],
            vec!["long".to_string(), "x".to_string(), "tail".to_string()],
        ];
        assert_eq!(aligned(&rows), "A     BB  C\nlong  x   tail\n");
        assert_eq!(span(3 * 86_400 + 3600 * 4 + 5), "3d 4h");
        assert_eq!(span(-(2 * 3600 + 60 * 7)), "2h 7m");
        assert_eq!(span(59), "59s");
    }
}
