//! Provenance on the gap host: the policy's `[[verify]]` rules at verify, load and push, and `inspect --provenance` / `--sbom`.
