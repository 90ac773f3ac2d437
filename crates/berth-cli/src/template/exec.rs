//! Execution: walking the nodes, evaluating pipelines, and the functions (Go's builtins and
//! Docker's `basicFunctions`, with Docker's `HeaderFunctions` for table headers).

use super::number::sprintf;
use super::parse::{Arg, Command, Node, Pipeline};
use super::{err, TemplateError, Value};
use berth_util::url::query_escape;

/// Runs the template; on an error, the text written until then comes with it.
pub(super) fn run(
    nodes: &[Node],
    data: &Value,
    header: bool,
) -> Result<String, (String, TemplateError)> {
    run_tracking(nodes, data, header).0
}

/// [`run`], with the names of the fields of `.` that were evaluated.
pub(super) fn run_tracking(
    nodes: &[Node],
    data: &Value,
    header: bool,
) -> (Result<String, (String, TemplateError)>, Vec<String>) {
    let mut st = State {
        vars: vec![("$".to_string(), data.clone())],
        header,
        out: String::new(),
        used: Vec::new(),
    };
    let r = st.walk(nodes, data);
    let used = std::mem::take(&mut st.used);
    match r {
        Ok(()) => (Ok(st.out), used),
        Err(e) => (Err((st.out, e)), used),
    }
}

struct State {
    vars: Vec<(String, Value)>,
    header: bool,
    out: String,
    /// First components of the field paths evaluated on `.` (`.Size` → `Size`).
    used: Vec<String>,
}

/// A field of a value as it is (a method stays a method).
fn field_raw(v: &Value, name: &str) -> Result<Value, TemplateError> {
    match v {
        Value::Struct(fields) => fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| TemplateError(format!("template: :1: executing \"\" at <.{name}>: can't evaluate field {name} in type struct"))),
        Value::Map(fields) => Ok(fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::NoValue)),
        // A row is a struct in Docker's CLI: a field it does not have is an error.
        Value::Context(fields) => fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| TemplateError(format!("template: :1: executing \"\" at <.{name}>: can't evaluate field {name} in type *formatter.Context"))),
        Value::NilMap | Value::NoValue => Ok(Value::NoValue),
        Value::Nil => err(format!(":1: executing \"\" at <.{name}>: nil pointer evaluating interface {{}}.{name}")),
        other => err(format!(
            ":1: executing \"\" at <.{name}>: can't evaluate field {name} in type {}",
            other.type_name()
        )),
    }
}

/// A field's value: a method is called without arguments (an error for the methods rows
/// have, which all take one).
fn field_of(v: &Value, name: &str) -> Result<Value, TemplateError> {
    match field_raw(v, name)? {
        Value::Method(m) => m.call(&[]),
        other => Ok(other),
    }
}

fn fields_of(mut v: Value, path: &[String]) -> Result<Value, TemplateError> {
    for f in path {
        v = field_of(&v, f)?;
    }
    Ok(v)
}

/// Go's `fmt.Sprint`: operands joined, with a space between two that are not strings.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&a.to_go_string());
    }
    out
}

/// A string argument of a Docker function (Go checks the type).
fn string_arg(name: &str, v: &Value) -> Result<String, TemplateError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => err(format!(
            ":1: executing \"\" at <{name}>: wrong type for value; expected string; got {}",
            go_type(other)
        )),
    }
}

/// An int argument of a Docker function.
fn int_arg(name: &str, v: &Value) -> Result<i64, TemplateError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => err(format!(
            ":1: executing \"\" at <{name}>: wrong type for value; expected int; got {}",
            go_type(other)
        )),
    }
}

/// The Go type named in "wrong type" errors.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Map(_) | Value::NilMap => "map[string]interface {}",
        Value::List(_) | Value::NilList => "[]interface {}",
        Value::Struct(_) => "map[string]interface {}",
        other => other.type_name(),
    }
}

