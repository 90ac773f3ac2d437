//! `--filter key=value` flags and the `filters` query parameter they become
//! (`berth_api::Filters`, `{"key":["value",…]}`), parsed as the docker CLI parses them.

use berth_api::Filters;

use crate::error::{CliError, Result};

/// Parses `key=value` flags: the key trimmed and lower-cased, the value trimmed.
pub fn parse(list: &[String]) -> Result<Filters> {
    list.iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_ascii_lowercase(), v.trim().to_string())),
            // (Exit status 1, as Berth's image commands always had.)
            None => Err(CliError::Message(format!(
                "invalid argument \"{f}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
            ))),
        })
        .collect()
}

/// The query parameter's value.
pub fn to_json(f: &Filters) -> String {
    String::from_utf8(crate::api::json(f)).unwrap_or_default()
}

/// Parses flags into the query parameter's value.
pub fn json(list: &[String]) -> Result<String> {
    Ok(to_json(&parse(list)?))
}

/// `?filters=…` of filter flags and more (key, value) pairs; "" without any.
pub fn query(list: &[String], extra: &[(&str, &str)]) -> Result<String> {
    let mut f = parse(list)?;
    f.0.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if f.is_empty() {
        return Ok(String::new());
    }
    Ok(format!("?filters={}", crate::api::enc(&to_json(&f))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_like_docker() {
        let f = parse(&[
            "Label = a=b ".into(),
            "dangling=true".into(),
            "label=c".into(),
        ])
        .unwrap();
        let want = [("label", "a=b"), ("dangling", "true"), ("label", "c")];
        assert_eq!(f, want.into_iter().collect());
        assert_eq!(to_json(&f), r#"{"dangling":["true"],"label":["a=b","c"]}"#);
        let e = parse(&["nope".into()]).unwrap_err();
        assert_eq!(e.status(), 1);
        assert_eq!(
            e.to_string(),
            "invalid argument \"nope\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
        );
        assert_eq!(json(&[]).unwrap(), "{}");
        assert_eq!(query(&[], &[]).unwrap(), "");
        assert_eq!(
            query(&["label=a".into()], &[("all", "true")]).unwrap(),
            "?filters=%7B%22all%22%3A%5B%22true%22%5D%2C%22label%22%3A%5B%22a%22%5D%7D"
        );
    }
}
