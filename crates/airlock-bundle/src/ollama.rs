//! Ollama models: their names (`llama3` → `registry.ollama.ai/library/llama3:latest`) with
//! Ollama's character rules, the media types of their layers, and the on-disk store layout
//! (`models/manifests/<host>/<ns>/<model>/<tag>`, `models/blobs/sha256-<hex>`) that
//! `ollama serve` reads. Names come from specs and from bundle headers; both are checked
//! here before any of them becomes part of a path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Digest;

pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";
/// The volume the Ollama image mounts at `/root/.ollama` in the usual compose files.
pub const DEFAULT_VOLUME: &str = "ollama-data";

/// Media type prefix of every Ollama layer (`…model`, `…template`, `…license`, …).
pub const LAYER_PREFIX: &str = "application/vnd.ollama.image.";
pub const MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// A fully qualified model name: `host/namespace/model:tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model name {name:?}: {why}")]
pub struct ModelNameError {
    pub name: String,
    pub why: String,
}

fn check_part(part: &str, what: &str, max: usize, extra: &[u8]) -> Result<(), String> {
    let b = part.as_bytes();
    if b.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if b.len() > max {
        return Err(format!("the {what} is longer than {max} characters"));
    }
    if !(b[0].is_ascii_alphanumeric() || b[0] == b'_') {
        return Err(format!(
            "the {what} {part:?} must start with a letter, a digit or '_'"
        ));
    }
    if let Some(c) = b
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == &b'_' || extra.contains(c)))
    {
        return Err(format!(
            "the {what} {part:?} contains {:?}; allowed are letters, digits, '_' and {:?}",
            *c as char,
            String::from_utf8_lossy(extra)
        ));
    }
    Ok(())
}

impl ModelName {
    /// Parses a name the way Ollama does: the tag is split off only when the last `:` comes
    /// after the last `/` (so `host:port/ns/model` keeps its port), and missing parts take
    /// their defaults.
    pub fn parse(s: &str) -> Result<ModelName, ModelNameError> {
        let err = |why: String| ModelNameError {
            name: s.to_string(),
            why,
        };
        let (path, tag) = match (s.rfind(':'), s.rfind('/')) {
            (Some(c), slash) if slash.is_none_or(|sl| c > sl) => (&s[..c], &s[c + 1..]),
            _ => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) =
            match parts.as_slice() {
                [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
                [n, m] => (DEFAULT_HOST, *n, *m),
                [h, n, m] => (*h, *n, *m),
                _ => return Err(err(
                    "expected [host/][namespace/]model[:tag] (at most three '/'-separated parts)"
                        .into(),
                )),
            };
        check_part(host, "host", 350, b"-.:").map_err(err)?;
        check_part(namespace, "namespace", 80, b"-").map_err(err)?;
        check_part(model, "model", 80, b"-.").map_err(err)?;
        check_part(tag, "tag", 80, b"-.").map_err(err)?;
        Ok(ModelName {
            host: host.into(),
            namespace: namespace.into(),
            model: model.into(),
            tag: tag.into(),
        })
    }

    /// The name as `ollama list` shows it: default host and namespace left out.
    pub fn short(&self) -> String {
        if self.host != DEFAULT_HOST {
            return self.to_string();
        }
        if self.namespace != DEFAULT_NAMESPACE {
            return format!("{}/{}:{}", self.namespace, self.model, self.tag);
        }
        format!("{}:{}", self.model, self.tag)
    }

    /// `namespace/model`, the repository path at the registry.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.namespace, self.model)
    }

    /// Where the manifest lives relative to the models directory. Safe to join: every part
    /// passed [`ModelName::parse`] (no `/`, no leading `.`).
    pub fn manifest_path(&self) -> PathBuf {
        Path::new("manifests")
            .join(&self.host)
            .join(&self.namespace)
            .join(&self.model)
            .join(&self.tag)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
    }
}

impl FromStr for ModelName {
    type Err = ModelNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::parse(s)
    }
}

/// `blobs/sha256-<hex>`, relative to the models directory.
pub fn blob_path(d: &Digest) -> PathBuf {
    Path::new("blobs").join(format!("sha256-{}", d.hex()))
}

/// The models directory Ollama uses on this machine: `$OLLAMA_MODELS`, else
/// `~/.ollama/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("OLLAMA_MODELS").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".ollama/models")
}

/// The parts of an Ollama config blob worth showing (`inspect`); `airlock-pack` copies them
/// into the signed header so that `inspect` needs to read nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub model_format: String,
    #[serde(default)]
    pub model_family: String,
    #[serde(default)]
    pub model_type: String,
    #[serde(default)]
    pub file_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_ollamas_defaults() {
        for (input, full, short) in [
            (
                "llama3",
                "registry.ollama.ai/library/llama3:latest",
                "llama3:latest",
            ),
            (
                "codellama:7b",
                "registry.ollama.ai/library/codellama:7b",
                "codellama:7b",
            ),
            ("me/m:q4_0", "registry.ollama.ai/me/m:q4_0", "me/m:q4_0"),
            (
                "127.0.0.1:5000/library/tiny:latest",
                "127.0.0.1:5000/library/tiny:latest",
                "127.0.0.1:5000/library/tiny:latest",
            ),
            (
                "127.0.0.1:5000/library/tiny",
                "127.0.0.1:5000/library/tiny:latest",
                "127.0.0.1:5000/library/tiny:latest",
            ),
            (
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ),
        ] {
            let n = ModelName::parse(input).unwrap();
            assert_eq!(n.to_string(), full, "{input}");
            assert_eq!(n.short(), short, "{input}");
            assert_eq!(ModelName::parse(full).unwrap(), n);
        }
        let n = ModelName::parse("127.0.0.1:5000/library/tiny:v1").unwrap();
        assert_eq!(
            n.manifest_path(),
            Path::new("manifests/127.0.0.1:5000/library/tiny/v1")
        );
        assert_eq!(n.repository(), "library/tiny");
    }

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "x/../y",
            "a/b/c/d",
            "/abs",
            "llama3:..",
            "llama3:.hidden",
            "ns.dot/model",
            "a b",
            "model:tag/x",
            "h/n/",
            "x\0y",
            "ünïcode",
        ] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = "m".repeat(81);
        assert!(ModelName::parse(&long).is_err());
    }
}
