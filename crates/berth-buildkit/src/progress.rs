//! A solve's progress as BuildKit's `Status` stream reports it: vertexes (one per step and
//! per phase such as loading the context or exporting), their logs, statuses and warnings.
//! Events are kept until the solve ends, so a `Status` call that comes after the `Solve`
//! (clients make both at once) still sees everything.

use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::errors::SolveError;
use crate::proto::moby::buildkit::v1::{
    StatusResponse, Vertex, VertexLog, VertexStatus, VertexWarning,
};

/// A timestamp of now.
pub fn now() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[derive(Default)]
struct Inner {
    history: Vec<StatusResponse>,
    subscribers: Vec<mpsc::UnboundedSender<StatusResponse>>,
    done: bool,
}

/// The progress of one solve.
#[derive(Default)]
pub struct Progress {
    inner: Mutex<Inner>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `r` to the subscribers and keeps it for later ones.
    pub fn send(&self, r: StatusResponse) {
        let mut g = self.lock();
        if g.done {
            return;
        }
        g.subscribers.retain(|s| s.send(r.clone()).is_ok());
        g.history.push(r);
    }

    /// Everything so far, then what comes; the stream ends with the solve.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<StatusResponse> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut g = self.lock();
        for r in &g.history {
            let _ = tx.send(r.clone());
        }
        if !g.done {
            g.subscribers.push(tx);
        }
        rx
    }

    /// Ends every stream; later subscribers get the history only.
    pub fn finish(&self) {
        let mut g = self.lock();
        g.done = true;
        g.subscribers.clear();
    }

    pub fn vertex(&self, v: Vertex) {
        self.send(StatusResponse {
            vertexes: vec![v],
            ..Default::default()
        });
    }

    pub fn log(&self, vertex: &str, stream: i64, msg: Vec<u8>) {
        self.send(StatusResponse {
            logs: vec![VertexLog {
                vertex: vertex.to_string(),
                timestamp: Some(now()),
                stream,
                msg,
            }],
            ..Default::default()
        });
    }

    pub fn status(&self, s: VertexStatus) {
        self.send(StatusResponse {
            statuses: vec![s],
            ..Default::default()
        });
    }

    pub fn warning(&self, w: VertexWarning) {
        self.send(StatusResponse {
            warnings: vec![w],
            ..Default::default()
        });
    }
}

/// A vertex digest: unique per solve and name.
pub fn vertex_digest(solve: &str, name: &str, n: usize) -> String {
    let mut h = Sha256::new();
    h.update(solve.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    h.update(n.to_le_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A vertex being reported: started when made, completed (or failed) once.
pub struct VertexRun<'p> {
    progress: &'p Progress,
    pub vertex: Vertex,
}

impl<'p> VertexRun<'p> {
    pub fn start(progress: &'p Progress, digest: String, name: impl Into<String>) -> Self {
        let vertex = Vertex {
            digest,
            name: name.into(),
            started: Some(now()),
            ..Default::default()
        };
        progress.vertex(vertex.clone());
        VertexRun { progress, vertex }
    }

    pub fn digest(&self) -> &str {
        &self.vertex.digest
    }

    pub fn log(&self, stream: i64, msg: impl Into<Vec<u8>>) {
        self.progress.log(&self.vertex.digest, stream, msg.into());
    }

    /// A named sub-status (`writing image sha256:…`, `naming to …`), done at once.
    pub fn status_done(&self, name: impl Into<String>) {
        let t = now();
        self.progress.status(VertexStatus {
            id: name.into(),
            vertex: self.vertex.digest.clone(),
            timestamp: Some(t),
            started: Some(t),
            completed: Some(t),
            ..Default::default()
        });
    }

    pub fn cached(mut self) {
        self.vertex.cached = true;
        self.done();
    }

    pub fn done(mut self) {
        self.vertex.completed = Some(now());
        self.progress.vertex(self.vertex.clone());
    }

    pub fn fail(mut self, error: impl Into<String>) {
        self.vertex.completed = Some(now());
        self.vertex.error = error.into();
        self.progress.vertex(self.vertex.clone());
    }

    /// Fails the vertex with `err`'s message; `err` back, to return.
    pub fn failed(self, err: SolveError) -> SolveError {
        self.fail(&err.message);
        err
    }
}
