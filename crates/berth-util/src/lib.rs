//! Small pieces shared by Berth's crates; it depends on `libc` and `rustix` (raw system
//! calls) and `thiserror` (a macro) alone, so that the static shim can link it without
//! growing.
//!
//! - [`time`]: RFC 3339 parsing and formatting (Go's `RFC3339Nano`, runc's nine digits).
//! - [`fd`]: handing a descriptor to a child process ([`fd::inherit_as`]).
//! - [`fs`]: replacing a file's content atomically, durably ([`fs::atomic_write`]) or not
//!   ([`fs::replace_file_nosync`], for run-time state).
//! - [`glob`]: Go's `path.Match` character classes ([`glob::match_class`]).
//! - [`host`]: the daemon's addresses (`unix://`, `tcp://`) and their default ports.
//! - [`http1`]: the client side of HTTP/1.1: a response's head ([`http1::read_head`]) and
//!   body ([`http1::body_reader`], de-chunked by [`http1::ChunkedReader`]).
//! - [`id`]: random hex identifiers ([`id::new_id`]: 64 hex characters).
//! - [`units`]: Docker's sizes (`RAMInBytes`, `FromHumanSize`) and Go's durations.
//! - [`root`]: the confined-path resolver (`openat2(RESOLVE_IN_ROOT)` with a user-space
//!   fallback): [`root::open_in_root`], [`root::mkdir_all_in_root`], [`root::touch_in_root`].
//! - [`passwd`]: `/etc/passwd` entries by name or uid, from the file's text (no NSS).
//! - [`process`]: running a helper program with input on its stdin
//!   ([`process::output_with_input`]).
//! - [`runtime`]: the client of a runc-compatible runtime binary ([`runtime::Runtime`]).
//! - [`url`]: percent-encoding ([`url::query_escape`], Go's `url.QueryEscape`).
//! - [`shared_tmp`]: work directories in a directory daemons share (`/dev/shm`), claimed by a
//!   held lock file, and the sweep that removes those of daemons that are gone.
//! - [`signal`]: resetting every signal disposition before `execve`; signalfds.
//! - [`userns`]: whether the process runs in a user namespace other than the initial one.

pub mod errno;
pub mod fd;
pub mod fs;
pub mod glob;
pub mod host;
pub mod http1;
pub mod id;
pub mod passwd;
pub mod process;
pub mod root;
pub mod runtime;
pub mod shared_tmp;
pub mod signal;
pub mod time;
pub mod units;
pub mod url;
pub mod userns;
