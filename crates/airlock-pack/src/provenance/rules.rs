//! The spec's `[[verify]]` rules, loaded: each repository pattern parsed and each key file
//! read (bounded) and parsed, so that a bad key is a usage error naming the file before any
//! registry is asked anything.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use airlock_bundle::spec::Spec;
use airlock_bundle::ImageRef;
use airlock_sigstore::{PublicKey, RepoPattern};

use crate::PackError;

/// One rule: images whose repository `pattern` matches must (or, without `require`, may)
/// carry a cosign signature by `key`.
#[derive(Clone)]
pub(crate) struct Rule {
    pub pattern: RepoPattern,
    pub key: PublicKey,
    /// The key file as the rule resolved it (relative to the spec's directory).
    pub key_path: PathBuf,
    pub require: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("pattern", &self.pattern)
            .field("key", &self.key.fingerprint())
            .field("key_path", &self.key_path)
            .field("require", &self.require)
            .finish()
    }
}

/// Every rule of a spec, in spec order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules(Vec<Rule>);

impl Rules {
    pub fn load(spec: &Spec, spec_path: &Path) -> Result<Rules, PackError> {
        let dir = spec_path.parent().unwrap_or(Path::new("."));
        let mut rules = Vec::new();
        for (i, v) in spec.verify.iter().enumerate() {
            let pattern = RepoPattern::parse(&v.pattern).map_err(|e| {
                PackError::Usage(format!(
                    "{}: [[verify]] #{}: {e}",
                    spec_path.display(),
                    i + 1
                ))
            })?;
            let key_path = dir.join(&v.key);
            let key = read_key(&key_path)?;
            rules.push(Rule {
                pattern,
                key,
                key_path,
                require: v.require,
            });
        }
        Ok(Rules(rules))
    }

    /// The rules covering `r` (by its normalised repository: a rule covers every tag).
    pub fn matching(&self, r: &ImageRef) -> Vec<&Rule> {
        let name = r.name();
        self.0.iter().filter(|x| x.pattern.matches(&name)).collect()
    }
}

/// Reads and parses a PEM public key, refusing a file larger than any key before reading
/// it whole.
fn read_key(path: &Path) -> Result<PublicKey, PackError> {
    let input = |source| PackError::Input {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(input)?;
    let mut bytes = Vec::new();
    // One byte more than any key, so that `from_pem` can say the file is too large.
    file.take(airlock_sigstore::MAX_KEY_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(input)?;
    PublicKey::from_pem(&bytes).map_err(|source| PackError::VerifyKey {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_or_oversized_key_file_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("s.toml");
        let write_spec = |key: &str| {
            std::fs::write(
                &spec,
                format!("name = \"s\"\n[[verify]]\nmatch = \"*\"\nkey = \"{key}\"\n"),
            )
            .unwrap();
            Spec::load(&spec).unwrap()
        };
        std::fs::write(dir.path().join("junk.pub"), "not a key").unwrap();
        let e = Rules::load(&write_spec("junk.pub"), &spec).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::USAGE);
        assert!(e.to_string().contains("junk.pub"), "{e}");
        std::fs::write(
            dir.path().join("big.pub"),
            vec![b'A'; airlock_sigstore::MAX_KEY_SIZE + 10],
        )
        .unwrap();
        let e = Rules::load(&write_spec("big.pub"), &spec).unwrap_err();
        assert!(
            e.to_string().contains("big.pub") && e.to_string().contains("larger"),
            "{e}"
        );
        let e = Rules::load(&write_spec("missing.pub"), &spec).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::USAGE);
        assert!(e.to_string().contains("missing.pub"), "{e}");
    }
}
