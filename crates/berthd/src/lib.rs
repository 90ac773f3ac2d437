//! `berthd`: Berth's daemon. Serves the Docker Engine API (v1.24–1.51) on unix sockets, TCP
//! with TLS and sockets passed by systemd ([`listen`], [`sockets`], [`systemd`]); [`config`]
//! merges the flags with `daemon.json`.
//!
//! - Routes are in [`http`], by area (system, containers, exec, images, build, networks,
//!   volumes): decode with berth-api's models, call the domain, encode; one error type.
//! - Containers are in [`engine`] (records on disk, the life cycle, shims, reattach,
//!   operations), with the `Participant` interface through which [`network`] and
//!   [`mounts`] take part in a container's life.
//! - Domains: [`network`], [`mounts`] and [`volumes`], [`exec`], [`images`], [`build`],
//!   [`archive`] (`docker cp`), [`events`], [`health`], [`logs`].
//! - [`hostconfig`] checks `HostConfig` at create (dockerd's messages) and applies it to the
//!   runtime's typed OCI spec ([`spec`]); [`buildkit`] serves BuildKit's API for buildx;
//!   [`shimio`] is an async client of a shim's control socket.

pub mod archive;
pub mod build;
pub mod buildkit;
pub mod config;
pub mod cri;
pub mod engine;
pub mod error;
pub mod events;
pub mod exec;
pub mod failpoint;
pub mod health;
pub mod hostconfig;
pub mod http;
pub mod images;
pub mod leftovers;
pub mod listen;
pub mod logs;
pub mod memory;
pub mod mounts;
pub mod names;
pub mod network;
pub mod rootless;
pub mod rootless_cgroups;
pub mod rootless_net;
pub mod shimio;
pub mod sockets;
pub mod spec;
pub mod sysinfo;
pub mod systemd;
pub mod util;
pub mod volumes;
