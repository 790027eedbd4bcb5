//! Test and demo support shared by `tests/` and `xtask`: a throwaway loopback registry
//! (Debian's `docker-registry`), fixture images generated on the spot (busybox-static layers
//! that print a marker, random layers for benchmarks), generated Ollama models with a
//! loopback Ollama-style registry that redirects blob downloads, and helpers to find tools.
//!
//! Nothing here is used by the shipped binaries.

pub mod containerd;
pub mod fixtures;
pub mod ollama;
pub mod registry;
pub mod token;
pub mod tools;

pub use fixtures::{ImageSpec, Layer};
pub use registry::TestRegistry;
