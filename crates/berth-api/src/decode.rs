//! JSON decoding as dockerd's Go `encoding/json` does it.
//!
//! - A struct's field names are matched **case-insensitively** when no key matches exactly
//!   (`CPURealtimeRuntime` fills `CpuRealtimeRuntime`, `memory` fills `Memory`).
//! - Unknown fields are ignored.
//! - `null` leaves a field at its default (Go leaves the zero value), for every field type.
//! - A value of the wrong JSON type is an error that names the field path
//!   (`HostConfig.Memory: expected i64, got string "512m"`); so is a number that does not fit
//!   the field (`1e9` or `1.5` into an integer, `-1` into an unsigned one), as in Go.
//!
//! The models in this crate derive `Deserialize` with `#[serde(default)]` and PascalCase names;
//! [`from_slice`] and [`from_value`] wrap serde_json's parse in a deserializer that renames keys
//! to the field names serde asks for (serde hands them to `deserialize_struct`). Do not use
//! `#[serde(flatten)]` in request models: flattened fields are not announced that way and would
//! only match exactly.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::{Map, Number, Value};

/// A decoding error: the field path (`HostConfig.Memory`, `Env[2]`) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Path components from the outermost field inwards; empty for the document itself.
    pub path: Vec<String>,
    pub message: String,
}

impl DecodeError {
    /// An error of the document as a whole (no field path).
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// The path as dockerd's messages spell it: `HostConfig.Memory`, `Env[2]`.
    pub fn path_string(&self) -> String {
        let mut s = String::new();
        for p in &self.path {
            if p.starts_with('[') {
                s.push_str(p);
            } else {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(p);
            }
        }
        s
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid JSON: {}", self.message)
        } else {
            write!(
                f,
                "invalid JSON: field {}: {}",
                self.path_string(),
                self.message
            )
        }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DecodeError::new(format!("expected {exp}, got {}", unexpected(unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DecodeError::new(format!(
            "invalid value {}, expected {exp}",
            unexpected(unexp)
        ))
    }
}

fn unexpected(u: de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Str(s) => format!("string {s:?}"),
        de::Unexpected::Float(f) => format!("number {f}"),
        de::Unexpected::Signed(i) => format!("number {i}"),
        de::Unexpected::Unsigned(i) => format!("number {i}"),
        de::Unexpected::Bool(b) => format!("boolean {b}"),
        de::Unexpected::Unit => "null".to_string(),
        de::Unexpected::Map => "object".to_string(),
        de::Unexpected::Seq => "array".to_string(),
        other => other.to_string(),
    }
}

impl DecodeError {
    fn within(mut self, component: String) -> Self {
        self.path.insert(0, component);
        self
    }
}

/// Decodes a request body. An empty body decodes as `{}` (dockerd accepts an empty body where
/// the whole document is optional); invalid JSON is an error without a path.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return from_value(Value::Object(Map::new()));
    }
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let v = match values.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(DecodeError::new(go_syntax_error(bytes, &e))),
        None => return from_value(Value::Object(Map::new())),
    };
    // Go's `Decoder.More` after the document: anything but white space is refused.
    if bytes[values.byte_offset()..]
        .iter()
        .any(|b| !b.is_ascii_whitespace())
    {
        return Err(DecodeError::new("unexpected content after JSON"));
    }
    from_value(v)
}

/// Go's `encoding/json` wording of a syntax error where it has one (`invalid character 'i'
/// looking for beginning of object key string`), serde_json's otherwise.
fn go_syntax_error(bytes: &[u8], e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected EOF".into();
    }
    // The offending byte: serde_json's line and (1-based) column point at it.
    let at = bytes
        .split(|b| *b == b'\n')
        .nth(e.line().saturating_sub(1))
        .and_then(|l| l.get(e.column().saturating_sub(1)))
        .map(|b| *b as char);
    let text = e.to_string();
    let looking = if text.starts_with("key must be a string") {
        "looking for beginning of object key string"
    } else if text.starts_with("expected value") {
        "looking for beginning of value"
    } else {
        return text;
    };
    match at {
        Some(c) if !c.is_control() => format!("invalid character {c:?} {looking}"),
        _ => text,
    }
}

/// Decodes a string (a query parameter holding JSON, such as `filters` or `buildargs`).
pub fn from_str<T: DeserializeOwned>(s: &str) -> Result<T, DecodeError> {
    from_slice(s.as_bytes())
}

/// Decodes an already parsed value with Go's rules (see the module documentation).
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, DecodeError> {
    T::deserialize(GoValue(v))
}

/// A `serde_json::Value` seen through Go's decoding rules.
struct GoValue(Value);

fn visit_number<'de, V: Visitor<'de>>(n: Number, visitor: V) -> Result<V::Value, DecodeError> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

