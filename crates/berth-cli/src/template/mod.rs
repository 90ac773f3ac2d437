//! A subset of Go's `text/template`, as Docker's `--format` uses it.
//!
//! Supported: text and actions with `{{-`/`-}}` trimming and `{{/* comments */}}`; fields
//! (`.A.B`), `.`, variables (`$`, `$x := …`, `range $i, $v := …`); pipelines with `|`;
//! parenthesised sub-pipelines; string, number, `true`/`false`/`nil` literals; `if`/`else if`/
//! `else`/`end`, `range`/`else`/`end`, `with`/`else`/`end`; methods with arguments
//! (`{{.Label "k"}}`, [`Method`]); Go's builtin functions (`and`, `or`, `not`, `len`, `index`,
//! `slice`, `print`, `printf`, `println`, `html`, `js`, `urlquery`, `call`, `eq`, `ne`, `lt`,
//! `le`, `gt`, `ge`) and Docker's (`json`, `join`, `split`, `upper`, `lower`, `title`,
//! `truncate`, `pad`), with Docker's header variants for table headers.
//!
//! Values are printed as Go's `fmt` prints them: slices `[a b]`, maps `map[k:v]` (sorted
//! keys), structs `{a b}`, nil `<nil>`, a missing map key `<no value>`; JSON objects are
//! structs unless marked as maps (Go's JSON would not tell), and nulls can be marked as nil
//! slices / maps so that `{{.Config.Cmd}}` prints `[]` as Docker's typed structs do.
//!
//! - [`value`]: [`Value`], Go's printing and JSON encoding of it;
//! - [`number`]: Go's float formatting and `fmt.Sprintf`;
//! - `parse`: the lexer and parser; `exec`: execution and the functions.

mod exec;
pub mod number;
mod parse;
pub mod value;

#[cfg(test)]
mod tests;

pub use number::{go_float_g, go_float_json, go_float_v, sprintf};
pub use value::{write_json_string, Method, Value};

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

/// A template error (parse or execution), in Go's words where practical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(format!("template: {}", msg.into())))
}

impl Template {
    /// Parses a template.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            nodes: parse::parse(src)?,
        })
    }

    /// Executes against `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        exec::run(&self.nodes, data, false).map_err(|(_, e)| e)
    }

    /// Executes against `data`, also naming the fields of `.` the template evaluated (how
    /// the docker CLI finds out that a `ps` format shows `.Size`).
    pub fn execute_tracking(&self, data: &Value) -> (Result<String, TemplateError>, Vec<String>) {
        let (r, used) = exec::run_tracking(&self.nodes, data, false);
        (r.map_err(|(_, e)| e), used)
    }

    /// Executes with Docker's header functions (how table headers are rendered: `json`,
    /// `split`, `join`, `title`, `lower`, `upper` and `truncate` pass their first argument
    /// through; `pad` pads). As Docker's, an error ends the header where it happened: the text
    /// written until then is the header.
    pub fn execute_header(&self, data: &Value) -> String {
        match exec::run(&self.nodes, data, true) {
            Ok(s) => s,
            Err((partial, _)) => partial,
        }
    }
}
