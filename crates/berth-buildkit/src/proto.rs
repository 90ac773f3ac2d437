//! The generated messages, clients and servers of Berth's BuildKit protos, in modules named
//! after their packages (`moby::buildkit::v1`, `pb`, `fsutil::types`, …).
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/protos.rs"));
