//! `airlock-pack`: pins the images of a bundle spec in a lock file, pulls them from OCI
//! registries into a verified blob cache, and writes one signed (and usually encrypted)
//! bundle. The format itself belongs to `airlock-bundle`.

pub mod auth;
pub mod build;
pub mod cache;
pub mod cli;
mod commands;
mod error;
pub mod local;
pub mod lock;
pub mod ollama;
pub mod plan;
pub mod registry;

pub use commands::main;
pub use error::{bundle_exit_code, exit, report, BoxError, PackError};