impl State {
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        self.out.push_str(&v.to_go_string());
                    }
                }
                Node::If(p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.walk(body, dot)?;
                    } else {
                        self.walk(els, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::With(p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.walk(body, &v)?;
                    } else {
                        self.walk(els, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range(p, body, els) => {
                    let mark = self.vars.len();
                    let decl = p.decl.clone();
                    let mut p2 = p.clone();
                    p2.decl.clear();
                    let v = self.pipeline(&p2, dot)?;
                    let items: Vec<(Value, Value)> = match &v {
                        Value::List(l) => l
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Value::Int(i as i64), x.clone()))
                            .collect(),
                        Value::Map(m) => {
                            let mut m = m.clone();
                            m.sort_by(|a, b| a.0.cmp(&b.0));
                            m.into_iter().map(|(k, x)| (Value::Str(k), x)).collect()
                        }
                        Value::Int(n) => (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect(),
                        Value::Nil | Value::NilList | Value::NilMap | Value::NoValue => Vec::new(),
                        other => {
                            return err(format!(
                                ":1: range can't iterate over {}",
                                other.to_go_string()
                            ))
                        }
                    };
                    if items.is_empty() {
                        self.walk(els, dot)?;
                    }
                    for (k, x) in items {
                        let inner = self.vars.len();
                        match decl.len() {
                            0 => {}
                            1 => self.vars.push((decl[0].clone(), x.clone())),
                            _ => {
                                self.vars.push((decl[0].clone(), k));
                                self.vars.push((decl[1].clone(), x.clone()));
                            }
                        }
                        self.walk(body, &x)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    fn note(&mut self, path: &[String]) {
        if let Some(f) = path.first() {
            if !self.used.contains(f) {
                self.used.push(f.clone());
            }
        }
    }

    fn var(&self, name: &str) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| TemplateError(format!("template: :1: undefined variable: {name}")))
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut last: Option<Value> = None;
        for c in &p.cmds {
            last = Some(self.command(c, dot, last)?);
        }
        let v = last.unwrap_or(Value::Nil);
        match p.decl.len() {
            0 => {}
            1 => self.vars.push((p.decl[0].clone(), v.clone())),
            _ => return err(":1: too many declarations in command"),
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        match a {
            Arg::Field(path) => {
                self.note(path);
                fields_of(dot.clone(), path)
            }
            Arg::Var(name, path) => fields_of(self.var(name)?, path),
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Sub(p, path) => {
                let v = self.pipeline(p, dot)?;
                fields_of(v, path)
            }
            Arg::Ident(name) => self.call(name, Vec::new()),
        }
    }

    /// The receiver and the last field name of a command that names a field
    /// (`.A.Label`, `$x.Label`): the field may be a method taking the command's arguments.
    fn method_target(
        &mut self,
        a: &Arg,
        dot: &Value,
    ) -> Result<Option<(Value, String)>, TemplateError> {
        let (base, path) = match a {
            Arg::Field(path) if !path.is_empty() => {
                self.note(path);
                (dot.clone(), path)
            }
            Arg::Var(name, path) if !path.is_empty() => (self.var(name)?, path),
            _ => return Ok(None),
        };
        let (last, init) = path.split_last().expect("a non-empty path");
        Ok(Some((fields_of(base, init)?, last.clone())))
    }

    fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let Some(head) = c.args.first() else {
            return err(":1: missing command");
        };
        let mut args = Vec::new();
        for a in &c.args[1..] {
            args.push(self.arg(a, dot)?);
        }
        args.extend(piped);
        if let Arg::Ident(name) = head {
            return self.call(name, args);
        }
        if args.is_empty() {
            return self.arg(head, dot);
        }
        match self.method_target(head, dot)? {
            Some((recv, name)) => match field_raw(&recv, &name)? {
                Value::Method(m) => m.call(&args),
                _ => err(":1: can't give argument to non-function"),
            },
            None => err(":1: can't give argument to non-function"),
        }
    }

    fn call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() != n {
                err(format!(
                    ":1: wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            } else {
                Ok(())
            }
        };
        if self.header {
            // Docker's HeaderFunctions: the column's name passes through (typed string
            // arguments, as Go checks them); `pad` is not replaced.
            match name {
                "json" | "title" | "lower" | "upper" => {
                    want(1)?;
                    return Ok(Value::Str(string_arg(name, &args[0])?));
                }
                "split" | "join" => {
                    want(2)?;
                    string_arg(name, &args[1])?;
                    return Ok(Value::Str(string_arg(name, &args[0])?));
                }
                "truncate" => {
                    want(2)?;
                    int_arg(name, &args[1])?;
                    return Ok(Value::Str(string_arg(name, &args[0])?));
                }
                _ => {}
            }
        }
        let s = |v: &Value| v.to_go_string();
        match name {
            "json" => {
                want(1)?;
                // A row's JSON evaluates every field (Docker's MarshalJSON calls them all).
                if let Value::Context(fields) = &args[0] {
                    for (k, _) in fields {
                        if !self.used.contains(k) {
                            self.used.push(k.clone());
                        }
                    }
                }
                Ok(Value::Str(args[0].to_json()))
            }
            "upper" => {
                want(1)?;
                Ok(Value::Str(string_arg(name, &args[0])?.to_uppercase()))
            }
            "lower" => {
                want(1)?;
                Ok(Value::Str(string_arg(name, &args[0])?.to_lowercase()))
            }
            "title" => {
                want(1)?;
                Ok(Value::Str(go_title(&string_arg(name, &args[0])?)))
            }
            "split" => {
                want(2)?;
                let (text, sep) = (string_arg(name, &args[0])?, string_arg(name, &args[1])?);
                Ok(Value::List(
                    go_split(&text, &sep).into_iter().map(Value::Str).collect(),
                ))
            }
            "join" => {
                want(2)?;
                let items: Vec<String> = match &args[0] {
                    Value::List(l) => l.iter().map(|x| string_arg(name, x)).collect::<Result<_, _>>()?,
                    Value::NilList | Value::Nil => Vec::new(),
                    other => {
                        return err(format!(
                            ":1: executing \"\" at <join>: wrong type for value; expected []string; got {}",
                            go_type(other)
                        ))
                    }
                };
                Ok(Value::Str(items.join(&string_arg(name, &args[1])?)))
            }
            "truncate" => {
                want(2)?;
                let text = string_arg(name, &args[0])?;
                let n = int_arg(name, &args[1])?;
                // Go slices bytes: `source[:length]` when the source is at least that long.
                if n < 0 || (text.len() as i64) < n {
                    return Ok(Value::Str(text));
                }
                let mut cut = n as usize;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                Ok(Value::Str(text[..cut].to_string()))
            }
            "pad" => {
                want(3)?;
                let text = string_arg(name, &args[0])?;
                let (l, r) = (int_arg(name, &args[1])?, int_arg(name, &args[2])?);
                if text.is_empty() {
                    return Ok(Value::Str(text));
                }
                Ok(Value::Str(format!(
                    "{}{text}{}",
                    " ".repeat(l.max(0) as usize),
                    " ".repeat(r.max(0) as usize)
                )))
            }
            "len" => {
                want(1)?;
                Ok(Value::Int(match &args[0] {
                    Value::Str(x) => x.len() as i64,
                    Value::List(l) => l.len() as i64,
                    Value::Map(m) | Value::Struct(m) | Value::Context(m) => m.len() as i64,
                    Value::NilList | Value::NilMap => 0,
                    other => {
                        return err(format!(
                            ":1: error calling len: len of type {}",
                            other.type_name()
                        ))
                    }
                }))
            }
            "index" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for index: want at least 1 got 0");
                }
                let mut v = args[0].clone();
                for k in &args[1..] {
                    v = index(&v, k)?;
                }
                Ok(v)
            }
            "slice" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for slice: want at least 1 got 0");
                }
                slice(&args[0], &args[1..])
            }
            "print" => Ok(Value::Str(sprint(&args))),
            "println" => Ok(Value::Str(format!(
                "{}\n",
                args.iter().map(s).collect::<Vec<_>>().join(" ")
            ))),
            "printf" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for printf: want at least 1 got 0");
                }
                Ok(Value::Str(sprintf(&s(&args[0]), &args[1..])))
            }
            "html" => Ok(Value::Str(html_escape(&sprint(&args)))),
            "js" => Ok(Value::Str(js_escape(&sprint(&args)))),
            "urlquery" => Ok(Value::Str(query_escape(&sprint(&args)))),
            "call" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for call: want at least 1 got 0");
                }
                match &args[0] {
                    Value::Method(m) => m.call(&args[1..]),
                    other => err(format!(
                        ":1: error calling call: non-function of type {}",
                        go_type(other)
                    )),
                }
            }
            "not" => {
                want(1)?;
                Ok(Value::Bool(!args[0].truthy()))
            }
            "and" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for and");
                }
                Ok(args
                    .iter()
                    .find(|a| !a.truthy())
                    .unwrap_or(args.last().unwrap_or(&Value::Nil))
                    .clone())
            }
            "or" => {
                if args.is_empty() {
                    return err(":1: wrong number of args for or");
                }
                Ok(args
                    .iter()
                    .find(|a| a.truthy())
                    .unwrap_or(args.last().unwrap_or(&Value::Nil))
                    .clone())
            }
            "eq" => {
                if args.len() < 2 {
                    return err(":1: wrong number of args for eq: want at least 2");
                }
                Ok(Value::Bool(args[1..].iter().any(|b| {
                    cmp(&args[0], b) == Some(std::cmp::Ordering::Equal)
                })))
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let o = cmp(&args[0], &args[1]).ok_or_else(|| {
                    TemplateError(format!(
                        "template: :1: error calling {name}: incompatible types for comparison"
                    ))
                })?;
                use std::cmp::Ordering::*;
                Ok(Value::Bool(match name {
                    "ne" => o != Equal,
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                }))
            }
            other => err(format!(":1: function {other:?} not defined")),
        }
    }
}

