//! `airlock/header.json` as the reader takes it once the signature checks out: parse and
//! validate, then what `inspect`, `verify` and `load` compute from it.

use airlock_bundle::header::{
    check_relative, left_out_totals, Header, Target, INDEX_PATH, OCI_LAYOUT_PATH,
};
use airlock_bundle::ollama::ModelName;

pub fn check(data: &[u8]) {
    let Ok(h) = Header::parse(data) else {
        return;
    };
    // A header that parsed re-serialises to canonical bytes that parse to the same value.
    let bytes = h.to_bytes();
    let again = Header::parse(&bytes).expect("a parsed header's own bytes parse");
    assert_eq!(again, h, "header changed in a round trip");
    assert_eq!(again.to_bytes(), bytes, "canonical bytes are not stable");

    // What the reader and `load` rely on without checking again.
    assert_eq!(h.entries[0].path, OCI_LAYOUT_PATH);
    assert_eq!(h.entries[1].path, INDEX_PATH);
    for e in &h.entries[2..] {
        assert_eq!(e.path, e.digest.blob_path(), "blob entry path");
    }
    for m in &h.models {
        let n = ModelName::parse(&m.name).expect("validated model name");
        crate::ollama::assert_safe_name(&n);
        assert_target(&m.target);
    }
    for f in &h.files {
        assert_target(&f.target);
        check_relative(&f.path).expect("validated file path");
        crate::assert_plain_relative(&f.path, "file path");
        let mode = f.mode_bits().expect("validated mode");
        assert!(mode <= 0o777, "mode {mode:o} carries special bits");
    }

    // Sizes a signer chose, added up for `inspect`, `verify` and the delta summary.
    let _ = h.payload_size();
    let _ = left_out_totals(&h.expected_present);
}

fn assert_target(t: &Target) {
    t.validate().expect("validated target");
    if let Target::Path(p) = t {
        let rest = p.strip_prefix('/').expect("absolute target");
        crate::assert_plain_relative(rest, "target path");
    }
}
