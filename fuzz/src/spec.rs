//! The bundle spec (`manifests/*.toml`): a spec that loads must never make the accessors
//! that trust the load (`expect("validated at load")`) panic, and every name in it is
//! normalised so that it parses back to itself.

use std::path::Path;

use airlock_bundle::header::{check_relative, Target};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::spec::Spec;
use airlock_bundle::ImageRef;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = Spec::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    assert!(!spec.name.is_empty() && !spec.platforms.is_empty());
    for r in spec.image_refs() {
        assert_eq!(ImageRef::parse(&r.to_string()).as_ref(), Ok(&r));
    }
    for m in spec.model_wants() {
        assert_eq!(ModelName::parse(&m.name.to_string()).as_ref(), Ok(&m.name));
        crate::ollama::assert_safe_name(&m.name);
        assert_target(&m.target);
    }
    for f in spec.files_wants(Path::new("/spec-dir")) {
        assert_target(&f.target);
        if !f.dest.is_empty() {
            check_relative(&f.dest).expect("validated dest");
            crate::assert_plain_relative(&f.dest, "dest");
        }
    }
    let _ = spec.insecure_registries();
}

fn assert_target(t: &Target) {
    t.validate().expect("validated target");
    if let Target::Path(p) = t {
        crate::assert_plain_relative(p.strip_prefix('/').expect("absolute"), "target");
    }
}