impl<'de> de::Deserializer<'de> for GoValue {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => visit_number(n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(GoEntries::array(a)),
            Value::Object(m) => visitor.visit_map(GoEntries::new(m.into_iter().collect())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(GoValue(v)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let m = match self.0 {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(de::Error::invalid_type(unexpected_of(&other), &"an object")),
        };
        // Go: an exact match wins; otherwise the first field equal under case folding.
        // `null` is the same as an absent key (Go leaves the field as it is).
        let mut entries: Vec<(String, Value)> = Vec::with_capacity(m.len());
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            let key = if fields.contains(&k.as_str()) {
                k
            } else if let Some(f) = fields.iter().find(|f| f.eq_ignore_ascii_case(&k)) {
                (*f).to_string()
            } else {
                continue; // unknown: ignored, as dockerd does
            };
            // A later key for the same field replaces an earlier one (Go decodes in order).
            if let Some(pos) = entries.iter().position(|(e, _)| *e == key) {
                entries.remove(pos);
            }
            entries.push((key, v));
        }
        visitor.visit_map(GoEntries::new(entries))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Object(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().expect("one entry");
                visitor.visit_enum(GoEnum(k, v))
            }
            other => Err(de::Error::invalid_type(
                unexpected_of(&other),
                &"a string or an object with one key",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map identifier
    }
}

fn unexpected_of(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => de::Unexpected::Unsigned(u),
            (_, Some(i)) => de::Unexpected::Signed(i),
            _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// The elements of an array or the entries of an object, each with its path component
/// (`[2]`, the key): visited as a sequence or as a map.
struct GoEntries {
    iter: std::vec::IntoIter<(String, Value)>,
    /// The entry whose key a map visitor just read.
    value: Option<(String, Value)>,
}

impl GoEntries {
    fn new(entries: Vec<(String, Value)>) -> Self {
        GoEntries {
            iter: entries.into_iter(),
            value: None,
        }
    }

    fn array(a: Vec<Value>) -> Self {
        Self::new(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v))
                .collect(),
        )
    }
}

/// Decodes `v`; an error gets `path` as its outermost path component.
fn decode_at<'de, T: DeserializeSeed<'de>>(
    seed: T,
    path: String,
    v: Value,
) -> Result<T::Value, DecodeError> {
    seed.deserialize(GoValue(v)).map_err(|e| e.within(path))
}

impl<'de> de::SeqAccess<'de> for GoEntries {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        self.iter
            .next()
            .map(|(path, v)| decode_at(seed, path, v))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

impl<'de> de::MapAccess<'de> for GoEntries {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        let key = seed.deserialize(MapKey(k.clone()))?;
        self.value = Some((k, v));
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (k, v) = self
            .value
            .take()
            .ok_or_else(|| <DecodeError as de::Error>::custom("value without a key"))?;
        decode_at(seed, k, v)
    }

    fn size_hint(&self) -> Option<usize> {
        de::SeqAccess::size_hint(self)
    }
}

/// Map keys that hold integers (`HashMap<u16, _>`): parsed, so the visitor range-checks them.
macro_rules! int_keys {
    ($($m:ident $t:ident $visit:ident $wide:ident),* $(,)?) => {$(
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            match self.0.parse::<$wide>() {
                Ok(i) => visitor.$visit(i),
                Err(_) => visitor.visit_string(self.0),
            }
        }
    )*};
}

/// A map key: a string, also read as a number for maps keyed by integers (Go allows that).
struct MapKey(String);

impl<'de> de::Deserializer<'de> for MapKey {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_string(self.0)
    }

