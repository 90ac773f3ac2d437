//! Docker's `--format` handling: for list commands `table …` (a header row, aligned with
//! tabwriter), `json` (`{{json .}}` per line), or a plain Go template per row ([`parse`],
//! [`Format`], rows built by [`row`] / [`labeled_row`] and headers by [`header`]); for single
//! documents (inspect, version, info) one template over the serialised model ([`render`]).
//!
//! Template errors are reported as the docker CLI reports them for each kind of command
//! ([`TemplateUse`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::CliError;
use crate::tabwriter;
use crate::template::{Method, Template, TemplateError, Value};

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

/// [`parse`] for a list command, its error as the docker CLI's list commands report it.
pub fn parse_list(source: &str, table_default: &str) -> Result<Format, CliError> {
    parse(source, table_default).map_err(|e| TemplateUse::List.error(e))
}

/// Prints a list command's rows in the format `source` (`table`, `table TEMPLATE` or a
/// template; `table` alone is `table_default`), with `columns` (field, title) as a table's
/// header.
pub fn print_list(
    out: &mut dyn std::io::Write,
    source: &str,
    table_default: &str,
    columns: &[(&str, &str)],
    rows: &[Value],
) -> Result<(), CliError> {
    let fmt = parse_list(source, table_default)?;
    out.write_all(fmt.render_list(&header(columns), rows)?.as_bytes())?;
    Ok(())
}

impl Format {
    /// Whether this is a table format.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// The template (without `table`).
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Renders rows (and the header for a table; an error in the header ends it there, as
    /// Docker's does).
    pub fn render(&self, header: &Value, rows: &[Value]) -> Result<String, TemplateError> {
        let mut buf = String::new();
        if self.table {
            buf.push_str(&self.template.execute_header(header));
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

    /// [`Format::render`] for a list command.
    pub fn render_list(&self, header: &Value, rows: &[Value]) -> Result<String, CliError> {
        self.render(header, rows)
            .map_err(|e| TemplateUse::List.error(e))
    }
}

/// Builds a row of string fields (Docker's formatter contexts are all strings); its JSON has
/// sorted keys and HTML characters escaped, as Docker's `MarshalJSON` of a context.
pub fn row(fields: &[(&str, String)]) -> Value {
    Value::Context(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Str(v.clone())))
            .collect(),
    )
}

/// A row with Docker's `Label` method (`{{.Label "k"}}`) over these labels.
pub fn labeled_row(fields: &[(&str, String)], labels: BTreeMap<String, String>) -> Value {
    let mut v = row(fields);
    if let Value::Context(m) = &mut v {
        m.push(("Label".into(), Value::Method(Method::Label(labels))));
    }
    v
}

/// A table's header row: the column names, and the header's `Label` method (the last
/// dot-separated part of the label's name).
pub fn header(fields: &[(&str, &str)]) -> Value {
    Value::Map(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Str(v.to_string())))
            .chain(std::iter::once((
                "Label".to_string(),
                Value::Method(Method::HeaderLabel),
            )))
            .collect(),
    )
}

/// Labels as the `Labels` column shows them: sorted `k=v`, comma-separated.
pub fn labels_column(labels: Option<&BTreeMap<String, String>>) -> String {
    labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Which kind of command uses a template: the docker CLI words its errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateUse {
    /// List commands (`images`, `volume ls`, …): `template parsing error: …`, exit 1.
    List,
    /// `ps`: `failed to parse template: …` / `failed to execute template: …`.
    Ps,
    /// `inspect`: `template parsing error: …` (exit 64 for a template that does not parse).
    Inspect,
    /// `version`, `info`: the error as is (exit 64 for a template that does not parse).
    Document,
}

impl TemplateUse {
    /// The error of a template that does not execute.
    pub fn error(self, e: TemplateError) -> CliError {
        match self {
            TemplateUse::List | TemplateUse::Inspect => {
                CliError::Message(format!("template parsing error: {e}"))
            }
            TemplateUse::Ps => CliError::Message(format!("failed to execute template: {e}")),
            TemplateUse::Document => CliError::Message(e.to_string()),
        }
    }

    /// Parses a template, its error as this kind of command reports it.
    pub fn parse(self, src: &str) -> Result<Template, CliError> {
        Template::parse(src).map_err(|e| match self {
            TemplateUse::List => CliError::Message(format!("template parsing error: {e}")),
            TemplateUse::Ps => CliError::Message(format!("failed to parse template: {e}")),
            TemplateUse::Inspect | TemplateUse::Document => {
                CliError::Status(64, format!("template parsing error: {e}"))
            }
        })
    }
}

/// Renders a single document (a model serialised, field order kept) with a template.
pub fn render<T: Serialize>(t: &Template, v: &T, kind: TemplateUse) -> Result<String, CliError> {
    render_value(t, &Value::from_serialize(v), kind)
}

/// Renders a template value.
pub fn render_value(t: &Template, v: &Value, kind: TemplateUse) -> Result<String, CliError> {
    t.execute(v).map_err(|e| kind.error(e))
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
        // A row's JSON escapes HTML characters (Docker's MarshalJSON); `json` of a field
        // does not (the encoder's escaping is off).
        let r = row(&[("Ports", "0.0.0.0:80->80/tcp".into())]);
        let f = parse("{{json .}} {{json .Ports}}", "").unwrap();
        assert_eq!(
            f.render(&header, &[r]).unwrap(),
            "{\"Ports\":\"0.0.0.0:80-\\u003e80/tcp\"} \"0.0.0.0:80->80/tcp\"\n"
        );
    }

    #[test]
    fn label_columns_like_docker() {
        let labels: BTreeMap<String, String> =
            [("com.example.a-b_c".to_string(), "v".to_string())].into();
        let r = labeled_row(&[("Name", "x".into())], labels.clone());
        let h = header(&[("Name", "NAME")]);
        let f = parse(r#"table {{.Name}}\t{{.Label "com.example.a-b_c"}}"#, "").unwrap();
        assert_eq!(
            f.render(&h, &[r]).unwrap(),
            "NAME      a b c\nx         v\n"
        );
        assert_eq!(labels_column(Some(&labels)), "com.example.a-b_c=v");
        assert_eq!(labels_column(None), "");
    }
}
