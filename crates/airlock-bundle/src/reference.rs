//! Image references, parsed and normalised the way docker does (`busybox` →
//! `docker.io/library/busybox:latest`), so that a spec, a lock, a bundle header and an engine
//! tag all name an image the same way.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

pub const DOCKER_HUB: &str = "docker.io";
/// The longest input looked at.
const MAX_LEN: usize = 4096;
/// The longest `registry/repository`, as Docker's reference grammar has it.
const MAX_NAME_LEN: usize = 255;

/// A fully normalised image reference: registry, repository path, and a tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct RefParseError {
    pub input: String,
    pub reason: String,
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_tag(s: &str) -> bool {
    // [\w][\w.-]{0,127}
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

fn is_domain(s: &str) -> bool {
    // host[:port], host made of dot-separated labels of [A-Za-z0-9-], or an IPv6 literal.
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || s.starts_with('[') => {
            if h.starts_with('[') && !h.ends_with(']') {
                (s, None)
            } else {
                (h, Some(p))
            }
        }
        _ => (s, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b':');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl ImageRef {
    /// Parses a docker-style reference and normalises it.
    pub fn parse(input: &str) -> Result<Self, RefParseError> {
        let err = |reason: &str| RefParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() || input.len() > MAX_LEN {
            return Err(err("empty or too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (input, None),
        };
        // A tag is split off only if the last ':' comes after the last '/'.
        let (name, tag) = match (rest.rfind(':'), rest.rfind('/')) {
            (Some(c), s) if s.is_none_or(|s| c > s) => (&rest[..c], Some(&rest[c + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !is_tag(t) {
                return Err(err("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !is_domain(first) {
                    return Err(err("invalid registry host"));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if path.is_empty() {
            return Err(err("empty repository"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase"));
        }
        if !path.split('/').all(is_path_component) {
            return Err(err("invalid repository path"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        let r = ImageRef {
            registry,
            repository,
            tag,
            digest,
        };
        // Docker's limit on a repository name, applied to the normalised name: that is what
        // locks and headers store and parse again, with a tag or a digest added.
        if r.name().len() > MAX_NAME_LEN {
            return Err(err("the repository name is longer than 255 characters"));
        }
        Ok(r)
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The reference as a tag an engine can carry (`registry/repo:tag`), if it has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The same repository pinned to `digest`, dropping the tag.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RefParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `image_ref` fuzz target: a long name parsed, but its normalised form
    /// (`docker.io/library/…:latest`), which locks and headers store, or the same pinned to a
    /// digest, was over the length limit and did not parse back.
    #[test]
    fn every_form_of_a_long_reference_parses_back() {
        let d = Digest::of(b"x");
        for len in [200, 237, 238, 250, 255, 4000, 4080] {
            let Ok(r) = ImageRef::parse(&"a".repeat(len)) else {
                continue;
            };
            for form in [r.to_string(), r.name(), r.with_digest(d).to_string()] {
                assert!(
                    ImageRef::parse(&form).is_ok(),
                    "length {len}: {} bytes do not parse back",
                    form.len()
                );
            }
        }
        // docker.io/library/ + 237 = 255.
        assert!(ImageRef::parse(&"a".repeat(237)).is_ok());
        assert!(ImageRef::parse(&"a".repeat(238)).is_err());
    }

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            norm("prom/prometheus:v2.53.0"),
            "docker.io/prom/prometheus:v2.53.0"
        );
        assert_eq!(
            norm("index.docker.io/library/redis"),
            "docker.io/library/redis:latest"
        );
        assert_eq!(
            norm("ghcr.io/open-webui/open-webui:v0.6.5"),
            "ghcr.io/open-webui/open-webui:v0.6.5"
        );
        assert_eq!(
            norm("127.0.0.1:5000/demo/hello:v1"),
            "127.0.0.1:5000/demo/hello:v1"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/a/b/c"), "localhost:5000/a/b/c:latest");
        let d = Digest::of(b"x");
        assert_eq!(
            norm(&format!("alpine@{d}")),
            format!("docker.io/library/alpine@{d}")
        );
        assert_eq!(
            norm(&format!("alpine:3@{d}")),
            format!("docker.io/library/alpine:3@{d}")
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-bad",
            "a//b",
            "-a/b",
            "a/b/",
            "host:port/x",
            "busybox@sha256:short",
            "a/../b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tag_split_respects_port() {
        let r = ImageRef::parse("127.0.0.1:5000/library/tiny").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "library/tiny");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }
}
