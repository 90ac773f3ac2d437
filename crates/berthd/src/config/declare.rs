//! How a daemon option is declared: [`daemon_options!`] turns one table of options (flag,
//! file key, types, default, check, help) into the [`Flags`](super::Flags) of clap, the
//! [`FileConfig`](super::FileConfig) with its `set`, the [`OPTIONS`](super::OPTIONS) list,
//! the flags' values shown in conflicts, the merged [`DaemonConfig`](super::DaemonConfig),
//! [`merge`](super::merge) and what a reload takes. [`Kind`] says how one option's flag and
//! file values read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_api::container::Ulimit;
use berth_network::Ipv4Net;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AddressPool, MergeError, ValueError};

/// How an option's value reads from its flag and from the file.
pub trait Kind {
    /// The flag's field in `Flags` (an `Option` or, for a repeatable flag, a `Vec`).
    type Flag;
    /// The value read from the file or the flag, before the default.
    type Value: Clone;
    /// Reads the file's JSON value.
    fn from_json(raw: &RawValue) -> Result<Self::Value, ValueError>;
    /// The flag's value as given (in conflict messages); `None`: not given.
    fn shown(flag: &Self::Flag) -> Option<String>;
    /// The flag's value; `flag` (its long name) names it in errors.
    fn from_flag(flag: &'static str, v: &Self::Flag) -> Result<Option<Self::Value>, MergeError>;
    /// A value that counts as not given (an empty list).
    fn unset(_v: &Self::Value) -> bool {
        false
    }
}

/// The value of a single-valued option: read from JSON, shown as text.
pub trait Scalar: Clone + Sized {
    fn from_json(raw: &RawValue) -> Result<Self, ValueError>;
    fn show(&self) -> String;
}

/// Decodes a JSON value (serde's message without its position).
pub(super) fn val<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, ValueError> {
    serde_json::from_str(raw.get()).map_err(ValueError::Json)
}

macro_rules! displayed_scalars {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn from_json(raw: &RawValue) -> Result<Self, ValueError> {
                val(raw)
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
displayed_scalars!(String, bool, usize, u16, std::net::IpAddr);

impl Scalar for PathBuf {
    fn from_json(raw: &RawValue) -> Result<Self, ValueError> {
        val(raw)
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

/// A CIDR is a string in the file (its own error for a bad one).
impl Scalar for Ipv4Net {
    fn from_json(raw: &RawValue) -> Result<Self, ValueError> {
        let s: String = val(raw)?;
        Ok(s.parse::<Ipv4Net>()?)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl<T: Scalar> Kind for Option<T> {
    type Flag = Option<T>;
    type Value = T;
    fn from_json(raw: &RawValue) -> Result<T, ValueError> {
        T::from_json(raw)
    }
    fn shown(flag: &Option<T>) -> Option<String> {
        flag.as_ref().map(T::show)
    }
    fn from_flag(_: &'static str, v: &Option<T>) -> Result<Option<T>, MergeError> {
        Ok(v.clone())
    }
}

/// A repeatable option: its flag given once per item, the whole collection in the file.
pub trait Repeated {
    /// The collection: a list, or a map by name.
    type Value: Clone + Default + PartialEq + Extend<Self::Item>;
    /// What one flag adds to it.
    type Item;
    fn from_json(raw: &RawValue) -> Result<Self::Value, ValueError>;
    /// Reads one flag; `flag` (its long name) names it in errors.
    fn item(flag: &'static str, s: &str) -> Result<Self::Item, MergeError>;
}

impl<R: Repeated> Kind for R {
    type Flag = Vec<String>;
    type Value = R::Value;
    fn from_json(raw: &RawValue) -> Result<R::Value, ValueError> {
        R::from_json(raw)
    }
    fn shown(flag: &Vec<String>) -> Option<String> {
        (!flag.is_empty()).then(|| format!("[{}]", flag.join(" ")))
    }
    fn from_flag(flag: &'static str, v: &Vec<String>) -> Result<Option<R::Value>, MergeError> {
        let mut out = R::Value::default();
        for s in v {
            out.extend([R::item(flag, s)?]);
        }
        Ok((!Self::unset(&out)).then_some(out))
    }
    /// An empty list or map.
    fn unset(v: &R::Value) -> bool {
        *v == R::Value::default()
    }
}

/// A list of strings (`hosts`, `labels`, …): the flag repeated, a JSON array in the file.
impl Repeated for Vec<String> {
    type Value = Vec<String>;
    type Item = String;
    fn from_json(raw: &RawValue) -> Result<Vec<String>, ValueError> {
        val(raw)
    }
    fn item(_: &'static str, s: &str) -> Result<String, MergeError> {
        Ok(s.to_string())
    }
}

/// `default-address-pools`: `base=CIDR,size=N` flags, `{"base", "size"}` objects in the file.
pub struct Pools;

impl Repeated for Pools {
    type Value = Vec<AddressPool>;
    type Item = AddressPool;
    fn from_json(raw: &RawValue) -> Result<Vec<AddressPool>, ValueError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pool {
            base: String,
            size: u8,
        }
        let pools: Vec<Pool> = val(raw)?;
        let mut out = Vec::new();
        for p in pools {
            let base = p.base.parse::<Ipv4Net>()?;
            out.push(AddressPool { base, size: p.size }.checked()?);
        }
        Ok(out)
    }
    fn item(flag: &'static str, s: &str) -> Result<AddressPool, MergeError> {
        AddressPool::parse_flag(s).map_err(super::bad_value(flag))
    }
}

/// `log-opts`: `KEY=VALUE` flags, an object of strings in the file.
pub struct KeyValues;

impl Repeated for KeyValues {
    type Value = BTreeMap<String, String>;
    type Item = (String, String);
    fn from_json(raw: &RawValue) -> Result<BTreeMap<String, String>, ValueError> {
        val(raw)
    }
    fn item(flag: &'static str, s: &str) -> Result<(String, String), MergeError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| super::invalid(flag, super::not_key_value(s)))?;
        Ok((k.to_string(), v.to_string()))
    }
}

/// `default-ulimits`: `NAME=SOFT[:HARD]` flags, Docker's `{"Name", "Soft", "Hard"}` objects by
/// name in the file.
pub struct Ulimits;

impl Repeated for Ulimits {
    type Value = BTreeMap<String, Ulimit>;
    type Item = (String, Ulimit);
    fn from_json(raw: &RawValue) -> Result<BTreeMap<String, Ulimit>, ValueError> {
        let m: BTreeMap<String, serde_json::Value> = val(raw)?;
        let mut out = BTreeMap::new();
        for (name, v) in m {
            let u: Ulimit =
                berth_api::decode::from_value(v).map_err(|source| ValueError::UlimitDecode {
                    name: name.clone(),
                    source,
                })?;
            out.insert(name, u);
        }
        Ok(out)
    }
    fn item(flag: &'static str, s: &str) -> Result<(String, Ulimit), MergeError> {
        let u = super::parse_ulimit(s).map_err(super::bad_value(flag))?;
        Ok((u.name.clone(), u))
    }
}

/// The flag's value, else the file's (an empty list is none).
pub fn pick<K: Kind>(
    flag: &'static str,
    from_flag: &K::Flag,
    from_file: &Option<K::Value>,
) -> Result<Option<K::Value>, MergeError> {
    Ok(K::from_flag(flag, from_flag)?
        .or_else(|| from_file.clone())
        .filter(|v| !K::unset(v)))
}

/// Why a merged value is refused; `merge` adds the option's key.
#[derive(Debug)]
pub enum Refusal {
    Invalid(String),
    Value(ValueError),
}

impl From<ValueError> for Refusal {
    fn from(e: ValueError) -> Self {
        Refusal::Value(e)
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal::Invalid(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        Refusal::Invalid(message.to_string())
    }
}

impl Refusal {
    /// The error naming `option`.
    pub fn of(self, option: &str) -> MergeError {
        match self {
            Refusal::Invalid(message) => super::invalid(option, message),
            Refusal::Value(source) => MergeError::Value {
                option: option.to_string(),
                source,
            },
        }
    }
}

/// The daemon's options, each declared once:
///
/// ```text
/// /// Help of the flag (and doc of the merged field).
/// #[arg(long = "flag-name", <more clap arguments>)]
/// field: FlagType [as Kind], key "file-key", reload|restart => MergedType = HOW [, check(F)];
/// ```
///
/// - `FlagType` is the field of `Flags` (`Option<T>` or `Vec<String>`); its [`Kind`] reads
///   the flag and the file, unless `as Kind` names another.
/// - `reload`: a reload (SIGHUP) applies a change; `restart`: only a restart does.
/// - HOW makes the merged value from the flag's, else the file's (an `Option`), in table
///   order (a default may use an option above it): `optional` (kept an `Option`),
///   `or(DEFAULT)`, or `via(F)` with `F(Option<Value>) -> Result<MergedType, E>`.
/// - `check(F)`: `F(&MergedType) -> Result<(), E>`; `E` is a message or a [`ValueError`],
///   named with the key.
macro_rules! daemon_options {
    (
        $(#[$flags_meta:meta])*
        pub struct Flags {
            $($(#[$plain_meta:meta])* pub $plain:ident: $plain_ty:ty,)*
        }
        options {$(
            $(#[doc = $doc:literal])*
            #[arg(long = $flag:literal $($arg:tt)*)]
            $field:ident: $flag_ty:ty $(as $kind:ty)?, key $key:literal, $reload:ident
                => $ty:ty = $how:ident $(($($how_arg:tt)*))? $(, check($check:expr))?;
        )*}
    ) => {
        $(#[$flags_meta])*
        pub struct Flags {
            $($(#[$plain_meta])* pub $plain: $plain_ty,)*
            $(
                $(#[doc = $doc])*
                #[arg(long = $flag $($arg)*)]
                pub $field: $flag_ty,
            )*
        }

        /// Every option of the file, with its flag.
        pub const OPTIONS: &[OptionInfo] = &[$(OptionInfo {
            key: $key,
            flag: $flag,
            reloadable: daemon_options!(@reloadable $reload),
        }),*];

        /// The configuration file's content: every key optional.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct FileConfig {
            $(pub $field: Option<<daemon_options!(@kind $flag_ty $(, $kind)?) as Kind>::Value>,)*
            /// The keys present, with the text of their values (for conflict messages).
            pub present: BTreeMap<String, String>,
        }

        impl FileConfig {
            /// Sets `key` from its JSON value. `Ok(false)`: not a key of the file.
            fn set(&mut self, key: &str, raw: &RawValue) -> Result<bool, ValueError> {
                match key {
                    $($key => {
                        type K = daemon_options!(@kind $flag_ty $(, $kind)?);
                        self.$field = Some(<K as Kind>::from_json(raw)?)
                    })*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }

        /// The flags' values of the options given on the command line, as text, by key.
        fn flags_given(f: &Flags) -> BTreeMap<&'static str, String> {
            let mut given = BTreeMap::new();
            $({
                type K = daemon_options!(@kind $flag_ty $(, $kind)?);
                if let Some(v) = <K as Kind>::shown(&f.$field) {
                    given.insert($key, v);
                }
            })*
            given
        }

        /// The merged configuration the daemon runs with.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct DaemonConfig {$(
            $(#[doc = $doc])*
            #[serde(rename = $key)]
            pub $field: $ty,
        )*}

        /// Merges the flags over the file over the defaults; an option in both is an error.
        pub fn merge(flags: &Flags, file: &FileConfig) -> Result<DaemonConfig, MergeError> {
            check_conflicts(flags, file)?;
            $(
                let $field = pick::<daemon_options!(@kind $flag_ty $(, $kind)?)>(
                    $flag, &flags.$field, &file.$field,
                )?;
                let $field: $ty = daemon_options!(@how $field, $key, $how $(($($how_arg)*))?);
                $(
                    ($check)(&$field).map_err(|e| Refusal::from(e).of($key))?;
                )?
            )*
            Ok(DaemonConfig { $($field),* })
        }

        impl DaemonConfig {
            /// `self` with the reloadable options taken from `new` (the others need a
            /// restart).
            pub fn with_reloadable_from(&self, new: &DaemonConfig) -> DaemonConfig {
                DaemonConfig {$(
                    $field: if daemon_options!(@reloadable $reload) {
                        new.$field.clone()
                    } else {
                        self.$field.clone()
                    },
                )*}
            }
        }
    };
    (@kind $flag_ty:ty) => { $flag_ty };
    (@kind $flag_ty:ty, $kind:ty) => { $kind };
    (@reloadable reload) => { true };
    (@reloadable restart) => { false };
    (@how $field:ident, $key:literal, optional) => { $field };
    (@how $field:ident, $key:literal, or($default:expr)) => {
        $field.unwrap_or_else(|| $default)
    };
    (@how $field:ident, $key:literal, via($f:expr)) => {
        ($f)($field).map_err(|e| Refusal::from(e).of($key))?
    };
}
pub(super) use daemon_options;
