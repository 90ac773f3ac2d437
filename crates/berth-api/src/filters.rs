//! The `filters` query parameter: `{"key":["v",…]}` or `{"key":{"v":true}}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Filters as (key, value) pairs, keys in order, values in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub Vec<(String, String)>);

struct Values(Vec<String>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings or an object of booleans")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Values, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Values(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Values, A::Error> {
                let mut v = Vec::new();
                while let Some((k, _)) = a.next_entry::<String, bool>()? {
                    v.push(k);
                }
                Ok(Values(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Filters {
    /// Parses the query parameter (`""` is no filter).
    pub fn parse(s: &str) -> Result<Filters, crate::DecodeError> {
        if s.trim().is_empty() {
            return Ok(Filters::default());
        }
        let m: BTreeMap<String, Values> = crate::from_str(s)?;
        Ok(Filters(
            m.into_iter()
                .flat_map(|(k, vs)| vs.0.into_iter().map(move |v| (k.clone(), v)))
                .collect(),
        ))
    }

    /// The values given for `key`.
    pub fn get<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value is given for `key`.
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// dockerd's `GetBoolOrDefault`: `default` when `key` is not given, else whether its
    /// values say true (`1`, `true`) rather than false (`0`, `false`); neither or both is
    /// dockerd's "invalid filter 'key=[values]'".
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        if !self.has(key) {
            return Ok(default);
        }
        let is_false = self.get(key).any(|v| v == "0" || v == "false");
        let is_true = self.get(key).any(|v| v == "1" || v == "true");
        if is_false == is_true {
            let values: Vec<&str> = self.get(key).collect();
            return Err(format!("invalid filter '{key}=[{}]'", values.join(" ")));
        }
        Ok(is_true)
    }

    /// dockerd's prune label matching (`matchLabels`), `has` telling whether the object has a
    /// label spec (`key` or `key=value`): every `label` filter holds, and the `label!` filters
    /// (when given) do not all hold.
    pub fn prune_labels_match(&self, has: impl Fn(&str) -> bool) -> bool {
        self.get("label").all(&has) && !(self.has("label!") && self.get("label!").all(&has))
    }
}

/// Filters from (key, value) pairs, in their order.
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Filters {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Filters(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Serialize for Filters {
    /// As `{"key": ["v", …]}` (what clients send).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &self.0 {
            m.entry(k).or_default().push(v);
        }
        m.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes() {
        let f = Filters::parse(r#"{"label":["a=1","b"],"dangling":{"true":true}}"#).unwrap();
        let want = [("dangling", "true"), ("label", "a=1"), ("label", "b")];
        assert_eq!(f, want.into_iter().collect());
        assert_eq!(f.get("label").collect::<Vec<_>>(), vec!["a=1", "b"]);
        assert!(Filters::parse("").unwrap().is_empty());
        assert!(Filters::parse("[1]").is_err());
        assert!(Filters::parse(r#"{"a":"b"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"dangling":["true"],"label":["a=1","b"]}"#
        );
    }

    #[test]
    fn bool_values_as_dockerd_reads_them() {
        let f = |s: &str| Filters::parse(s).unwrap();
        assert_eq!(f("").bool_or("dangling", true), Ok(true));
        assert_eq!(
            f(r#"{"dangling":["0"]}"#).bool_or("dangling", true),
            Ok(false)
        );
        assert_eq!(
            f(r#"{"dangling":["true","x"]}"#).bool_or("dangling", false),
            Ok(true)
        );
        assert_eq!(
            f(r#"{"dangling":["invalid"]}"#).bool_or("dangling", false),
            Err("invalid filter 'dangling=[invalid]'".to_string())
        );
        assert_eq!(
            f(r#"{"dangling":["1","false"]}"#).bool_or("dangling", false),
            Err("invalid filter 'dangling=[1 false]'".to_string())
        );
    }
}
