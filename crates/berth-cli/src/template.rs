//! A subset of Go's `text/template`, as Docker's `--format` uses it.
//!
//! Supported: text and actions with `{{-`/`-}}` trimming and `{{/* comments */}}`; fields
//! (`.A.B`), `.`, variables (`$`, `$x := …`, `range $i, $v := …`); pipelines with `|`;
//! parenthesised sub-pipelines; string, number, `true`/`false`/`nil` literals; `if`/`else if`/
//! `else`/`end`, `range`/`else`/`end`, `with`/`else`/`end`; functions `json`, `index`, `join`,
//! `split`, `len`, `printf`, `print`, `println`, `upper`, `lower`, `title`, `truncate`, `pad`,
//! `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`.
//!
//! Values are printed as Go's `fmt` prints them: slices `[a b]`, maps `map[k:v]` (sorted
//! keys), structs `{a b}`, nil `<nil>`, a missing map key `<no value>`; JSON objects are
//! structs unless marked as maps (Go's JSON would not tell), and nulls can be marked as nil
//! slices / maps so that `{{.Config.Cmd}}` prints `[]` as Docker's typed structs do.

use std::fmt::Write as _;

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A nil pointer or interface.
    Nil,
    /// A nil slice (`[]`, JSON `null`).
    NilList,
    /// A nil map (`map[]`, JSON `null`).
    NilMap,
    /// A missing map entry (`<no value>`).
    NoValue,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A slice.
    List(Vec<Value>),
    /// A Go map (printed with sorted keys).
    Map(Vec<(String, Value)>),
    /// A struct (fields in declaration order).
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// Converts JSON (objects become structs, keeping the order they were serialised in).
    pub fn from_json_str(s: &str) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_str(s);
        let v = <Value as serde::Deserialize>::deserialize(&mut de).map_err(|e| e.to_string())?;
        Ok(v)
    }

    /// Serialises `v` to JSON and converts it, keeping struct field order.
    pub fn from_serialize<T: serde::Serialize>(v: &T) -> Self {
        let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
        Self::from_json_str(&s).unwrap_or(Value::Nil)
    }

    /// Marks the value at a dotted path (`Config.Labels`) as a Go map: an object becomes a
    /// map, a null a nil map. Paths through lists apply to every element.
    pub fn mark_map(&mut self, path: &str) {
        self.mark(&path.split('.').collect::<Vec<_>>(), true);
    }

    /// Marks the value at a dotted path as a slice: a null becomes a nil slice.
    pub fn mark_list(&mut self, path: &str) {
        self.mark(&path.split('.').collect::<Vec<_>>(), false);
    }

    fn mark(&mut self, path: &[&str], map: bool) {
        match self {
            Value::List(items) => {
                for i in items {
                    i.mark(path, map);
                }
            }
            _ if path.is_empty() => {
                *self = match std::mem::replace(self, Value::Nil) {
                    Value::Nil if map => Value::NilMap,
                    Value::Nil => Value::NilList,
                    Value::Struct(f) if map => Value::Map(f),
                    other => other,
                }
            }
            Value::Struct(fields) | Value::Map(fields) => {
                for (k, v) in fields.iter_mut() {
                    if k == path[0] {
                        v.mark(&path[1..], map);
                    }
                }
            }
            _ => {}
        }
    }

    /// Go's truthiness for `if`, `with`, `and`, `or`, `not`.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil | Value::NilList | Value::NilMap | Value::NoValue => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// Go's `fmt` `%v`.
    pub fn to_go_string(&self) -> String {
        let mut s = String::new();
        self.write_go(&mut s, true);
        s
    }

    fn write_go(&self, out: &mut String, top: bool) {
        match self {
            Value::Nil => out.push_str("<nil>"),
            Value::NoValue => out.push_str(if top { "<no value>" } else { "<nil>" }),
            Value::NilList => out.push_str("[]"),
            Value::NilMap => out.push_str("map[]"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&go_float_v(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.write_go(out, false);
                }
                out.push(']');
            }
            Value::Map(fields) => {
                let mut sorted: Vec<&(String, Value)> = fields.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push_str("map[");
                for (i, (k, v)) in sorted.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_go(out, false);
                }
                out.push(']');
            }
            Value::Struct(fields) => {
                out.push('{');
                for (i, (_, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.write_go(out, false);
                }
                out.push('}');
            }
        }
    }

    /// Go's `json.Marshal` (without HTML escaping), as Docker's `json` function.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        self.write_json(&mut s);
        s
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Nil | Value::NilList | Value::NilMap | Value::NoValue => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&go_float_json(*f)),
            Value::Str(s) => write_json_string(out, s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Map(fields) | Value::Struct(fields) => {
                let mut refs: Vec<&(String, Value)> = fields.iter().collect();
                if matches!(self, Value::Map(_)) {
                    refs.sort_by(|a, b| a.0.cmp(&b.0));
                }
                out.push('{');
                for (i, (k, v)) in refs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, k);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil | Value::NoValue => "<nil>",
            Value::NilList | Value::List(_) => "slice",
            Value::NilMap | Value::Map(_) => "map",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Struct(_) => "struct",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v)
                    .map(Value::Int)
                    .unwrap_or(Value::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Value::List(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Value>()? {
                    v.push((k, x));
                }
                Ok(Value::Struct(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes a JSON string the way Go's encoder does with HTML escaping off.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Splits Rust's shortest `{:e}` output into (digits, exponent).
fn shortest_digits(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    (m.replace('.', ""), e.parse().unwrap_or(0))
}

fn go_exp(e: i32) -> String {
    format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exp) = shortest_digits(f);
    // strconv's shortest 'g' switches to an exponent at 6 digits.
    let eprec = 6;
    if exp < -4 || exp >= eprec {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!("{sign}{m}{}", go_exp(exp));
    }
    format!("{sign}{}", place_point(&digits, exp))
}

fn place_point(digits: &str, exp: i32) -> String {
    if exp < 0 {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    } else if (exp as usize) + 1 >= digits.len() {
        format!("{}{}", digits, "0".repeat(exp as usize + 1 - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..exp as usize + 1],
            &digits[exp as usize + 1..]
        )
    }
}

/// Go's JSON encoding of a float64.
pub fn go_float_json(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exp) = shortest_digits(f);
    let abs = f.abs();
    if !(1e-6..1e21).contains(&abs) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!("{sign}{m}{}", go_exp(exp));
    }
    format!("{sign}{}", place_point(&digits, exp))
}

/// Go's `%.<prec>g`.
pub fn go_float_g(f: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return go_float_v(f);
    }
    let s = format!("{:.*e}", prec - 1, f);
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        return format!("{m}{}", go_exp(exp));
    }
    let decimals = (prec as i32 - 1 - exp).max(0) as usize;
    let s = format!("{:.*}", decimals, f);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing and parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Dot,
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Ident(String),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