/// `index`: one step into a list, map or string.
fn index(v: &Value, k: &Value) -> Result<Value, TemplateError> {
    Ok(match (v, k) {
        (Value::List(l), Value::Int(i)) => {
            if *i < 0 || *i as usize >= l.len() {
                return err(format!(":1: error calling index: index out of range: {i}"));
            }
            l[*i as usize].clone()
        }
        (Value::NilList, Value::Int(i)) => {
            return err(format!(":1: error calling index: index out of range: {i}"));
        }
        (Value::Map(m), Value::Str(key))
        | (Value::Struct(m), Value::Str(key))
        | (Value::Context(m), Value::Str(key)) => m
            .iter()
            .find(|(k2, _)| k2 == key)
            .map(|(_, x)| x.clone())
            .unwrap_or(Value::NoValue),
        (Value::NilMap, _) | (Value::NoValue, _) => Value::NoValue,
        (Value::Str(st), Value::Int(i)) => {
            let b = st.as_bytes();
            if *i < 0 || *i as usize >= b.len() {
                return err(format!(":1: error calling index: index out of range: {i}"));
            }
            Value::Int(b[*i as usize] as i64)
        }
        (v, k) => {
            return err(format!(
                ":1: error calling index: cannot index {} with {}",
                v.type_name(),
                k.type_name()
            ))
        }
    })
}

