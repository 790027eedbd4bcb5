//! Which images a `[[verify]]` rule covers: `"*"` (every image), `"docker.io/grafana/*"` (a
//! prefix of the normalised repository name, `registry/repository`), or one repository.
//! The same syntax as the gap-host policy's `images` patterns, so an operator reads one
//! language on both sides.

use airlock_bundle::ImageRef;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPattern {
    Any,
    /// Names starting with this text.
    Prefix(String),
    /// Exactly this normalised repository.
    Exact(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("match {pattern:?}: {problem}")]
pub struct PatternError {
    pub pattern: String,
    pub problem: String,
}

impl RepoPattern {
    pub fn parse(s: &str) -> Result<RepoPattern, PatternError> {
        let err = |problem: &str| PatternError {
            pattern: s.to_string(),
            problem: problem.to_string(),
        };
        if s == "*" {
            return Ok(RepoPattern::Any);
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.contains('*') || prefix.is_empty() {
                return Err(err("a '*' may only end the pattern"));
            }
            if prefix.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(err("repository names are lowercase"));
            }
            return Ok(RepoPattern::Prefix(prefix.to_string()));
        }
        if s.contains('*') {
            return Err(err("a '*' may only end the pattern"));
        }
        let r = ImageRef::parse(s).map_err(|e| err(&e.to_string()))?;
        if r.digest.is_some() || s.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(err(
                "name a repository without a tag or digest: a rule covers every tag",
            ));
        }
        Ok(RepoPattern::Exact(r.name()))
    }

    /// Whether the normalised repository name `repo` (`registry/repository`) is covered.
    pub fn matches(&self, repo: &str) -> bool {
        match self {
            RepoPattern::Any => true,
            RepoPattern::Prefix(p) => repo.starts_with(p.as_str()),
            RepoPattern::Exact(e) => repo == e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = RepoPattern::parse("docker.io/grafana/*").unwrap();
        assert!(p.matches("docker.io/grafana/grafana"));
        assert!(!p.matches("docker.io/library/busybox"));
        let e = RepoPattern::parse("busybox").unwrap();
        assert_eq!(e, RepoPattern::Exact("docker.io/library/busybox".into()));
        assert!(RepoPattern::parse("*").unwrap().matches("x/y"));
        assert!(RepoPattern::parse("a*b").is_err());
        assert!(RepoPattern::parse("*b*").is_err());
        assert!(RepoPattern::parse("busybox:1.36")
            .unwrap_err()
            .problem
            .contains("tag"));
        assert!(RepoPattern::parse("127.0.0.1:5000/a").is_ok());
    }
}
