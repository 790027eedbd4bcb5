//! Ollama model names (from specs and signed headers, before they become store paths) and
//! model manifests and configs (from a registry or a local store, as `airlock-pack` reads
//! them). An input that starts with `{` is a manifest, anything else a name.

use airlock_bundle::oci::{AnyManifest, ImageManifest};
use airlock_bundle::ollama::{ModelConfig, ModelName};

pub fn check(data: &[u8]) {
    if data.trim_ascii_start().starts_with(b"{") {
        check_manifest(data);
    } else if let Ok(s) = std::str::from_utf8(data) {
        check_name(s);
    }
}

fn check_name(s: &str) {
    let Ok(n) = ModelName::parse(s) else {
        return;
    };
    assert_safe_name(&n);
    // Displayed in full and as `ollama list` shows it, a name parses back to itself.
    let full = n.to_string();
    assert_eq!(
        ModelName::parse(&full).as_ref(),
        Ok(&n),
        "full form {full:?}"
    );
    let short = n.short();
    assert_eq!(
        ModelName::parse(&short).as_ref(),
        Ok(&n),
        "short form {short:?}"
    );
    assert_eq!(ModelName::parse(&full).unwrap().to_string(), full);
}

/// Every part of the name is one plain path component that is not hidden, so that the
/// manifest path stays inside `manifests/` of the store.
pub fn assert_safe_name(n: &ModelName) {
    for (what, part) in [
        ("host", &n.host),
        ("namespace", &n.namespace),
        ("model", &n.model),
        ("tag", &n.tag),
    ] {
        crate::assert_plain_relative(part, what);
        assert!(
            !part.contains('/') && !part.starts_with('.'),
            "{what} {part:?} of {n}"
        );
    }
    let p = n.manifest_path();
    assert_eq!(p.components().count(), 5, "{p:?}");
    crate::assert_plain_relative(p.to_str().expect("UTF-8 name"), "manifest path");
}

fn check_manifest(data: &[u8]) {
    // An Ollama manifest as `airlock-pack` reads it from a registry or a local store.
    if let Ok(m) = serde_json::from_slice::<ImageManifest>(data) {
        let v = serde_json::to_value(&m).expect("manifest serialises");
        let back: ImageManifest = serde_json::from_value(v.clone()).expect("manifest re-parses");
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            v,
            "manifest round trip"
        );
    }
    // The config's display fields (copied into the signed header).
    if let Ok(c) = serde_json::from_slice::<ModelConfig>(data) {
        let back: ModelConfig =
            serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).expect("config re-parses");
        assert_eq!(back, c);
    }
    // Image manifests and indexes are told apart the same way.
    if let Ok(m) = AnyManifest::parse(data) {
        let _ = m.media_type();
    }
}