/// `slice x i j k`: `x[i:j]` (`x[i:j:k]` for slices) of a string or a list.
fn slice(v: &Value, idx: &[Value]) -> Result<Value, TemplateError> {
    let len = match v {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::NilList => 0,
        other => {
            return err(format!(
                ":1: error calling slice: can't slice item of type {}",
                other.type_name()
            ))
        }
    };
    if idx.len() > 3 {
        return err(format!(
            ":1: error calling slice: too many slice indexes: {}",
            idx.len()
        ));
    }
    if idx.len() == 3 && matches!(v, Value::Str(_)) {
        return err(":1: error calling slice: cannot 3-index slice a string");
    }
    let mut n = Vec::new();
    for i in idx {
        match i {
            Value::Int(x) if *x >= 0 && (*x as usize) <= len => n.push(*x as usize),
            Value::Int(x) => {
                return err(format!(":1: error calling slice: index out of range: {x}"))
            }
            other => {
                return err(format!(
                    ":1: error calling slice: cannot index slice/array with type {}",
                    other.type_name()
                ))
            }
        }
    }
    let start = n.first().copied().unwrap_or(0);
    let end = n.get(1).copied().unwrap_or(len);
    if start > end || n.get(2).is_some_and(|cap| *cap < end) {
        return err(format!(
            ":1: error calling slice: invalid slice index: {start} > {end}"
        ));
    }
    Ok(match v {
        Value::Str(s) => {
            Value::Str(String::from_utf8_lossy(&s.as_bytes()[start..end]).into_owned())
        }
        Value::List(l) => Value::List(l[start..end].to_vec()),
        _ => Value::NilList,
    })
}

/// Go's `strings.Split`: an empty separator splits after each UTF-8 sequence.
fn go_split(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        return s.chars().map(String::from).collect();
    }
    s.split(sep).map(str::to_string).collect()
}

/// Go's `strings.Title`: the first letter of each word in upper case; ASCII letters, digits
/// and `_` (and every non-ASCII letter or digit) continue a word, other ASCII and spaces
/// separate words.
fn go_title(s: &str) -> String {
    let is_separator = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            !c.is_alphanumeric() && c.is_whitespace()
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = is_separator(c);
    }
    out
}

/// `s` with each character that `escape` replaces replaced.
fn escape_chars(s: &str, escape: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match escape(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> String {
    escape_chars(s, |c| {
        Some(
            match c {
                '"' => "&#34;",
                '\'' => "&#39;",
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '\0' => "\u{FFFD}",
                _ => return None,
            }
            .to_string(),
        )
    })
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    escape_chars(s, |c| match c {
        '\\' => Some("\\\\".into()),
        '\'' => Some("\\'".into()),
        '"' => Some("\\\"".into()),
        '<' => Some("\\u003C".into()),
        '>' => Some("\\u003E".into()),
        '&' => Some("\\u0026".into()),
        '=' => Some("\\u003D".into()),
        c if (c as u32) < 0x20 || ((c as u32) >= 0x80 && !is_print(c)) => {
            Some(format!("\\u{:04X}", c as u32))
        }
        _ => None,
    })
}

/// Roughly Go's `unicode.IsPrint` for non-ASCII characters: not a control or format
/// character, not a separator other than the space.
fn is_print(c: char) -> bool {
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'))
}

fn cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Nil | Value::NoValue, Value::Nil | Value::NoValue) => {
            Some(std::cmp::Ordering::Equal)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_functions() {
        assert_eq!(
            go_title("hello world-foo_bar don't"),
            "Hello World-Foo_bar Don'T"
        );
        assert_eq!(go_split("a,b,,c", ","), vec!["a", "b", "", "c"]);
        assert_eq!(go_split("ab", ""), vec!["a", "b"]);
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&#34;x&#34;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            js_escape("a'b\"c<d>&=\\\n"),
            "a\\'b\\\"c\\u003Cd\\u003E\\u0026\\u003D\\\\\\u000A"
        );
        assert_eq!(query_escape("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
