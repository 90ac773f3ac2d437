//! The generated messages, clients and servers of `runtime.v1`.
#![allow(clippy::all, missing_docs)]

pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1::*;
