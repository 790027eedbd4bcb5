//! The policy file's TOML as written (unknown keys refused), and what it parses into: the
//! [`Pattern`]s of each category (host path prefixes, volume names, image repositories,
//! model names, models directories, each validated), a [`Category`] per key, and the
//! [`Rules`] of the top level or of one `[signer.NAME]` section. Nothing here reads a file or
//! looks at a bundle.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_bundle::header::{check_relative, Target};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::ImageRef;
use serde::Deserialize;

/// One category's or section's keys, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SectionToml {
    pub(super) files: Option<Vec<String>>,
    pub(super) volumes: Option<Vec<String>>,
    pub(super) images: Option<Vec<String>>,
    pub(super) models: Option<Vec<String>>,
    pub(super) models_dirs: Option<Vec<String>>,
    pub(super) max_mode: Option<ModeToml>,
    pub(super) max_age: Option<String>,
}

/// The whole file: the top-level rules and the per-key sections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyToml {
    pub(super) files: Option<Vec<String>>,
    pub(super) volumes: Option<Vec<String>>,
    pub(super) images: Option<Vec<String>>,
    pub(super) models: Option<Vec<String>>,
    pub(super) models_dirs: Option<Vec<String>>,
    pub(super) max_mode: Option<ModeToml>,
    pub(super) max_age: Option<String>,
    #[serde(default)]
    pub(super) signer: BTreeMap<String, SectionToml>,
    /// `[[verify]]`: upstream signatures required (see `verify`).
    #[serde(default)]
    pub(super) verify: Vec<super::verify::VerifyToml>,
}

/// `max_mode = "0755"`, or TOML's own octal `0o755`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ModeToml {
    Text(String),
    Number(i64),
}

/// One allowed name or path, as the policy writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    /// `"*"`.
    Any,
    /// Exactly this (a normalised repository, a volume name, a models directory).
    Exact(String),
    /// A trailing `*`: names starting with this text.
    Prefix(String),
    /// A host path prefix, compared component by component.
    Under(String),
    /// A model, normalised: `host/namespace/model`, and the tag if the pattern named one.
    Model { repo: String, tag: Option<String> },
}

impl Pattern {
    pub(super) fn matches(&self, subject: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => subject == e,
            Pattern::Prefix(p) => subject.starts_with(p.as_str()),
            Pattern::Under(p) => path_under(subject, p),
            Pattern::Model { .. } => false,
        }
    }

    pub(super) fn matches_model(&self, m: &ModelName) -> bool {
        let repo = format!("{}/{}/{}", m.host, m.namespace, m.model).to_lowercase();
        match self {
            Pattern::Model { repo: r, tag } => {
                *r == repo && tag.as_ref().is_none_or(|t| *t == m.tag.to_lowercase())
            }
            other => other.matches(&m.to_string().to_lowercase()),
        }
    }
}

