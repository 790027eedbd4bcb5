//! The sums file (`NAME.sums`), read before any signature is checked: whatever it accepts
//! names plain files in its own directory, each once, and writes back to the same sums.
//!
//! The parser is being rewritten (parsed once, bounded); when it moves, only the call in
//! [`parse`] changes.

use std::collections::HashSet;
use std::path::Path;

use airlock_bundle::parts::Sums;

fn parse(text: &str) -> Option<Sums> {
    Sums::parse(text, Path::new("fuzz.airlock.sums")).ok()
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(sums) = parse(text) else {
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
        // Pending (fuzz/pending/README.md): control characters are accepted today, and a
        // trailing CR does not survive the round trip below.
        assert!(
            !crate::pending_checks() || !name.chars().any(char::is_control),
            "accepted part name {name:?}"
        );
        assert!(seen.insert(name), "accepted {name:?} twice");
    }
    if sums.lines.iter().any(|(n, _)| n.contains('\r')) {
        return;
    }
    let written = sums.to_text();
    assert_eq!(
        parse(&written).as_ref(),
        Some(&sums),
        "written as {written:?}"
    );
}
