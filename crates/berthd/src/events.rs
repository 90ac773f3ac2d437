//! The daemon's event bus (`GET /events`): every state change of containers, images,
//! networks and volumes, in Docker's JSON shape, with a short history for `since`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use berth_api::system::{Actor, EventMessage};
use berth_api::Filters;
use tokio::sync::broadcast;

/// How many past events `since` can replay.
const HISTORY: usize = 1024;

/// One event as Docker sends it.
#[derive(Debug, Clone)]
pub struct Event {
    pub typ: String,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    /// Docker's shape (with the legacy `status`, `id`, `from` of containers and images).
    pub fn to_message(&self) -> EventMessage {
        let legacy = self.typ == "container" || self.typ == "image";
        EventMessage {
            kind: self.typ.clone(),
            action: self.action.clone(),
            actor: Actor {
                id: self.id.clone(),
                attributes: self.attributes.clone(),
            },
            scope: "local".into(),
            time: self.time_nano / 1_000_000_000,
            time_nano: self.time_nano,
            status: legacy.then(|| self.action.clone()),
            id: legacy.then(|| self.id.clone()),
            from: self.attributes.get("image").filter(|_| legacy).cloned(),
        }
    }

    /// Whether the event passes Docker's `filters` (`type`, `event`, `container`, `image`,
    /// `label`, `network`, `volume`, `scope`): keys are ANDed, values of one key ORed.
    pub fn matches(&self, filters: &Filters) -> bool {
        let mut keys: Vec<&str> = filters.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .all(|key| filters.get(key).any(|v| self.matches_one(key, v)))
    }

    fn matches_one(&self, key: &str, v: &str) -> bool {
        let attr = |k: &str| self.attributes.get(k).map(String::as_str).unwrap_or("");
        match key {
            "type" => self.typ == v,
            "event" => {
                self.action == v || self.action.split(':').next() == Some(v) // "exec_start: sh"
            }
            "container" => {
                self.typ == "container"
                    // dockerd's `FuzzyMatch`: a prefix of the ID or of the name.
                    && (self.id.starts_with(v) || attr("name").starts_with(v.trim_start_matches('/')))
            }
            "image" => {
                // dockerd's `matchImage`: the actor's ID or image name, also without its tag.
                let name = attr(if self.typ == "image" { "name" } else { "image" });
                [self.id.as_str(), name]
                    .into_iter()
                    .any(|x| x == v || strip_tag(x) == v)
            }
            "network" => self.typ == "network" && (self.id.starts_with(v) || attr("name") == v),
            "volume" => self.typ == "volume" && self.id == v,
            "scope" => v == "local",
            "label" => match v.split_once('=') {
                Some((k, val)) => attr(k) == val,
                None => self.attributes.contains_key(v),
            },
            "daemon" => self.typ == "daemon",
            _ => true,
        }
    }
}

/// An image reference without its tag (dockerd's `stripTag`: the familiar name), or `s`
/// itself when it is no reference.
fn strip_tag(s: &str) -> String {
    berth_image::Reference::parse_normalized(s)
        .map(|r| r.familiar_name())
        .unwrap_or_else(|_| s.to_string())
}

/// The bus: a broadcast channel plus a bounded history. Clones publish to the same bus
/// (networks and volumes hold one).
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
    history: Arc<Mutex<VecDeque<Event>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(1024).0,
            history: Arc::new(Mutex::new(VecDeque::with_capacity(64))),
        }
    }
}

