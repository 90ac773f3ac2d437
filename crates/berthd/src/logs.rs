//! `GET /containers/{id}/logs`: reads the shim's json-file log.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::engine::Events;

/// Options of a logs request.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    /// `None` = all.
    pub tail: Option<usize>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Multiplexed 8-byte frames (no tty).
    pub framed: bool,
}

#[derive(Deserialize)]
struct Entry {
    log: String,
    stream: String,
    time: String,
}

fn format_entry(line: &str, o: &LogOptions) -> Option<Vec<u8>> {
    let e: Entry = serde_json::from_str(line).ok()?;
    let stream = match e.stream.as_str() {
        "stdout" if o.stdout => 1u8,
        "stderr" if o.stderr => 2u8,
        _ => return None,
    };
    if o.since.is_some() || o.until.is_some() {
        let t = crate::util::parse_rfc3339(&e.time)
            .map(|(s, _)| s)
            .unwrap_or(0);
        if o.since.is_some_and(|s| t < s) || o.until.is_some_and(|u| u > 0 && t > u) {
            return None;
        }
    }
    let mut payload = Vec::new();
    if o.timestamps {
        payload.extend_from_slice(e.time.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(e.log.as_bytes());
    if !o.framed {
        return Some(payload);
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&berth_shim::protocol::frame_header(stream, payload.len()));
    out.extend_from_slice(&payload);
    Some(out)
}

/// The log files, oldest first.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for n in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if p.exists() {
            v.push(p);
        }
    }
    v.push(path.to_path_buf());
    v
}

/// Streams the log into `tx`. Runs blocking file I/O: call from `spawn_blocking`.
pub fn stream(
    path: PathBuf,
    o: LogOptions,
    events: Option<(watch::Receiver<Events>, u64)>,
    tx: mpsc::Sender<Bytes>,
) {
    let (mut events, seen) = match events {
        Some((rx, seen)) => (Some(rx), seen),
        None => (None, 0),
    };
    // Followed through one open descriptor: the container's directory may be renamed or
    // deleted (removal) before the last round, and rotation is seen as a new file at `path`.
    let mut current = std::fs::File::open(&path).ok();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0u64;
    for f in files(&path) {
        let opened = if f == path {
            current
                .as_ref()
                .map(|c| c.try_clone())
                .unwrap_or_else(|| Err(std::io::Error::from(std::io::ErrorKind::NotFound)))
        } else {
            std::fs::File::open(&f)
        };
        let Ok(file) = opened else {
            continue;
        };
        let mut r = BufReader::new(file);
        let mut line = String::new();
        let mut consumed = 0u64;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !line.ends_with('\n') {
                        break;
                    }
                    consumed += n as u64;
                    if let Some(c) = format_entry(line.trim_end(), &o) {
                        chunks.push(c);
                    }
                }
            }
        }
        if f == path {
            pos = consumed;
        }
    }
    let skip = o.tail.map(|t| chunks.len().saturating_sub(t)).unwrap_or(0);
    let mut buf = Vec::new();
    for c in chunks.into_iter().skip(skip) {
        buf.extend_from_slice(&c);
    }
    if !buf.is_empty() && tx.blocking_send(Bytes::from(buf)).is_err() {
        return;
    }
    if !o.follow {
        return;
    }
    let Some(ev) = events.as_mut() else { return };
    let wake = LogWake::new(&path);
    let mut last_round = false;
    loop {
        let done = {
            let e = ev.borrow_and_update();
            e.removed || e.exits > seen
        };
        // Read whatever is new.
        let at_path = std::fs::metadata(&path).ok();
        let rotated = match (&current, &at_path) {
            (Some(f), Some(m)) => f.metadata().is_ok_and(|fm| fm.ino() != m.ino()),
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated {
            // A rotation: what was written to the old file after our last read is in `path.1`
            // now; Docker loses it too. Continue with the new file from its start.
            if let Ok(f) = std::fs::File::open(&path) {
                current = Some(f);
                pos = 0;
            }
        }
        if let Some(file) = current.as_mut() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // truncated
            }
            if len > pos && file.seek(SeekFrom::Start(pos)).is_ok() {
                let mut data = Vec::new();
                let _ = (&mut *file).take(len - pos).read_to_end(&mut data);
                let complete = data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                pos += complete as u64;
                let mut out = Vec::new();
                for l in String::from_utf8_lossy(&data[..complete]).lines() {
                    if let Some(c) = format_entry(l, &o) {
                        out.extend_from_slice(&c);
                    }
                }
                if !out.is_empty() && tx.blocking_send(Bytes::from(out)).is_err() {
                    return;
                }
            }
        }
        if last_round {
            return;
        }
        if done {
            last_round = true;
            continue;
        }
        if tx.is_closed() {
            return;
        }
        match &wake {
            Some(w) => w.wait(FOLLOW_TICK),
            None => std::thread::sleep(FOLLOW_TICK),
        }
    }
}

/// How often a follower looks at the container's state (exit, removal) and its client when
/// the log does not change.
const FOLLOW_TICK: Duration = Duration::from_millis(100);

/// Wakes a follower as soon as the log's directory changes (a line written, a rotation):
/// `logs -f` shows a line when it is written, not up to a polling interval later.
struct LogWake(std::os::fd::OwnedFd);

impl LogWake {
    fn new(path: &Path) -> Option<Self> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let flags = WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO;
        inotify::add_watch(&fd, path.parent()?, flags).ok()?;
        Some(Self(fd))
    }

    /// Waits for a change or `timeout`, then drains the events.
    fn wait(&self, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(&self.0, &mut buf), Ok(n) if n > 0) {}
    }
}
