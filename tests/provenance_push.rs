//! Provenance through `push`: signatures, attestations and SBOMs written under the conventions cosign and skopeo read.