impl Bus {
    /// Publishes an event now.
    pub fn emit(&self, typ: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let (s, ns) = berth_image::timeutil::now();
        let ev = Event {
            typ: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes,
            time_nano: s * 1_000_000_000 + i64::from(ns),
        };
        tracing::debug!("event {typ} {action} {id}");
        {
            let mut h = self.history.lock().unwrap();
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// A network event (`create`, `connect`, `disconnect`, `destroy`) with dockerd's
    /// attributes: the network's `name` and `type` (driver), and `container` for
    /// (dis)connections.
    pub fn network(
        &self,
        action: &str,
        id: &str,
        name: &str,
        driver: &str,
        container: Option<&str>,
    ) {
        let mut a = BTreeMap::from([
            ("name".to_string(), name.to_string()),
            ("type".to_string(), driver.to_string()),
        ]);
        if let Some(c) = container {
            a.insert("container".into(), c.to_string());
        }
        self.emit("network", action, id, a);
    }

    /// A volume event (`create`, `mount`, `unmount`, `destroy`) with dockerd's attributes
    /// (`driver`, and `extra`: `container`, `destination`, `read/write`, `propagation`).
    pub fn volume(&self, action: &str, name: &str, extra: &[(&str, &str)]) {
        let mut a = BTreeMap::from([("driver".to_string(), "local".to_string())]);
        for (k, v) in extra {
            a.insert(k.to_string(), v.to_string());
        }
        self.emit("volume", action, name, a);
    }

    /// Past events since `since_nano` (inclusive) and a receiver for new ones, taken atomically
    /// so nothing is lost or repeated between the two. `replay`: the whole history when there
    /// is no `since` (dockerd replays its buffer when either `since` or `until` is given).
    pub fn subscribe(
        &self,
        since_nano: Option<i64>,
        replay: bool,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap();
        let rx = self.tx.subscribe();
        let past = match since_nano {
            Some(t) => h.iter().filter(|e| e.time_nano >= t).cloned().collect(),
            None if replay => h.iter().cloned().collect(),
            None => Vec::new(),
        };
        (past, rx)
    }
}

/// Parses Docker's `since`/`until` (`<seconds>[.<nanos>]`, RFC 3339, or a duration like `10m`
/// relative to now) into nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if let Some((secs, frac)) = s.split_once('.') {
        if let (Ok(a), true) = (
            secs.parse::<i64>(),
            frac.bytes().all(|b| b.is_ascii_digit()),
        ) {
            let mut f = frac.to_string();
            f.truncate(9);
            while f.len() < 9 {
                f.push('0');
            }
            return Some(
                a.saturating_mul(1_000_000_000)
                    .saturating_add(f.parse::<i64>().unwrap_or(0)),
            );
        }
    }
    // Far-off times saturate (year 2999 is past i64 nanoseconds), never overflow.
    if let Ok(a) = s.parse::<i64>() {
        return Some(a.saturating_mul(1_000_000_000));
    }
    if let Some((a, ns)) = berth_image::timeutil::parse_rfc3339(s) {
        return Some(
            a.saturating_mul(1_000_000_000)
                .saturating_add(i64::from(ns)),
        );
    }
    // A duration before now (Go's `time.ParseDuration`: `10m`, `1h30m`, `1.5s`).
    let ago = berth_util::units::parse_duration(s).ok()?;
    let (now_s, now_ns) = berth_image::timeutil::now();
    Some(now_s * 1_000_000_000 + i64::from(now_ns) - ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            typ: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_nano: 5,
        }
    }

    #[test]
    fn filters() {
        let e = ev(
            "container",
            "start",
            "abcdef",
            &[("name", "web"), ("image", "busybox"), ("tier", "x")],
        );
        let f = |v: &[(&str, &str)]| {
            Filters(
                v.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )
        };
        assert!(e.matches(&f(&[])));
        assert!(e.matches(&f(&[("type", "container"), ("event", "start")])));
        assert!(e.matches(&f(&[("event", "stop"), ("event", "start")])));
        assert!(!e.matches(&f(&[("type", "image")])));
        assert!(e.matches(&f(&[("container", "web")])));
        assert!(e.matches(&f(&[("container", "abc")])));
        assert!(e.matches(&f(&[("label", "tier=x")])));
        assert!(!e.matches(&f(&[("label", "tier=y")])));
        assert!(e.matches(&f(&[("image", "busybox")])));
        let m = e.to_message();
        assert_eq!(m.status.as_deref(), Some("start"));
        assert_eq!(m.from.as_deref(), Some("busybox"));
        assert_eq!(m.actor.attributes, e.attributes, "name, image and tier");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"status":"start","id":"abcdef","from":"busybox","Type":"container","Action":"start","Actor":{"ID":"abcdef","Attributes":{"image":"busybox","name":"web","tier":"x"}},"scope":"local","time":0,"timeNano":5}"#,
            "Docker's JSON, legacy fields first"
        );
        let n = ev("network", "create", "n1", &[]).to_message();
        assert!(n.status.is_none() && n.from.is_none());
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"Type":"network","Action":"create","Actor":{"ID":"n1","Attributes":{}},"scope":"local","time":0,"timeNano":5}"#,
            "no legacy fields outside containers and images"
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("12.5"), Some(12_500_000_000));
        assert_eq!(parse_time("7"), Some(7_000_000_000));
        assert!(parse_time("10m").unwrap() > 0);
        assert_eq!(parse_time("bogus"), None);
    }

    #[tokio::test]
    async fn history_and_live() {
        let b = Bus::default();
        b.emit("container", "create", "a", Default::default());
        let (past, mut rx) = b.subscribe(Some(0), false);
        assert_eq!(past.len(), 1);
        b.emit("container", "start", "a", Default::default());
        assert_eq!(rx.recv().await.unwrap().action, "start");
    }
}
