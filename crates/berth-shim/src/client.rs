//! A small blocking client for a shim's control socket (see [`crate::protocol`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::protocol::{Request, Signal, State, EXIT, MAX_LINE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("shim socket: {0}")]
    Io(#[from] io::Error),
    #[error("shim: {0}")]
    Shim(String),
    #[error("shim protocol: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Connects to a unix socket, also when its path is longer than `sun_path` allows (through
/// `/proc/self/fd/N` of the directory).
pub fn connect_path(path: &Path) -> io::Result<UnixStream> {
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(Path::new(&format!("/proc/self/fd/{}", d.as_raw_fd())).join(name))
}

pub struct Client {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client> {
        Ok(Client {
            sock: connect_path(socket)?,
            buf: Vec::new(),
        })
    }

    /// A read timeout for replies (`None`: block; `wait` blocks until the container exits).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.sock.set_read_timeout(t)?;
        Ok(())
    }

    fn read_line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "the shim closed the connection".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one raw line (for tests of malformed input) and returns the reply as JSON.
    pub fn raw(&mut self, line: &[u8]) -> Result<Value> {
        let mut msg = line.to_vec();
        msg.push(b'\n');
        self.sock.write_all(&msg)?;
        let reply = self.read_line()?;
        serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request; returns the reply object when `ok`, the shim's error otherwise.
    pub fn call(&mut self, req: &Request) -> Result<Value> {
        let line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self.raw(&line)?;
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(v)
        } else {
            Err(ClientError::Shim(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("malformed reply")
                    .to_string(),
            ))
        }
    }

    pub fn start(&mut self) -> Result<()> {
        self.call(&Request::Start).map(drop)
    }

    pub fn kill(&mut self, signal: i32, all: bool) -> Result<()> {
        self.call(&Request::Kill {
            signal: Signal::Number(signal),
            all,
            exec_id: None,
        })
        .map(drop)
    }

    pub fn state(&mut self) -> Result<State> {
        self.exec_state(None)
    }

    pub fn exec_state(&mut self, exec_id: Option<&str>) -> Result<State> {
        let v = self.call(&Request::State {
            exec_id: exec_id.map(str::to_string),
        })?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Blocks until the container (or the exec) exits; its exit code.
    pub fn wait(&mut self, exec_id: Option<&str>) -> Result<i32> {
        let v = self.call(&Request::Wait {
            exec_id: exec_id.map(str::to_string),
        })?;
        v.get("exit_code")
            .and_then(Value::as_i64)
            .map(|c| c as i32)
            .ok_or_else(|| ClientError::Protocol("wait reply without exit_code".into()))
    }

    pub fn resize(&mut self, rows: u16, cols: u16, exec_id: Option<&str>) -> Result<()> {
        self.call(&Request::Resize {
            rows,
            cols,
            exec_id: exec_id.map(str::to_string),
        })
        .map(drop)
    }

    pub fn delete(&mut self, force: bool) -> Result<()> {
        self.call(&Request::Delete { force }).map(drop)
    }

    pub fn shutdown(&mut self, force: bool) -> Result<()> {
        self.call(&Request::Shutdown { force }).map(drop)
    }

    /// Attaches; the connection becomes the container's stream.
    pub fn attach(mut self, stdin: bool, stdout: bool, stderr: bool) -> Result<Stream> {
        let v = self.call(&Request::Attach {
            stdin,
            stdout,
            stderr,
            close_stdin: true,
        })?;
        let tty = v.get("tty").and_then(Value::as_bool).unwrap_or(false);
        Ok(Stream {
            sock: self.sock,
            buf: self.buf,
            pos: 0,
            framed: !tty,
        })
    }

    /// Starts an exec (`req` must be [`Request::Exec`]); returns its id, pid and stream.
    pub fn exec(mut self, req: &Request) -> Result<(String, i32, Stream)> {
        let v = self.call(req)?;
        let id = v
            .get("exec_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pid = v.get("pid").and_then(Value::as_i64).unwrap_or(0) as i32;
        Ok((
            id,
            pid,
            Stream {
                sock: self.sock,
                buf: self.buf,
                pos: 0,
                framed: true,
            },
        ))
    }
}

/// An attach or exec stream.
pub struct Stream {
    sock: UnixStream,
    buf: Vec<u8>,
    pos: usize,
    /// Multiplexed frames (attach without a tty, every exec) or raw bytes (attach with a tty).
    pub framed: bool,
}

/// One frame of a multiplexed stream.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The end of an exec stream.
    Exit(i32),
}

/// Everything an exec or attach stream carried.
#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: Option<i32>,
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.buf.len() {
                self.buf = Vec::new();
                self.pos = 0;
            }
            return Ok(n);
        }
        self.sock.read(out)
    }
}

impl Stream {
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// Writes to the container's (or exec's) stdin.
    pub fn write_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        self.sock.write_all(data)
    }

    /// Half-closes: the shim closes the process's stdin.
    pub fn close_stdin(&self) -> io::Result<()> {
        self.sock.shutdown(Shutdown::Write)
    }

    /// The next frame; `None` at the end of the stream.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut h = [0u8; 8];
        match self.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok(Some(match h[0] {
            1 => Frame::Stdout(payload),
            2 => Frame::Stderr(payload),
            EXIT => {
                let v: Value = serde_json::from_slice(&payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Frame::Exit(v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1) as i32)
            }
            s => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown stream type {s}"),
                ))
            }
        }))
    }

    /// Reads the whole stream (frames or raw bytes, raw going to `stdout`).
    pub fn collect(mut self) -> io::Result<Collected> {
        let mut c = Collected::default();
        if !self.framed {
            self.read_to_end(&mut c.stdout)?;
            return Ok(c);
        }
        while let Some(f) = self.read_frame()? {
            match f {
                Frame::Stdout(d) => c.stdout.extend_from_slice(&d),
                Frame::Stderr(d) => c.stderr.extend_from_slice(&d),
                Frame::Exit(code) => c.exit_code = Some(code),
            }
        }
        Ok(c)
    }
}
