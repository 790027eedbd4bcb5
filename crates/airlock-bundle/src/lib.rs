//! The airlock bundle format and everything that must agree on it: the bundle spec and lock
//! file, image references, digests, streaming hash and size-limit adapters, the bundle writer
//! and reader, minisign signing and age encryption.
//!
//! This crate performs no network I/O; `airlock-unpack` depends on it on the air-gapped side.
//! The format itself is specified in `docs/FORMAT.md`.

pub mod agestream;
pub mod crypt;
pub mod digest;
pub mod error;
pub mod hashing;
pub mod header;
pub mod inventory;
pub mod lock;
pub mod oci;
pub mod ollama;
pub mod parts;
pub mod provenance;
pub mod readahead;
pub mod reader;
pub mod reference;
pub mod sign;
pub mod spec;
pub mod tarfmt;
pub mod text;
pub mod writer;

pub use digest::Digest;
pub use error::{BundleError, ErrorClass};
pub use header::{
    Entry, FileRecord, Header, ImageRecord, ModelRecord, Target, FORMAT_NAME, FORMAT_VERSION,
};
pub use reference::ImageRef;

/// The version string tools write into headers and reports.
pub fn tool_version(tool: &str) -> String {
    format!("{tool} {}", env!("CARGO_PKG_VERSION"))
}
