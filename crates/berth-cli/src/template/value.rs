//! Template values and how Go prints them (`fmt`'s `%v`, `encoding/json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::number::{go_float_json, go_float_v};

/// A method of a formatter row that takes arguments, as Docker's row contexts have them
/// (`{{.Label "com.example.k"}}`). Printing and `json` leave methods out, as Go's do.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Docker's `Label(name)`: the label's value, "" when it is not set.
    Label(BTreeMap<String, String>),
    /// The `Label(name)` of a table's header: the last dot-separated part of the name, with
    /// `-` and `_` as spaces.
    HeaderLabel,
}

impl Method {
    /// The Go name of the method.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Label(_) | Method::HeaderLabel => "Label",
        }
    }

    /// Calls the method (both take one string: a label's name).
    pub fn call(&self, args: &[Value]) -> Result<Value, super::TemplateError> {
        let name = match args {
            [Value::Str(k)] => k,
            [other] => {
                return super::err(format!(
                    ":1: wrong type for value; expected string; got {}",
                    other.type_name()
                ))
            }
            _ => {
                return super::err(format!(
                    ":1: wrong number of args for {}: want 1 got {}",
                    self.name(),
                    args.len()
                ))
            }
        };
        Ok(Value::Str(match self {
            Method::HeaderLabel => name
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .replace(['-', '_'], " "),
            Method::Label(labels) => labels.get(name).cloned().unwrap_or_default(),
        }))
    }
}

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
    /// A method taking arguments (a field of a row).
    Method(Method),
    /// A row of a list command (Docker's formatter contexts): fields like a map's, and JSON
    /// as their `MarshalJSON` gives it (sorted keys, `<`, `>`, `&` escaped).
    Context(Vec<(String, Value)>),
}

impl Value {
    /// Converts JSON (objects become structs, keeping the order they were serialised in).
    pub fn from_json_str(s: &str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(s);
        <Value as serde::Deserialize>::deserialize(&mut de)
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
            Value::Struct(_) | Value::Method(_) | Value::Context(_) => true,
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
                write_seq(out, "[", ' ', ']', items, |out, v| v.write_go(out, false))
            }
            Value::Map(fields) | Value::Context(fields) => write_seq(
                out,
                "map[",
                ' ',
                ']',
                data_fields(fields, true),
                |out, (k, v)| {
                    out.push_str(k);
                    out.push(':');
                    v.write_go(out, false);
                },
            ),
            Value::Struct(fields) => write_seq(
                out,
                "{",
                ' ',
                '}',
                data_fields(fields, false),
                |out, (_, v)| v.write_go(out, false),
            ),
            Value::Method(m) => {
                let _ = write!(out, "<method {}>", m.name());
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
            Value::List(items) => write_seq(out, "[", ',', ']', items, |out, v| v.write_json(out)),
            Value::Map(fields) | Value::Struct(fields) => {
                let sorted = matches!(self, Value::Map(_));
                write_seq(
                    out,
                    "{",
                    ',',
                    '}',
                    data_fields(fields, sorted),
                    |out, (k, v)| {
                        write_json_string(out, k);
                        out.push(':');
                        v.write_json(out);
                    },
                )
            }
            Value::Method(_) => out.push_str("null"),
            Value::Context(fields) => {
                let mut inner = String::new();
                Value::Map(fields.clone()).write_json(&mut inner);
                out.push_str(&html_escape_json(&inner));
            }
        }
    }

    /// The Go kind named in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil | Value::NoValue => "<nil>",
            Value::NilList | Value::List(_) => "slice",
            Value::NilMap | Value::Map(_) => "map",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Struct(_) => "struct",
            Value::Method(_) => "func",
            Value::Context(_) => "struct",
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

/// Go's `strconv.Quote`: a double-quoted string with Go's escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `items` between `open` and `close`, separated by `sep`, each by `item`.
fn write_seq<T>(
    out: &mut String,
    open: &str,
    sep: char,
    close: char,
    items: impl IntoIterator<Item = T>,
    mut item: impl FnMut(&mut String, T),
) {
    out.push_str(open);
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        item(out, v);
    }
    out.push(close);
}

/// The fields of a map or struct that hold data (not methods), by name when `sorted`.
fn data_fields(fields: &[(String, Value)], sorted: bool) -> Vec<&(String, Value)> {
    let mut v: Vec<&(String, Value)> = fields
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Method(_)))
        .collect();
    if sorted {
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    v
}

/// Go's `json.Marshal` escaping of HTML characters in encoded JSON.
pub fn html_escape_json(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
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
