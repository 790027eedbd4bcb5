//! The compose stacks of a header (format version 5): the records `airlock-pack` writes for
//! a spec's `[[compose]]` entries and the rules a reader holds them to. A stack's compose
//! file is an ordinary `files` record; this only names it as one, with its services.

use serde::{Deserialize, Serialize};

use super::{Header, Target};

/// The first version whose headers may name compose stacks.
pub const COMPOSE_VERSION: u32 = 5;
/// At most this many compose stacks per bundle, and services per stack.
pub const MAX_COMPOSE_STACKS: usize = 64;
pub const MAX_COMPOSE_SERVICES: usize = 1024;

/// A compose stack the bundle carries: its compose file is the `files` record at `target`
/// (always a path) and `path`, and every service's image is one of `images`. `load` ends
/// with the `docker compose -f … up -d` line that starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeRecord {
    pub target: Target,
    /// The compose file, relative to the target.
    pub path: String,
    pub services: Vec<ComposeService>,
}

impl ComposeRecord {
    /// The compose file's absolute path on the host.
    pub fn host_path(&self) -> String {
        match &self.target {
            Target::Path(p) => format!("{p}/{}", self.path),
            Target::Volume(v) => format!("volume {v}: {}", self.path),
        }
    }
}

/// One service of a compose stack and the image (normalised reference) it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    pub name: String,
    pub image: String,
}

/// Compose's service name rule: letters, digits, `.`, `_`, `-`, starting with a letter or
/// digit (bounded here).
pub fn check_service_name(n: &str) -> Result<(), String> {
    let b = n.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name \"{}\" must use letters, digits, '.', '_', '-' and start with a letter or digit",
            crate::text::Escaped(n)
        ))
    }
}

/// Each compose stack names a carried file on a host path, once, and services whose
/// images the bundle carries; none before [`COMPOSE_VERSION`].
pub(crate) fn validate(h: &Header) -> Result<(), String> {
    let bad = |m: String| Err(m);
    if h.compose.is_empty() {
        return Ok(());
    }
    if h.version < COMPOSE_VERSION {
        return bad(format!(
            "compose stacks need format version {COMPOSE_VERSION}, the header says {}",
            h.version
        ));
    }
    if h.compose.len() > MAX_COMPOSE_STACKS {
        return bad(format!("more than {MAX_COMPOSE_STACKS} compose stacks"));
    }
    let images: std::collections::HashSet<&str> =
        h.images.iter().map(|i| i.reference.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    for c in &h.compose {
        let what = format!("compose file {:?} for {}", c.path, c.target);
        if !matches!(c.target, Target::Path(_)) {
            return bad(format!("{what}: a compose file goes to a host path"));
        }
        if !seen.insert((&c.target, &c.path)) {
            return bad(format!("{what} is listed twice"));
        }
        let carried = h
            .files
            .iter()
            .any(|f| f.target == c.target && f.path == c.path && f.digest.is_some());
        if !carried {
            return bad(format!("{what}: no such file is carried"));
        }
        if c.services.len() > MAX_COMPOSE_SERVICES {
            return bad(format!("{what}: more than {MAX_COMPOSE_SERVICES} services"));
        }
        let mut names = std::collections::HashSet::new();
        for s in &c.services {
            if let Err(e) = check_service_name(&s.name) {
                return bad(format!("{what}: {e}"));
            }
            if !names.insert(&s.name) {
                return bad(format!("{what}: service {} is listed twice", s.name));
            }
            if !images.contains(s.image.as_str()) {
                return bad(format!(
                    "{what}: service {} runs {}, which the bundle lacks",
                    s.name, s.image
                ));
            }
        }
    }
    Ok(())
}