    int_keys! {
        deserialize_i8 i8 visit_i64 i64, deserialize_i16 i16 visit_i64 i64,
        deserialize_i32 i32 visit_i64 i64, deserialize_i64 i64 visit_i64 i64,
        deserialize_u8 u8 visit_u64 u64, deserialize_u16 u16 visit_u64 u64,
        deserialize_u32 u32 visit_u64 u64, deserialize_u64 u64 visit_u64 u64
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string option
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

struct GoEnum(String, Value);

impl<'de> de::EnumAccess<'de> for GoEnum {
    type Error = DecodeError;
    type Variant = GoVariant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, GoVariant), DecodeError> {
        let tag = seed.deserialize(MapKey(self.0.clone()))?;
        Ok((tag, GoVariant(self.0, self.1)))
    }
}

struct GoVariant(String, Value);

impl<'de> de::VariantAccess<'de> for GoVariant {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        decode_at(seed, self.0, self.1)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_any(GoValue(self.1), visitor).map_err(|e| e.within(self.0))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_struct(GoValue(self.1), "", fields, visitor)
            .map_err(|e| e.within(self.0))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[test]
    fn syntax_errors_and_trailing_content_read_as_gos() {
        let msg = |b: &str| {
            from_slice::<Resources>(b.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg("{invalid json"),
            "invalid JSON: invalid character 'i' looking for beginning of object key string"
        );
        assert_eq!(
            msg("{\"Memory\": x}"),
            "invalid JSON: invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            msg("{} trailing content"),
            "invalid JSON: unexpected content after JSON"
        );
        assert_eq!(msg("{\"Memory\": 1"), "invalid JSON: unexpected EOF");
        // White space after the document is fine.
        assert_eq!(
            from_slice::<Resources>(b"{\"Memory\": 1}\n ")
                .unwrap()
                .memory,
            1
        );
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Resources {
        memory: i64,
        cpu_realtime_runtime: i64,
        #[serde(rename = "CpusetCpus")]
        cpuset_cpus: String,
        ulimits: Vec<Ulimit>,
        blkio_weight: u16,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Ulimit {
        name: String,
        soft: i64,
        hard: i64,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Create {
        user: Option<String>,
        cmd: Option<Vec<String>>,
        labels: HashMap<String, String>,
        host_config: Option<Resources>,
        tty: bool,
    }

    #[test]
    fn names_match_case_insensitively_and_exact_wins() {
        let c: Create = from_str(
            r#"{"user":"u","CMD":["a"],"hostconfig":{"CPURealtimeRuntime":5,"memory":7,
               "cpusetcpus":"0-1"},"Labels":{"Mixed.Case":"v"},"TTY":true}"#,
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(c.cmd, Some(vec!["a".to_string()]));
        let hc = c.host_config.unwrap();
        assert_eq!(hc.cpu_realtime_runtime, 5);
        assert_eq!(hc.memory, 7);
        assert_eq!(hc.cpuset_cpus, "0-1");
        // Map keys are data, never folded.
        assert_eq!(c.labels.get("Mixed.Case").map(String::as_str), Some("v"));
        assert!(c.tty);
        // Keys are decoded in order: a later key for the same field replaces an earlier one.
        let r: Resources = from_str(r#"{"Memory":1,"memory":2}"#).unwrap();
        assert_eq!(r.memory, 2, "Go decodes in order: the later key replaces");
    }

    #[test]
    fn null_and_absent_leave_defaults_and_unknown_fields_are_ignored() {
        let c: Create =
            from_str(r#"{"User":null,"Cmd":null,"HostConfig":{"Memory":null},"Nope":{"x":[1]}}"#)
                .unwrap();
        assert_eq!(c.user, None);
        assert_eq!(c.cmd, None);
        assert_eq!(c.host_config, Some(Resources::default()));
        let e: Create = from_slice(b"").unwrap();
        assert_eq!(e, Create::default());
        // An empty string is a value, not an absence: the model decides what it means.
        let c: Create = from_str(r#"{"User":""}"#).unwrap();
        assert_eq!(c.user.as_deref(), Some(""));
    }

    #[test]
    fn wrong_types_name_the_field_path() {
        for (body, path, msg) in [
            (
                r#"{"HostConfig":{"Memory":1e9}}"#,
                "HostConfig.Memory",
                "number 1000000000",
            ),
            (
                r#"{"HostConfig":{"Memory":"512m"}}"#,
                "HostConfig.Memory",
                "string \"512m\"",
            ),
            (
                r#"{"HostConfig":{"Memory":1.5}}"#,
                "HostConfig.Memory",
                "number 1.5",
            ),
            (
                r#"{"HostConfig":{"BlkioWeight":-1}}"#,
                "HostConfig.BlkioWeight",
                "number -1",
            ),
            (
                r#"{"HostConfig":{"BlkioWeight":70000}}"#,
                "HostConfig.BlkioWeight",
                "70000",
            ),
            (
                r#"{"HostConfig":{"Ulimits":[{"Name":"nofile"},{"Soft":"x"}]}}"#,
                "HostConfig.Ulimits[1].Soft",
                "string \"x\"",
            ),
            (r#"{"Cmd":"true"}"#, "Cmd", "string \"true\""),
            (r#"{"Tty":"yes"}"#, "Tty", "string \"yes\""),
            (r#"{"Labels":{"a":1}}"#, "Labels.a", "number 1"),
        ] {
            let e = from_str::<Create>(body).unwrap_err();
            assert_eq!(e.path_string(), path, "{body}: {e}");
            assert!(e.message.contains(msg), "{body}: {e}");
            assert!(e.to_string().contains(path), "{e}");
        }
        let e = from_str::<Create>("{").unwrap_err();
        assert!(e.path.is_empty());
        let e = from_str::<Create>("[1]").unwrap_err();
        assert!(e.to_string().contains("array"), "{e}");
    }

    #[test]
    fn enums_from_strings_and_single_key_objects() {
        #[derive(Debug, Deserialize, PartialEq)]
        enum Mode {
            #[serde(rename = "json-file")]
            JsonFile,
            Other(i64),
        }
        let m: Vec<Mode> = from_str(r#"["json-file",{"Other":3}]"#).unwrap();
        assert_eq!(m, vec![Mode::JsonFile, Mode::Other(3)]);
        let e = from_str::<Vec<Mode>>(r#"[{"Other":"x"}]"#).unwrap_err();
        assert_eq!(e.path_string(), "[0].Other");
        assert!(from_str::<Mode>(r#""syslog""#).is_err());
    }

    #[test]
    fn integer_map_keys() {
        let m: HashMap<u16, String> = from_str(r#"{"80":"a"}"#).unwrap();
        assert_eq!(m.get(&80).map(String::as_str), Some("a"));
    }
}