/// A template error (parse or execution), in Go's words where practical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(format!("template: {}", msg.into())))
}

enum Piece {
    Text(String),
    Action(String),
}

fn split_pieces(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next_text {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end().to_string();
        }
        pieces.push(Piece::Text(text));
        let body_start = if trim_left { 1 } else { 0 };
        let body = &after[body_start..];
        // Find the closing braces outside string literals.
        let bytes = body.as_bytes();
        let mut i = 0;
        let mut close = None;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'`' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'`' {
                        i += 1;
                    }
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(close) = close else {
            return err(":1: unclosed action");
        };
        let mut action = &body[..close];
        trim_next_text = false;
        if action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-") {
            action = &action[..action.len() - 1];
            trim_next_text = true;
        }
        let a = action.trim();
        if !(a.starts_with("/*") && a.ends_with("*/")) {
            pieces.push(Piece::Action(a.to_string()));
        }
        rest = &body[close + 2..];
    }
    let mut text = rest.to_string();
    if trim_next_text {
        text = text.trim_start().to_string();
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

fn lex(action: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut toks = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let read_fields = |i: &mut usize| -> Vec<String> {
        let mut fields = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            if j == start {
                break;
            }
            fields.push(chars[start..j].iter().collect());
            *i = j;
        }
        fields
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
                // Field access on a parenthesised value: (x).Field
                if i < chars.len() && chars[i] == '.' {
                    let f = read_fields(&mut i);
                    toks.push(Tok::Field(f));
                }
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return err(":1: unterminated quoted string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return err(":1: unterminated quoted string");
                            };
                            i += 1;
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                '\\' => s.push('\\'),
                                '"' => s.push('"'),
                                '\'' => s.push('\''),
                                '0' => s.push('\0'),
                                'x' | 'u' => {
                                    let n = if e == 'x' { 2 } else { 4 };
                                    let h: String = chars.iter().skip(i).take(n).collect();
                                    i += n;
                                    let v = u32::from_str_radix(&h, 16)
                                        .ok()
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| {
                                            TemplateError("template: :1: invalid escape".into())
                                        })?;
                                    s.push(v);
                                }
                                other => {
                                    return err(format!(":1: unknown escape sequence \\{other}"))
                                }
                            }
                        }
                        c => s.push(c),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return err(":1: unterminated raw quoted string");
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    s.push(c);
                }
                toks.push(Tok::Str(s));
            }
            '.' => {
                if chars
                    .get(i + 1)
                    .is_some_and(|c| ident_char(*c) && !c.is_ascii_digit())
                {
                    let f = read_fields(&mut i);
                    toks.push(Tok::Field(f));
                } else if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let start = i;
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    let s: String = chars[start..i].iter().collect();
                    toks.push(Tok::Float(s.parse().unwrap_or(0.0)));
                } else {
                    toks.push(Tok::Dot);
                    i += 1;
                }
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && ident_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                i = j;
                let f = read_fields(&mut i);
                toks.push(Tok::Var(format!("${name}"), f));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().filter(|c| **c != '_').collect();
                if let Ok(n) = s.parse::<i64>() {
                    toks.push(Tok::Int(n));
                } else if let Some(h) = s.strip_prefix("0x") {
                    toks.push(Tok::Int(i64::from_str_radix(h, 16).map_err(|_| {
                        TemplateError(format!("template: :1: bad number syntax: {s:?}"))
                    })?));
                } else if let Ok(f) = s.parse::<f64>() {
                    toks.push(Tok::Float(f));
                } else {
                    return err(format!(":1: bad number syntax: {s:?}"));
                }
            }
            c if ident_char(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!(":1: unexpected {other:?} in command")),
        }
    }
    Ok(toks)
}

