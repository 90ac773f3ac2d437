//! Berth OCI runtime library.
