//! The sums file (`NAME.sums`), read before any signature is checked: whatever it accepts
//! names plain files in its own directory, each once, and writes back to the same sums.

use std::collections::HashSet;
use std::path::Path;

use airlock_bundle::parts::Sums;

fn parse(bytes: &[u8]) -> Option<Sums> {
    Sums::parse(bytes, Path::new("fuzz.airlock.sums")).ok()
}

pub fn check(data: &[u8]) {
    let Some(sums) = parse(data) else {
        return;
    };
    assert!(
        !sums.lines.is_empty(),
        "accepted a sums file listing no part"
    );
    let mut seen = HashSet::new();
    for (name, _) in &sums.lines {
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "accepted part name {name:?}"
        );
        assert!(!name.contains('\n'), "accepted part name {name:?}");
        assert!(
            !airlock_bundle::text::has_controls(name),
            "accepted part name {name:?}"
        );
        assert!(seen.insert(name), "accepted {name:?} twice");
    }
    let written = sums.to_text();
    assert_eq!(
        parse(written.as_bytes()).as_ref(),
        Some(&sums),
        "written as {written:?}"
    );
}
