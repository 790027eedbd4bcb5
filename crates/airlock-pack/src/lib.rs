//! `airlock-pack`: pins the images of a bundle spec in a lock file, pulls them from OCI
//! registries into a verified blob cache, and writes one signed (and usually encrypted)
//! bundle. The format itself belongs to `airlock-bundle`. The library exists for its
//! binary: its modules are `pub(crate)`; `main`, the errors and the exit codes are public.

pub(crate) mod auth;
pub(crate) mod build;
pub(crate) mod cache;
pub(crate) mod cli;
mod commands;
pub(crate) mod compose;
mod error;
pub(crate) mod local;
pub(crate) mod lock;
pub(crate) mod ollama;
pub(crate) mod pipe;
pub(crate) mod plan;
pub(crate) mod provenance;
pub(crate) mod registry;
pub(crate) mod unpacker;

pub use commands::main;
pub use error::{bundle_exit_code, exit, report, BoxError, PackError, SignatureDrift, Unverified};
