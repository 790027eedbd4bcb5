//! The lock file (`SPEC.lock`): a lock that loads writes back (`to_toml`) to text that
//! loads to the same lock, and comparing it with a spec never panics.

use std::path::Path;
use std::sync::OnceLock;

use airlock_bundle::lock::{Lock, LOCK_VERSION};
use airlock_bundle::spec::Spec;

/// A spec with an image, a model and files, to compare every lock with.
const SPEC: &str = r#"
name = "fuzz"
[[image]]
ref = "busybox"
[[image]]
ref = "127.0.0.1:5000/e2e/hello:v1"
[[model]]
name = "tiny"
[[files]]
source = "conf"
path = "/srv/conf"
"#;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(lock) = Lock::from_toml(text, Path::new("fuzz.lock")) else {
        return;
    };
    assert_eq!(lock.version, LOCK_VERSION);
    let written = lock.to_toml();
    let back = Lock::from_toml(&written, Path::new("round trip"))
        .unwrap_or_else(|e| panic!("written lock does not load: {e}\n{written}"));
    assert_eq!(back, lock, "lock round trip");
    static SPEC_PARSED: OnceLock<Spec> = OnceLock::new();
    let spec = SPEC_PARSED.get_or_init(|| Spec::from_toml(SPEC, Path::new("fuzz.toml")).unwrap());
    for d in lock.drift_from(spec) {
        let _ = d.to_string();
    }
    let _ = lock.image_refs();
}
