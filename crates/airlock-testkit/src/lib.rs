//! Test and demo support shared by `tests/` and `xtask`: a throwaway loopback registry
//! (Debian's `docker-registry`), fixture images generated on the spot (busybox-static layers
//! that print a marker, random layers for benchmarks), generated Ollama models with a
//! loopback Ollama-style registry that redirects blob downloads, images made by the real
//! `docker build` and `podman build`, a throwaway Podman engine, a Docker 26 engine with the
//! containerd image store beside the system's, skopeo 1.18 as an independent cosign signer
//! and verifier, a test PKI for registries serving TLS (and requiring client certificates),
//! provenance fixtures (BuildKit attestations, cosign attachments, OCI 1.1 referrers) pushed
//! by hand, and helpers to find tools.
//!
//! Nothing here is used by the shipped binaries.

pub mod builders;
pub mod containerd;
pub mod cosign;
pub mod distribution;
pub mod docker26;
pub mod fixtures;
pub mod http;
pub mod ollama;
pub mod podman;
pub mod provenance;
pub mod registry;
pub mod skopeo118;
pub mod tls;
pub mod token;
pub mod tools;
pub mod trixie;

pub use cosign::CosignKey;
pub use fixtures::{ImageSpec, Layer};
pub use registry::TestRegistry;
pub use skopeo118::Skopeo118;
