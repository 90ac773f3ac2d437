//! Berth's builder: the Dockerfile language (parser, variable expansion), `.dockerignore`,
//! the evaluator with its step cache, and build-context handling.

pub mod binfmt;
#[cfg(feature = "executor")]
pub mod builder;
pub mod context;
pub mod diff;
pub mod dockerignore;
pub mod fsops;
pub mod http;
pub mod parser;
pub mod shell;

#[cfg(feature = "executor")]
pub use builder::{BuildError, BuildOptions, Builder, Built, Event, StepEvent};