struct TokStream {
    toks: Vec<Tok>,
    pos: usize,
}

impl TokStream {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
}

fn parse_pipeline(ts: &mut TokStream, in_paren: bool) -> Result<Pipeline, TemplateError> {
    let mut decl = Vec::new();
    // Variable declarations: $x := / $i, $v :=
    let save = ts.pos;
    let mut vars = Vec::new();
    loop {
        match ts.peek() {
            Some(Tok::Var(v, f)) if f.is_empty() => {
                vars.push(v.clone());
                ts.next();
                match ts.peek() {
                    Some(Tok::Comma) => {
                        ts.next();
                        continue;
                    }
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        ts.next();
                        decl = vars;
                        break;
                    }
                    _ => {
                        ts.pos = save;
                        break;
                    }
                }
            }
            _ => {
                ts.pos = save;
                break;
            }
        }
    }
    let mut cmds = Vec::new();
    let mut args = Vec::new();
    while let Some(t) = ts.peek().cloned() {
        match t {
            Tok::RParen if in_paren => break,
            Tok::RParen => return err(":1: unexpected right paren"),
            Tok::Pipe => {
                ts.next();
                if args.is_empty() {
                    return err(":1: missing command");
                }
                cmds.push(Command {
                    args: std::mem::take(&mut args),
                });
            }
            Tok::LParen => {
                ts.next();
                let inner = parse_pipeline(ts, true)?;
                if ts.next() != Some(Tok::RParen) {
                    return err(":1: unclosed left paren");
                }
                let fields = match ts.peek() {
                    Some(Tok::Field(f)) => {
                        let f = f.clone();
                        ts.next();
                        f
                    }
                    _ => Vec::new(),
                };
                args.push(Arg::Sub(Box::new(inner), fields));
            }
            _ => {
                ts.next();
                args.push(match t {
                    Tok::Field(f) => Arg::Field(f),
                    Tok::Dot => Arg::Field(Vec::new()),
                    Tok::Var(v, f) => Arg::Var(v, f),
                    Tok::Str(s) => Arg::Lit(Value::Str(s)),
                    Tok::Int(n) => Arg::Lit(Value::Int(n)),
                    Tok::Float(n) => Arg::Lit(Value::Float(n)),
                    Tok::Ident(id) => match id.as_str() {
                        "true" => Arg::Lit(Value::Bool(true)),
                        "false" => Arg::Lit(Value::Bool(false)),
                        "nil" => Arg::Lit(Value::Nil),
                        _ => Arg::Ident(id),
                    },
                    other => return err(format!(":1: unexpected {other:?} in operand")),
                });
            }
        }
    }
    if !args.is_empty() {
        cmds.push(Command { args });
    }
    if cmds.is_empty() {
        return err(":1: missing value for command");
    }
    Ok(Pipeline { decl, cmds })
}

