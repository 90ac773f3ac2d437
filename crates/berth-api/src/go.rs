//! Go's JSON conventions as serde helpers: `omitempty` tests, `strslice.StrSlice` (a string or
//! a list of strings), and `struct{}` values (`{"80/tcp": {}}`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// `omitempty` of a number.
pub fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `omitempty` of a boolean.
pub fn is_false(v: &bool) -> bool {
    !*v
}

/// `omitempty` of a nil-able slice: nil and empty are both omitted.
pub fn is_empty_vec<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// `omitempty` of a nil-able map.
pub fn is_empty_map<K, V>(v: &Option<BTreeMap<K, V>>) -> bool {
    v.as_ref().is_none_or(BTreeMap::is_empty)
}

/// Go's `struct{}`: serialised as `{}`, decoded from an object (or `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A set of names as Go's `map[string]struct{}` (`ExposedPorts`, `Volumes`).
pub type Set = BTreeMap<String, Empty>;

/// Go's decoding of `null` into a slice or map: the zero value (an empty one). Use with
/// `#[serde(default, deserialize_with = "null_default")]` on a non-`Option` field.
pub fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `strslice.StrSlice`: a JSON string or an array of strings (`"Cmd": "true"` is `["true"]`).
/// Use with `#[serde(deserialize_with = "strslice")]` on an `Option<Vec<String>>`.
pub fn strslice<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(vec![s.to_string()]))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(vec![s]))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0));
            while let Some(s) = a.next_element::<String>()? {
                v.push(s);
            }
            Ok(Some(v))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct C {
        #[serde(deserialize_with = "strslice")]
        cmd: Option<Vec<String>>,
        ports: Set,
    }

    #[test]
    fn strslices_and_sets() {
        let c: C = crate::from_str(r#"{"Cmd":"true","Ports":{"80/tcp":{}}}"#).unwrap();
        assert_eq!(c.cmd, Some(vec!["true".to_string()]));
        assert!(c.ports.contains_key("80/tcp"));
        let c: C = crate::from_str(r#"{"Cmd":["a","b"]}"#).unwrap();
        assert_eq!(c.cmd.unwrap().len(), 2);
        let c: C = crate::from_str(r#"{"Cmd":[]}"#).unwrap();
        assert_eq!(c.cmd, Some(vec![]), "[] is not nil");
        let e = crate::from_str::<C>(r#"{"Cmd":["a",1]}"#).unwrap_err();
        assert_eq!(e.path_string(), "Cmd[1]");
        let e = crate::from_str::<C>(r#"{"Cmd":5}"#).unwrap_err();
        assert_eq!(e.path_string(), "Cmd");
        let e = crate::from_str::<C>(r#"{"Ports":{"80/tcp":"x"}}"#).unwrap_err();
        assert_eq!(e.path_string(), "Ports.80/tcp");
        assert_eq!(
            serde_json::to_string(&C {
                cmd: None,
                ports: [("1/udp".to_string(), Empty {})].into()
            })
            .unwrap(),
            r#"{"Cmd":null,"Ports":{"1/udp":{}}}"#
        );
    }
}
