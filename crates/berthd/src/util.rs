//! Small helpers: ids, times, JSON files (the shared implementations re-exported).

pub use berth_api::container::ZERO_TIME;
pub use berth_image::fsutil::{read_json, replace_json, write_json_atomic};
pub use berth_image::timeutil::{format_rfc3339_nano, now_rfc3339_nano, parse_rfc3339};
pub use berth_util::id::{new_id, random_hex};

/// Seconds since the epoch of an RFC 3339 time (0 when unparsable).
pub fn unix_secs(t: &str) -> i64 {
    parse_rfc3339(t).map(|(s, _)| s).unwrap_or(0)
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    berth_image::timeutil::now().0
}

/// Docker's "human" duration (`Up 5 seconds`, `Exited (0) 2 minutes ago`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if s < 120 {
        "About a minute".into()
    } else if s < 3600 {
        format!("{} minutes", s / 60)
    } else if s < 7200 {
        "About an hour".into()
    } else if s < 48 * 3600 {
        format!("{} hours", s / 3600)
    } else {
        format!("{} days", s / 86400)
    }
}

/// Applies `overrides` to the environment `env` as dockerd's `ReplaceOrAppendEnvValues`:
/// `KEY=value` replaces the variable where it is or is appended; a bare `KEY` unsets it.
pub fn override_env(env: &mut Vec<String>, overrides: &[String]) {
    for o in overrides {
        match o.split_once('=') {
            None => env.retain(|v| v.split('=').next() != Some(o.as_str())),
            Some((key, _)) => match env.iter_mut().find(|v| v.split('=').next() == Some(key)) {
                Some(v) => v.clone_from(o),
                None => env.push(o.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
    }

    #[test]
    fn env_overrides_as_dockerd() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".into(), "B=2".into()];
        override_env(
            &mut env,
            &["A=3".into(), "B".into(), "C=4".into(), "NONE".into()],
        );
        assert_eq!(env, ["PATH=/bin", "A=3", "C=4"]);
    }
}
