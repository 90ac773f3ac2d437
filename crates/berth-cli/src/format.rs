//! Docker's `--format` handling for list commands: `table …` (a header row, aligned with
//! tabwriter), `json` (`{{json .}}` per line), or a plain Go template per row.

use crate::tabwriter;
use crate::template::{Template, TemplateError, Value};

/// A parsed `--format`.
pub struct Format {
    table: bool,
    template: Template,
}

/// Docker's `preFormat`: strips `table`, maps `json`, trims spaces and turns literal `\t` /
/// `\n` into tabs / newlines. `table_default` is used for a bare `table`.
pub fn parse(source: &str, table_default: &str) -> Result<Format, TemplateError> {
    let (table, body) = if source == "table" {
        (
            true,
            table_default
                .strip_prefix("table")
                .unwrap_or(table_default)
                .to_string(),
        )
    } else if let Some(rest) = source.strip_prefix("table") {
        (true, rest.to_string())
    } else if source == "json" {
        (false, "{{json .}}".to_string())
    } else {
        (false, source.to_string())
    };
    let body = body
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    Ok(Format {
        table,
        template: Template::parse(&body)?,
    })
}

impl Format {
    /// Whether this is a table format.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Renders rows (and the header for a table).
    pub fn render(&self, header: &Value, rows: &[Value]) -> Result<String, TemplateError> {
        let mut buf = String::new();
        if self.table {
            buf.push_str(&self.template.execute_header(header)?);
            buf.push('\n');
        }
        for r in rows {
            buf.push_str(&self.template.execute(r)?);
            buf.push('\n');
        }
        Ok(if self.table {
            tabwriter::docker_table(&buf)
        } else {
            buf
        })
    }
}

/// Builds a Go-map value of string fields (Docker's formatter contexts are all strings).
pub fn row(fields: &[(&str, String)]) -> Value {
    Value::Map(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Str(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_plain() {
        let header = row(&[("ID", "IMAGE ID".into()), ("Tag", "TAG".into())]);
        let rows = vec![
            row(&[("ID", "abc".into()), ("Tag", "latest".into())]),
            row(&[("ID", "defdefdefdef".into()), ("Tag", "1".into())]),
        ];
        let f = parse("table {{.ID}}\\t{{.Tag}}", "").unwrap();
        assert_eq!(
            f.render(&header, &rows).unwrap(),
            "IMAGE ID       TAG\nabc            latest\ndefdefdefdef   1\n"
        );
        let f = parse("{{.ID}}:{{.Tag}}", "").unwrap();
        assert_eq!(
            f.render(&header, &rows).unwrap(),
            "abc:latest\ndefdefdefdef:1\n"
        );
        let f = parse("json", "").unwrap();
        assert_eq!(
            f.render(&header, &rows[..1]).unwrap(),
            "{\"ID\":\"abc\",\"Tag\":\"latest\"}\n"
        );
        let f = parse("table", "table {{.Tag}}").unwrap();
        assert_eq!(f.render(&header, &[]).unwrap(), "TAG\n");
    }
}
