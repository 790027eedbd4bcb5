//! Image references from specs, locks and signed headers: a reference that parses is
//! normalised, and its display parses back to the same reference.

use airlock_bundle::{Digest, ImageRef};

pub fn check(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = ImageRef::parse(s) else {
        return;
    };
    let shown = r.to_string();
    assert_eq!(
        ImageRef::parse(&shown).as_ref(),
        Ok(&r),
        "display {shown:?}"
    );
    assert_eq!(ImageRef::parse(&r.name()).unwrap().name(), r.name());
    if let Some(t) = r.tagged() {
        let back = ImageRef::parse(&t).expect("tagged form parses");
        assert_eq!((back.name(), back.tag), (r.name(), r.tag.clone()));
    }
    let pinned = r.with_digest(Digest::of(data));
    assert_eq!(ImageRef::parse(&pinned.to_string()), Ok(pinned));
    // Normalised: never the legacy Docker Hub names, a tag or a digest always present.
    assert!(r.registry != "index.docker.io" && r.registry != "registry-1.docker.io");
    assert!(r.tag.is_some() || r.digest.is_some());
    assert!(!r.repository.is_empty() && !r.repository.contains("//"));
}