fn parse_action_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let mut ts = TokStream {
        toks: lex(src)?,
        pos: 0,
    };
    let p = parse_pipeline(&mut ts, false)?;
    if ts.pos < ts.toks.len() {
        return err(":1: unexpected token in pipeline");
    }
    Ok(p)
}

enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

fn keyword(action: &str) -> (&str, &str) {
    let a = action.trim();
    let kw_end = a.find(|c: char| c.is_whitespace()).unwrap_or(a.len());
    (&a[..kw_end], a[kw_end..].trim())
}

fn parse_nodes(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(p) = pieces.next() {
        match p {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
            }
            Piece::Action(a) => {
                let (kw, rest) = keyword(&a);
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        return Ok((
                            nodes,
                            Stop::Else(if rest.is_empty() {
                                None
                            } else {
                                Some(rest.to_string())
                            }),
                        ));
                    }
                    "if" | "range" | "with" => nodes.push(parse_block(kw, rest, pieces)?),
                    "define" | "template" | "block" | "break" | "continue" => {
                        return err(format!(":1: {kw:?} is not supported"));
                    }
                    _ => nodes.push(Node::Action(parse_action_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    kw: &str,
    rest: &str,
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<Node, TemplateError> {
    if rest.is_empty() {
        return err(format!(":1: missing value for {kw}"));
    }
    let pipe = parse_action_pipeline(rest)?;
    let (body, stop) = parse_nodes(pieces)?;
    let else_body = match stop {
        Stop::End => Vec::new(),
        Stop::Eof => return err(format!(":1: unexpected EOF in {kw}")),
        Stop::Else(None) => {
            let (e, stop) = parse_nodes(pieces)?;
            if !matches!(stop, Stop::End) {
                return err(":1: expected end after else");
            }
            e
        }
        Stop::Else(Some(chain)) => {
            // {{else if …}} / {{else with …}}: a nested block sharing our {{end}}.
            let (ckw, crest) = keyword(&chain);
            if ckw != "if" && ckw != "with" {
                return err(format!(":1: unexpected {chain:?} after else"));
            }
            vec![parse_block(ckw, crest, pieces)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, else_body),
        "range" => Node::Range(pipe, body, else_body),
        _ => Node::With(pipe, body, else_body),
    })
}

impl Template {
    /// Parses a template.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let pieces = split_pieces(src)?;
        let mut it = pieces.into_iter().peekable();
        let (nodes, stop) = parse_nodes(&mut it)?;
        match stop {
            Stop::Eof => Ok(Self { nodes }),
            Stop::End => err(":1: unexpected {{end}}"),
            Stop::Else(_) => err(":1: unexpected {{else}}"),
        }
    }

    /// Executes against `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        self.run(data, false)
    }

    /// Executes with Docker's header functions (used to render table headers: `json` gives
    /// "", other functions pass their first argument through).
    pub fn execute_header(&self, data: &Value) -> Result<String, TemplateError> {
        self.run(data, true)
    }

    fn run(&self, data: &Value, header: bool) -> Result<String, TemplateError> {
        let mut st = State {
            vars: vec![("$".to_string(), data.clone())],
            header,
            out: String::new(),
        };
        st.walk(&self.nodes, data)?;
        Ok(st.out)
    }
}

struct State {
    vars: Vec<(String, Value)>,
    header: bool,
    out: String,
}

fn field_of(v: &Value, name: &str) -> Result<Value, TemplateError> {
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
        Value::NilMap | Value::NoValue => Ok(Value::NoValue),
        Value::Nil => err(format!(":1: executing \"\" at <.{name}>: nil pointer evaluating interface {{}}.{name}")),
        other => err(format!(
            ":1: executing \"\" at <.{name}>: can't evaluate field {name} in type {}",
            other.type_name()
        )),
    }
}

fn fields_of(mut v: Value, path: &[String]) -> Result<Value, TemplateError> {
    for f in path {
        v = field_of(&v, f)?;
    }
    Ok(v)
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
            Arg::Field(path) => fields_of(dot.clone(), path),
            Arg::Var(name, path) => fields_of(self.var(name)?, path),
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Sub(p, path) => {
                let v = self.pipeline(p, dot)?;
                fields_of(v, path)
            }
            Arg::Ident(name) => self.call(name, Vec::new()),
        }
    }

    fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        if let Some(Arg::Ident(name)) = c.args.first() {
            let mut args = Vec::new();
            for a in &c.args[1..] {
                args.push(self.arg(a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(name, args);
        }
        if c.args.len() > 1 {
            return err(":1: can't give argument to non-function");
        }
        if piped.is_some() {
            return err(":1: can't give argument to non-function");
        }
        self.arg(&c.args[0], dot)
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
            match name {
                "json" => return Ok(Value::Str(String::new())),
                "split" | "join" | "title" | "lower" | "upper" | "pad" | "truncate" => {
                    return Ok(args.into_iter().next().unwrap_or(Value::Str(String::new())));
                }
                _ => {}
            }
        }
        let s = |v: &Value| v.to_go_string();
        match name {
            "json" => {
                want(1)?;
                Ok(Value::Str(args[0].to_json()))
            }
            "upper" => {
                want(1)?;
                Ok(Value::Str(s(&args[0]).to_uppercase()))
            }
            "lower" => {
                want(1)?;
                Ok(Value::Str(s(&args[0]).to_lowercase()))
            }
            "title" => {
                want(1)?;
                let mut out = String::new();
                let mut prev_letter = false;
                for c in s(&args[0]).chars() {
                    if !prev_letter && c.is_alphabetic() {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
                }
                Ok(Value::Str(out))
            }
            "split" => {
                want(2)?;
                Ok(Value::List(
                    s(&args[0])
                        .split(&s(&args[1]))
                        .map(|x| Value::Str(x.to_string()))
                        .collect(),
                ))
            }
            "join" => {
                want(2)?;
                let items: Vec<String> = match &args[0] {
                    Value::List(l) => l.iter().map(s).collect(),
                    Value::NilList | Value::Nil => Vec::new(),
                    other => {
                        return err(format!(
                            ":1: error calling join: wrong type {}",
                            other.type_name()
                        ))
                    }
                };
                Ok(Value::Str(items.join(&s(&args[1]))))
            }
            "truncate" => {
                want(2)?;
                let n = match args[1] {
                    Value::Int(n) if n >= 0 => n as usize,
                    _ => return err(":1: error calling truncate: invalid length"),
                };
                Ok(Value::Str(s(&args[0]).chars().take(n).collect()))
            }
            "pad" => {
                want(3)?;
                let (Value::Int(l), Value::Int(r)) = (&args[1], &args[2]) else {
                    return err(":1: error calling pad: invalid padding");
                };
                Ok(Value::Str(format!(
                    "{}{}{}",
                    " ".repeat((*l).max(0) as usize),
                    s(&args[0]),
                    " ".repeat((*r).max(0) as usize)
                )))
            }
            "len" => {
                want(1)?;
                Ok(Value::Int(match &args[0] {
                    Value::Str(x) => x.len() as i64,
                    Value::List(l) => l.len() as i64,
                    Value::Map(m) | Value::Struct(m) => m.len() as i64,
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
                    v = match (&v, k) {
                        (Value::List(l), Value::Int(i)) => {
                            if *i < 0 || *i as usize >= l.len() {
                                return err(format!(
                                    ":1: error calling index: index out of range: {i}"
                                ));
                            }
                            l[*i as usize].clone()
                        }
                        (Value::NilList, Value::Int(i)) => {
                            return err(format!(
                                ":1: error calling index: index out of range: {i}"
                            ));
                        }
                        (Value::Map(m), Value::Str(key)) | (Value::Struct(m), Value::Str(key)) => m
                            .iter()
                            .find(|(k2, _)| k2 == key)
                            .map(|(_, x)| x.clone())
                            .unwrap_or(Value::NoValue),
                        (Value::NilMap, _) | (Value::NoValue, _) => Value::NoValue,
                        (Value::Str(st), Value::Int(i)) => {
                            let b = st.as_bytes();
                            if *i < 0 || *i as usize >= b.len() {
                                return err(format!(
                                    ":1: error calling index: index out of range: {i}"
                                ));
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
                    };
                }
                Ok(v)
            }
            "print" => {
                let mut out = String::new();
                for (i, a) in args.iter().enumerate() {
                    // Go adds spaces between operands when neither is a string.
                    if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_))
                    {
                        out.push(' ');
                    }
                    out.push_str(&s(a));
                }
                Ok(Value::Str(out))
            }
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

/// A subset of Go's `fmt.Sprintf`: verbs `v s d q t x X f g e %` with flags `-+ 0#`, width
/// and precision.
pub fn sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut argi = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let mut minus = false;
        let mut zero = false;
        let mut plus = false;
        while i < chars.len() && matches!(chars[i], '-' | '+' | ' ' | '0' | '#') {
            match chars[i] {
                '-' => minus = true,
                '0' => zero = true,
                '+' => plus = true,
                _ => {}
            }
            i += 1;
        }
        let mut width = None;
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i > start {
            width = chars[start..i]
                .iter()
                .collect::<String>()
                .parse::<usize>()
                .ok();
        }
        let mut prec = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            prec = Some(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .parse::<usize>()
                    .unwrap_or(0),
            );
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        argi += 1;
        let mut s = match (verb, arg) {
            ('d', Value::Int(n)) => {
                if plus && *n >= 0 {
                    format!("+{n}")
                } else {
                    n.to_string()
                }
            }
            ('x', Value::Int(n)) => format!("{n:x}"),
            ('X', Value::Int(n)) => format!("{n:X}"),
            ('x', Value::Str(st)) => st.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f', Value::Float(f)) => format!("{:.*}", prec.unwrap_or(6), f),
            ('f', Value::Int(n)) => format!("%!f(int={n})"),
            ('e', Value::Float(f)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                format!("{m}{}", go_exp(e.parse().unwrap_or(0)))
            }
            ('g', Value::Float(f)) => match prec {
                Some(p) => go_float_g(*f, p),
                None => go_float_v(*f),
            },
            ('q', v) => {
                let mut q = String::new();
                write_json_string(&mut q, &v.to_go_string());
                q
            }
            ('t', Value::Bool(b)) => b.to_string(),
            ('s' | 'v', v) => {
                let st = v.to_go_string();
                match prec {
                    Some(p) if verb == 's' => st.chars().take(p).collect(),
                    _ => st,
                }
            }
            (verb, v) => format!("%!{verb}({}={})", v.type_name(), v.to_go_string()),
        };
        if let Some(w) = width {
            let len = s.chars().count();
            if len < w {
                let pad = w - len;
                if minus {
                    s.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'x' | 'X') {
                    let (sign, digits) = if s.starts_with('-') || s.starts_with('+') {
                        s.split_at(1)
                    } else {
                        ("", s.as_str())
                    };
                    s = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    s = format!("{}{s}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&s);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_go_string()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        let mut v = Value::from_json_str(
            r#"{"Id":"sha256:abc","RepoTags":["busybox:latest","busybox:1"],"Size":4261550,
                "Config":{"Cmd":["sh"],"Entrypoint":null,"Env":["PATH=/bin","A=b"],"Labels":{"z":"1","a":"2"},"Volumes":null,"OnBuild":null},
                "Os":"linux","Empty":"","Ratio":0.5,"Parent":""}"#,
        )
        .unwrap();
        v.mark_map("Config.Labels");
        v.mark_map("Config.Volumes");
        v.mark_list("Config.Entrypoint");
        v.mark_list("Config.OnBuild");
        v
    }

    fn run(t: &str) -> String {
        Template::parse(t).unwrap().execute(&data()).unwrap()
    }

    fn run_err(t: &str) -> String {
        match Template::parse(t) {
            Err(e) => e.0,
            Ok(tp) => tp.execute(&data()).unwrap_err().0,
        }
    }

    #[test]
    fn fields_and_printing() {
        assert_eq!(run("{{.Id}}"), "sha256:abc");
        assert_eq!(run("{{.Config.Cmd}}"), "[sh]");
        assert_eq!(run("{{.Config.Entrypoint}}"), "[]");
        assert_eq!(run("{{.Config.Volumes}}"), "map[]");
        assert_eq!(run("{{.Config.Labels}}"), "map[a:2 z:1]");
        assert_eq!(run("{{.Size}}"), "4261550");
        assert_eq!(run("{{.Ratio}}"), "0.5");
        assert_eq!(run("id={{ .Id }}!"), "id=sha256:abc!");
        assert_eq!(run("{{.Config.Labels.a}}"), "2");
        assert_eq!(run("{{.Config.Labels.nope}}"), "<no value>");
        assert!(
            run("{{.}}").starts_with("{sha256:abc [busybox:latest busybox:1] 4261550 {[sh] [] ")
        );
        assert!(run_err("{{.Nope}}").contains("can't evaluate field Nope"));
    }

    #[test]
    fn functions() {
        assert_eq!(run("{{json .Config.Cmd}}"), r#"["sh"]"#);
        assert_eq!(run("{{json .Config.Entrypoint}}"), "null");
        assert_eq!(run("{{json .Config.Labels}}"), r#"{"a":"2","z":"1"}"#);
        assert_eq!(
            run("{{json .Config}}"),
            r#"{"Cmd":["sh"],"Entrypoint":null,"Env":["PATH=/bin","A=b"],"Labels":{"a":"2","z":"1"},"Volumes":null,"OnBuild":null}"#
        );
        assert_eq!(run("{{index .RepoTags 0}}"), "busybox:latest");
        assert_eq!(run("{{index .Config.Labels \"z\"}}"), "1");
        assert_eq!(
            run("{{join .RepoTags \", \"}}"),
            "busybox:latest, busybox:1"
        );
        assert_eq!(run("{{len .RepoTags}}"), "2");
        assert_eq!(run("{{len .Config.Entrypoint}}"), "0");
        assert_eq!(run("{{upper .Os}} {{lower \"ABC\"}}"), "LINUX abc");
        assert_eq!(run("{{.Os | upper}}"), "LINUX");
        assert_eq!(run(r#"{{printf "%s-%d" .Os .Size}}"#), "linux-4261550");
        assert_eq!(
            run(r#"{{printf "%-8s|%5d|%05d|%q" .Os 42 42 .Os}}"#),
            "linux   |   42|00042|\"linux\""
        );
        assert_eq!(run(r#"{{printf "%.3s" .Id}}"#), "sha");
        assert_eq!(run(r#"{{.Id | printf "%.9s"}}"#), "sha256:ab");
        assert_eq!(run("{{title \"hello world\"}}"), "Hello World");
        assert_eq!(run("{{truncate .Id 6}}"), "sha256");
        assert_eq!(run("{{split \"a:b\" \":\"}}"), "[a b]");
        assert_eq!(run("{{(index .RepoTags 1)}}"), "busybox:1");
        assert_eq!(
            run("{{eq .Os \"linux\"}} {{ne .Os \"linux\"}} {{lt 1 2}}"),
            "true false true"
        );
        assert_eq!(
            run("{{and .Os .Empty}}|{{or .Empty .Os}}|{{not .Empty}}"),
            "|linux|true"
        );
        assert!(run_err("{{index .RepoTags 5}}").contains("index out of range: 5"));
        assert!(run_err("{{nosuch .Id}}").contains("function \"nosuch\" not defined"));
    }

    #[test]
    fn control_flow() {
        assert_eq!(
            run("{{range .RepoTags}}[{{.}}]{{end}}"),
            "[busybox:latest][busybox:1]"
        );
        assert_eq!(
            run("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}"),
            "0=busybox:latest 1=busybox:1 "
        );
        assert_eq!(
            run("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"),
            "a=2;z=1;"
        );
        assert_eq!(
            run("{{range .Config.Entrypoint}}x{{else}}none{{end}}"),
            "none"
        );
        assert_eq!(run("{{if .Parent}}p{{else}}no parent{{end}}"), "no parent");
        assert_eq!(run("{{if .Empty}}a{{else if .Os}}b{{else}}c{{end}}"), "b");
        assert_eq!(run("{{with .Config}}{{.Cmd}}{{end}}"), "[sh]");
        assert_eq!(run("{{$x := .Os}}{{$x}}-{{$.Id}}"), "linux-sha256:abc");
        assert_eq!(run("{{range .RepoTags}}{{$.Os}} {{end}}"), "linux linux ");
        assert_eq!(run("a {{- \"b\" -}} c"), "abc");
        assert_eq!(run("a{{/* comment */}}b"), "ab");
        assert_eq!(
            run("{{if and .Os (eq (len .RepoTags) 2)}}yes{{end}}"),
            "yes"
        );
        assert!(run_err("{{if .Os}}").contains("unexpected EOF"));
        assert!(run_err("{{end}}").contains("unexpected {{end}}"));
        assert!(run_err("{{.Os").contains("unclosed action"));
    }

    #[test]
    fn header_mode() {
        let h = Value::from_json_str(r#"{"ID":"IMAGE ID","Repository":"REPOSITORY"}"#).unwrap();
        let t = Template::parse("{{.Repository}}\t{{.ID | lower}}\t{{json .}}").unwrap();
        assert_eq!(t.execute_header(&h).unwrap(), "REPOSITORY\tIMAGE ID\t");
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float_v(1e6), "1e+06");
        assert_eq!(go_float_v(123456.0), "123456");
        assert_eq!(go_float_v(0.5), "0.5");
        assert_eq!(go_float_v(1e21), "1e+21");
        assert_eq!(go_float_v(1e20), "1e+20");
        assert_eq!(go_float_v(1234567.0), "1.234567e+06");
        assert_eq!(go_float_g(4.26155, 3), "4.26");
        assert_eq!(go_float_g(999.9, 3), "1e+03");
        assert_eq!(go_float_g(100.0, 3), "100");
        assert_eq!(go_float_g(1.0, 4), "1");
        assert_eq!(go_float_g(12.5, 3), "12.5");
        assert_eq!(go_float_json(1e21), "1e+21");
        assert_eq!(go_float_json(0.000001), "0.000001");
    }
}