/// Whether host path `p` is `prefix` or lies below it. Both are absolute and normalised
/// (the header's paths by the format's validation, the policy's by [`parse_path`]), so a
/// textual comparison at a component boundary is exact: `/opt/llm` does not cover
/// `/opt/llm-stack`.
pub(super) fn path_under(p: &str, prefix: &str) -> bool {
    prefix == "/"
        || p == prefix
        || (p.starts_with(prefix) && p.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// An absolute, normalised host path (`/` itself allowed only where `allow_root`). Paths
/// are not globs: a `*` in one is taken for a misunderstanding, not a file name.
pub(super) fn parse_path(s: &str, allow_root: bool) -> Result<String, String> {
    if s == "/" && allow_root {
        return Ok(s.into());
    }
    if s.contains('*') {
        return Err(format!(
            "{s:?}: paths are prefixes, not patterns (\"*\" alone allows every path)"
        ));
    }
    let rest = s
        .strip_prefix('/')
        .ok_or_else(|| format!("{s:?} is not an absolute path"))?;
    check_relative(rest).map_err(|e| {
        format!("{s:?} is not a normalised absolute path ({e}; write it without '.', '..', '//' or a trailing '/')")
    })?;
    Ok(s.into())
}

/// `"*"`, `"text*"` or `"text"`; a `*` anywhere else is a mistake, not a pattern.
pub(super) fn split_glob(s: &str) -> Result<Option<&str>, String> {
    match s.strip_suffix('*') {
        Some(p) if p.contains('*') => Err(format!(
            "{s:?}: '*' may only end a pattern (or stand alone for anything)"
        )),
        Some(p) => Ok(Some(p)),
        None if s.contains('*') => Err(format!(
            "{s:?}: '*' may only end a pattern (or stand alone for anything)"
        )),
        None => Ok(None),
    }
}

/// Whether a name as written names a tag: the last `:` comes after the last `/` (the rule
/// docker and Ollama split by).
pub(super) fn names_tag(s: &str) -> bool {
    matches!((s.rfind(':'), s.rfind('/')), (Some(c), slash) if slash.is_none_or(|sl| c > sl))
}

pub(super) fn parse_files(s: &str) -> Result<Pattern, String> {
    if s == "*" {
        return Ok(Pattern::Any);
    }
    parse_path(s, true).map(Pattern::Under)
}

pub(super) fn parse_models_dir(s: &str) -> Result<Pattern, String> {
    if s == "*" {
        return Ok(Pattern::Any);
    }
    parse_path(s, false).map(Pattern::Exact)
}

pub(super) fn parse_volume(s: &str) -> Result<Pattern, String> {
    match split_glob(s)? {
        Some("") => Ok(Pattern::Any),
        Some(p) => {
            let ok = p
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
            if !ok {
                return Err(format!("{s:?} cannot match any volume name"));
            }
            Ok(Pattern::Prefix(p.into()))
        }
        None => {
            Target::Volume(s.into()).validate()?;
            Ok(Pattern::Exact(s.into()))
        }
    }
}

pub(super) fn parse_image(s: &str) -> Result<Pattern, String> {
    match split_glob(s)? {
        Some("") => Ok(Pattern::Any),
        Some(p) => Ok(Pattern::Prefix(p.into())),
        None => {
            if s.contains('@') || names_tag(s) {
                return Err(format!(
                    "{s:?}: images are allowed by repository; leave out the tag or digest"
                ));
            }
            let r = ImageRef::parse(s).map_err(|e| e.to_string())?;
            Ok(Pattern::Exact(r.name()))
        }
    }
}

pub(super) fn parse_model(s: &str) -> Result<Pattern, String> {
    match split_glob(s)? {
        Some("") => Ok(Pattern::Any),
        Some(p) => Ok(Pattern::Prefix(p.to_lowercase())),
        None => {
            let m = ModelName::parse(s).map_err(|e| e.to_string())?;
            Ok(Pattern::Model {
                repo: format!("{}/{}/{}", m.host, m.namespace, m.model).to_lowercase(),
                tag: names_tag(s).then(|| m.tag.to_lowercase()),
            })
        }
    }
}

pub(super) fn parse_mode(m: &ModeToml) -> Result<u32, String> {
    let parsed = match m {
        ModeToml::Text(t) => u32::from_str_radix(t, 8)
            .ok()
            .filter(|_| !t.is_empty() && t.len() <= 4),
        ModeToml::Number(n) => u32::try_from(*n).ok(),
    };
    parsed.filter(|v| *v <= 0o777).ok_or_else(|| {
        format!(
            "max_mode {m:?}: write permission bits in octal, as a string (\"0755\") or as 0o755"
        )
    })
}

/// One category of a section: `None` when the section does not list it.
#[derive(Debug, Clone)]
pub(super) struct Category {
    pub(super) key: &'static str,
    pub(super) listed: Option<Vec<Pattern>>,
    /// As written, for messages.
    pub(super) written: Vec<String>,
}

impl Category {
    pub(super) fn parse(
        key: &'static str,
        values: Option<Vec<String>>,
        parse: fn(&str) -> Result<Pattern, String>,
    ) -> Result<Category, String> {
        let listed = values
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|s| parse(s).map_err(|e| format!("{key}: {e}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Category {
            key,
            listed,
            written: values.unwrap_or_default(),
        })
    }

    pub(super) fn allows(&self, f: impl Fn(&Pattern) -> bool) -> bool {
        self.listed.as_ref().is_some_and(|l| l.iter().any(f))
    }

    /// The rule as the operator wrote it, for a refusal.
    pub(super) fn rule(&self) -> String {
        match &self.listed {
            None => format!(
                "{} is not listed (a category a policy does not list allows nothing)",
                self.key
            ),
            Some(_) => format!("{} = {:?}", self.key, self.written),
        }
    }
}

/// The rules of the top level or of one `[signer.NAME]` section.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    /// `[signer.NAME] ` for a section, empty for the top level (message prefix).
    pub(super) scope: String,
    pub(super) files: Category,
    pub(super) volumes: Category,
    pub(super) images: Category,
    pub(super) models: Category,
    pub(super) models_dirs: Category,
    pub(super) max_mode: Option<u32>,
    pub(super) max_age: Option<Duration>,
}

impl Rules {
    pub(super) fn parse(scope: String, t: SectionToml) -> Result<Rules, String> {
        let max_age = t
            .max_age
            .as_deref()
            .map(|a| {
                humantime::parse_duration(a)
                    .map_err(|e| format!("max_age {a:?}: {e} (write e.g. \"30d\" or \"12h\")"))
            })
            .transpose()?;
        Ok(Rules {
            scope,
            files: Category::parse("files", t.files, parse_files)?,
            volumes: Category::parse("volumes", t.volumes, parse_volume)?,
            images: Category::parse("images", t.images, parse_image)?,
            models: Category::parse("models", t.models, parse_model)?,
            models_dirs: Category::parse("models_dirs", t.models_dirs, parse_models_dir)?,
            max_mode: t.max_mode.as_ref().map(parse_mode).transpose()?,
            max_age,
        })
    }
}
