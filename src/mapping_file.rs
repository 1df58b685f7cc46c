//! Mapping files, which say which column of a CSV file holds which field: one `field = Column,
//! Column` per line, `#` starting a comment. Read by `switchboard import customers` and
//! `switchboard reconcile` (a leaf).

use anyhow::Context as _;

/// One line of a mapping file: its number, the field, and the columns or value it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub field: String,
    pub values: Vec<String>,
}

/// The entries of a mapping file, in order; a line without `=` is an error naming the line.
pub fn entries(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (field, values) = line
            .split_once('=')
            .with_context(|| format!("mapping line {}: expected `field = Column`", n + 1))?;
        entries.push(Entry {
            line: n + 1,
            field: field.trim().to_owned(),
            values: values.split(',').map(|v| v.trim().to_owned()).collect(),
        });
    }
    Ok(entries)
}

/// The position of `column` among `headers` (case and surrounding spaces do not matter).
pub fn position(headers: &csv::StringRecord, column: &str, line: usize) -> anyhow::Result<usize> {
    headers
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(column.trim()))
        .with_context(|| {
            format!(
                "mapping line {line}: the file has no column {:?}",
                column.trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_skip_comments_and_name_the_bad_line() {
        let text = "# legacy\nphones = Tel, Mobile  # two columns\n\ncaller=From\n";
        let found = entries(text).expect("entries");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].values, ["Tel", "Mobile"]);
        assert_eq!((found[1].line, found[1].field.as_str()), (4, "caller"));
        let error = entries("a\nphones Tel").expect_err("no =").to_string();
        assert!(error.contains("line 1"), "{error}");
        let headers = csv::StringRecord::from(vec!["Tel", " From "]);
        assert_eq!(position(&headers, "from", 2).expect("found"), 1);
        assert!(position(&headers, "Fax", 2).is_err());
    }
}
