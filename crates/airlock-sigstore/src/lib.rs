//! Provenance checked offline: cosign-format signatures (simple-signing payloads signed by an
//! ECDSA P-256 or Ed25519 key), the `[[verify]]` rules that say which images must carry one
//! and by which key, and the conventions cosign and OCI 1.1 use to attach signatures,
//! attestations and SBOMs to an image in a registry.
//!
//! Both sides use it with the same judgment: `airlock-pack` on what the registry serves when
//! it locks and builds, `airlock-unpack` on what the signed bundle header carries. It does no
//! I/O: callers fetch or read the bytes and pass them in.
//!
//! Its files: `key` (public keys and their fingerprints), `payload` (the simple-signing
//! document), `cosign` (tags, media types, annotations, the signatures in a signature
//! manifest), `pattern` (which repositories a rule covers), `judge` (does a set of signatures
//! verify an image under a key, and if not, what was found instead).

pub mod cosign;
mod judge;
mod key;
mod pattern;
pub mod payload;
pub mod sbom;

pub use judge::{judge, Finding, Judgment, SignatureInput};
pub use key::{KeyError, PublicKey, MAX_KEY_SIZE};
pub use pattern::{PatternError, RepoPattern};
