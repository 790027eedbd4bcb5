//! Where a bundle's images and models land in the target registry: the source reference's
//! repository path without its registry host, under an optional `--prefix`.
//!
//! `docker.io/library/busybox:1.36`           → `<prefix>library/busybox:1.36`
//! `registry.ollama.ai/library/llama3:8b`     → `<prefix>library/llama3:8b`
//! `hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M` → `<prefix>bartowski/llama-3.2-1b-gguf:Q4_K_M`
//!
//! Registries only take lowercase repository names; Ollama compares model names without
//! regard to case, so a model's namespace and name are lowercased (tags keep their case).

use airlock_bundle::ollama::ModelName;
use airlock_bundle::ImageRef;

/// A repository and what to tag in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub repository: String,
    /// `None` for a reference pinned by digest only: pushed by digest, no tag.
    pub tag: Option<String>,
}

impl Destination {
    /// `HOST:PORT/repo:tag` (or `@digest` when untagged).
    pub fn display(&self, registry: &str, digest: &airlock_bundle::Digest) -> String {
        match &self.tag {
            Some(t) => format!("{registry}/{}:{t}", self.repository),
            None => format!("{registry}/{}@{digest}", self.repository),
        }
    }
}

/// Checks a repository path against the distribution grammar (lowercase components of
/// `[a-z0-9]` joined by `.`, `_`, `__` or dashes, separated by `/`).
pub fn check_repository(repo: &str) -> Result<(), String> {
    // The reference parser owns the grammar; a host in front keeps it from being read as
    // Docker Hub shorthand.
    match ImageRef::parse(&format!("registry.invalid/{repo}:t")) {
        Ok(r) if r.repository == repo => Ok(()),
        Ok(_) => Err(format!("{repo:?} is not a valid repository path")),
        Err(e) => Err(format!(
            "{repo:?} is not a valid repository path: {}",
            e.reason
        )),
    }
}

/// Validates `--prefix` and returns it with exactly one trailing `/` (or empty).
pub fn normalize_prefix(prefix: Option<&str>) -> Result<String, String> {
    let Some(p) = prefix.filter(|p| !p.is_empty()) else {
        return Ok(String::new());
    };
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if trimmed.is_empty() || trimmed.starts_with('/') {
        return Err(format!(
            "--prefix {p:?}: expected a relative repository path such as team/ or mirror/gap/"
        ));
    }
    check_repository(trimmed).map_err(|e| format!("--prefix {p:?}: {e}"))?;
    Ok(format!("{trimmed}/"))
}

/// Where an image reference from a bundle goes.
pub fn image_destination(reference: &str, prefix: &str) -> Result<Destination, String> {
    let r = ImageRef::parse(reference).map_err(|e| format!("{reference}: {}", e.reason))?;
    let repository = format!("{prefix}{}", r.repository);
    check_repository(&repository)?;
    Ok(Destination {
        repository,
        tag: r.tag,
    })
}

/// Where an Ollama model goes: `<prefix><namespace>/<model>:<tag>`, lowercased.
pub fn model_destination(name: &str, prefix: &str) -> Result<Destination, String> {
    let n = ModelName::parse(name).map_err(|e| e.to_string())?;
    let repository = format!("{prefix}{}", n.repository().to_ascii_lowercase());
    check_repository(&repository)?;
    Ok(Destination {
        repository,
        tag: Some(n.tag),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(repo: &str, tag: &str) -> Destination {
        Destination {
            repository: repo.into(),
            tag: Some(tag.into()),
        }
    }

    #[test]
    fn images_lose_their_registry_host_and_gain_the_prefix() {
        assert_eq!(
            image_destination("docker.io/library/busybox:1.36", ""),
            Ok(dest("library/busybox", "1.36"))
        );
        assert_eq!(
            image_destination("busybox", "mirror/"),
            Ok(dest("mirror/library/busybox", "latest"))
        );
        assert_eq!(
            image_destination("127.0.0.1:5000/e2e/hello:v1", "gap/x/"),
            Ok(dest("gap/x/e2e/hello", "v1"))
        );
        let d = airlock_bundle::Digest::of(b"m");
        let pinned = image_destination(&format!("ghcr.io/a/b@{d}"), "").unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.display("h:1", &d), format!("h:1/a/b@{d}"));
    }

    #[test]
    fn models_keep_namespace_and_tag_and_are_lowercased() {
        assert_eq!(
            model_destination("registry.ollama.ai/library/llama3:8b", ""),
            Ok(dest("library/llama3", "8b"))
        );
        assert_eq!(
            model_destination("llama3", "p/"),
            Ok(dest("p/library/llama3", "latest"))
        );
        assert_eq!(
            model_destination("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", ""),
            Ok(dest("bartowski/llama-3.2-1b-instruct-gguf", "Q4_K_M"))
        );
    }

    #[test]
    fn prefixes_are_validated_and_normalised() {
        assert_eq!(normalize_prefix(None).unwrap(), "");
        assert_eq!(normalize_prefix(Some("")).unwrap(), "");
        assert_eq!(normalize_prefix(Some("team")).unwrap(), "team/");
        assert_eq!(normalize_prefix(Some("team/gap/")).unwrap(), "team/gap/");
        for bad in [
            "/abs/", "/", "Team/", "a//b/", "../x/", "a/./b", "a b/", "-x/", "x//",
        ] {
            assert!(normalize_prefix(Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(check_repository("library/busybox").is_ok());
        assert!(check_repository("library/BusyBox").is_err());
        assert!(check_repository("a/../b").is_err());
    }
}
