//! The bundle spec (`manifests/*.toml`): what a user wants carried across the gap — images,
//! Ollama models and plain files — and where models and files should land.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::header::{check_relative, Target};
use crate::oci::Platform;
use crate::ollama::{ModelName, DEFAULT_VOLUME};
use crate::reference::ImageRef;
use crate::BundleError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default = "default_platforms")]
    pub platforms: Vec<Platform>,
    #[serde(default, rename = "image")]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySpec>,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelSpec>,
    /// Spec-wide defaults for every `[[model]]`.
    #[serde(default)]
    pub ollama: OllamaDefaults,
    #[serde(default)]
    pub files: Vec<FilesSpec>,
    /// Compose stacks: their services' images join the lock like `[[image]]`s, and the
    /// compose file goes to `path` on the gap host like a `[[files]]` entry.
    #[serde(default)]
    pub compose: Vec<ComposeSpec>,
    /// Which images must carry a cosign signature, and by which key.
    #[serde(default, rename = "verify")]
    pub verify: Vec<VerifySpec>,
}

/// A `[[verify]]` rule: images whose normalised repository `match`es must carry a cosign
/// signature by `key` (a PEM public key, relative to the spec's directory or absolute) for
/// the digest the lock pins, unless `require = false` (then a valid one is recorded when
/// present, and its absence is only shown).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    #[serde(rename = "match")]
    pub pattern: String,
    pub key: String,
    #[serde(default = "required")]
    pub require: bool,
}

fn required() -> bool {
    true
}

/// Where a model's blobs come from at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// The model's registry (`registry.ollama.ai` unless the name says otherwise).
    #[default]
    Registry,
    /// A local Ollama store (`--ollama-models`, `$OLLAMA_MODELS`, `~/.ollama/models`).
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default)]
    pub volume: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub source: Option<ModelSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OllamaDefaults {
    #[serde(default)]
    pub volume: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub source: Option<ModelSource>,
}

/// A file or directory from the machine that builds the bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSpec {
    /// Relative to the spec's directory, or absolute.
    pub source: String,
    #[serde(default)]
    pub volume: Option<String>,
    /// A sub-directory of the volume.
    #[serde(default)]
    pub dest: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// A `[[compose]]` entry. Its `env` is either `env = { A = "b" }` inline or a
/// `[compose.env]` table after the `[[compose]]` header (TOML gives that table to the last
/// `[[compose]]` entry). Reading the compose file and interpolating it belong to the pack
/// side (`airlock-pack`'s `compose` module); this only checks what TOML can check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeSpec {
    /// The compose file, relative to the spec's directory or absolute.
    pub file: String,
    /// The absolute directory on the gap host the compose file (and its `.env`) go to.
    pub path: String,
    /// Interpolation variables; they take precedence over the `.env` beside the file, as
    /// the shell's environment does for `docker compose`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// At most this many `[[compose]]` entries and `env` variables per entry: a spec is written
/// by hand.
pub const MAX_COMPOSE: usize = 64;

/// A compose variable name: `[A-Za-z_][A-Za-z0-9_]*`, as compose interpolates them.
pub fn is_variable_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A `[[compose]]` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeWant {
    pub file: std::path::PathBuf,
    /// Always a [`Target::Path`].
    pub target: Target,
    pub env: BTreeMap<String, String>,
}

/// A model of the spec, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelWant {
    pub name: ModelName,
    pub target: Target,
    pub source: ModelSource,
}

/// A `[[files]]` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesWant {
    pub source: std::path::PathBuf,
    pub target: Target,
    /// Prefix inside the target (`dest`), empty for none.
    pub dest: String,
}

fn target_of(volume: &Option<String>, path: &Option<String>) -> Result<Option<Target>, String> {
    let t = match (volume, path) {
        (Some(_), Some(_)) => return Err("give either volume or path, not both".into()),
        (Some(v), None) => Target::Volume(v.clone()),
        (None, Some(p)) => Target::Path(p.trim_end_matches('/').to_string()),
        (None, None) => return Ok(None),
    };
    t.validate()?;
    Ok(Some(t))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(rename = "ref")]
    pub reference: String,
    /// Where the pack side found the image when it was not written as an `[[image]]`
    /// (e.g. `compose file x.yml, service web`); never read from the spec.
    #[serde(skip)]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// Plain HTTP instead of HTTPS (loopback registries, labs).
    #[serde(default)]
    pub insecure: bool,
}

/// `"*"`, `"prefix*"` or one repository: the syntax the gap-host policy's image patterns
/// use (`airlock-sigstore` matches them; this only refuses what could never match).
fn check_verify_pattern(p: &str) -> Result<(), String> {
    let inner = p.strip_suffix('*').unwrap_or(p);
    if p.is_empty() || (inner.is_empty() && p != "*") {
        return Err("match is empty".into());
    }
    if inner.contains('*') {
        return Err("a '*' may only end the pattern".into());
    }
    Ok(())
}

fn default_platforms() -> Vec<Platform> {
    vec!["linux/amd64".parse().expect("valid platform")]
}

impl Spec {
    pub fn from_toml(text: &str, origin: &Path) -> Result<Spec, BundleError> {
        let spec: Spec = toml::from_str(text)
            .map_err(|e| BundleError::Usage(format!("{}: {e}", origin.display())))?;
        spec.validate(origin)?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Spec, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
        Spec::from_toml(&text, path)
    }

    fn validate(&self, origin: &Path) -> Result<(), BundleError> {
        let bad = |m: String| BundleError::Usage(format!("{}: {m}", origin.display()));
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return Err(bad(format!(
                "name {:?} must be non-empty and use only letters, digits, '-', '_', '.'",
                self.name
            )));
        }
        if self.platforms.is_empty() {
            return Err(bad("platforms must list at least one os/arch".into()));
        }
        let mut seen = BTreeSet::new();
        for img in &self.images {
            let r = ImageRef::parse(&img.reference).map_err(|e| bad(e.to_string()))?;
            if !seen.insert(r.to_string()) {
                return Err(bad(format!("image {r} is listed twice")));
            }
        }
        for (i, v) in self.verify.iter().enumerate() {
            let what = format!("[[verify]] #{} (match {:?})", i + 1, v.pattern);
            if v.key.is_empty() {
                return Err(bad(format!("{what}: key is empty")));
            }
            check_verify_pattern(&v.pattern).map_err(|e| bad(format!("{what}: {e}")))?;
        }
        let mut names = BTreeSet::new();
        target_of(&self.ollama.volume, &self.ollama.path)
            .map_err(|e| bad(format!("[ollama]: {e}")))?;
        for m in &self.models {
            let n = ModelName::parse(&m.name).map_err(|e| bad(e.to_string()))?;
            target_of(&m.volume, &m.path).map_err(|e| bad(format!("model {n}: {e}")))?;
            if !names.insert(n.to_string()) {
                return Err(bad(format!("model {n} is listed twice")));
            }
        }
        for f in &self.files {
            let what = format!("files {:?}", f.source);
            if f.source.is_empty() {
                return Err(bad(format!("{what}: source is empty")));
            }
            match target_of(&f.volume, &f.path).map_err(|e| bad(format!("{what}: {e}")))? {
                None => {
                    return Err(bad(format!(
                        "{what}: needs volume = \"NAME\" or path = \"/DIR\""
                    )))
                }
                Some(Target::Path(_)) if f.dest.is_some() => {
                    return Err(bad(format!(
                        "{what}: dest goes with volume; with path, put it in the path"
                    )))
                }
                _ => {}
            }
            if let Some(d) = &f.dest {
                check_relative(d.trim_end_matches('/'))
                    .map_err(|e| bad(format!("{what}: dest {d:?}: {e}")))?;
            }
        }
        self.validate_compose().map_err(bad)
    }

    fn validate_compose(&self) -> Result<(), String> {
        if self.compose.len() > MAX_COMPOSE {
            return Err(format!("at most {MAX_COMPOSE} [[compose]] entries"));
        }
        let mut places = BTreeSet::new();
        for c in &self.compose {
            let what = format!("compose {:?}", c.file);
            if c.file.is_empty() {
                return Err(format!("{what}: file is empty"));
            }
            let t = target_of(&None, &Some(c.path.clone()))
                .map_err(|e| format!("{what}: {e}"))?
                .expect("a path");
            if !places.insert(t.to_string()) {
                return Err(format!(
                    "{what}: another [[compose]] entry goes to {t} already"
                ));
            }
            if c.env.len() > MAX_COMPOSE {
                return Err(format!("{what}: at most {MAX_COMPOSE} env variables"));
            }
            for (k, v) in &c.env {
                if !is_variable_name(k) {
                    return Err(format!(
                        "{what}: env {k:?} is not a variable name (letters, digits, '_')"
                    ));
                }
                // The values travel in the `.env` written beside the compose file, single
                // quoted (compose reads those literally).
                if v.contains(['\'', '\n', '\r', '\0']) {
                    return Err(format!(
                        "{what}: env {k}: a value may not hold a single quote or a line break"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `[[compose]]` entries with files resolved against `spec_dir`.
    pub fn compose_wants(&self, spec_dir: &Path) -> Vec<ComposeWant> {
        self.compose
            .iter()
            .map(|c| ComposeWant {
                file: spec_dir.join(&c.file),
                target: target_of(&None, &Some(c.path.clone()))
                    .expect("validated at load")
                    .expect("validated at load"),
                env: c.env.clone(),
            })
            .collect()
    }

    /// The models in spec order, each with its target (the model's own, else `[ollama]`'s,
    /// else the `ollama-data` volume) and source.
    pub fn model_wants(&self) -> Vec<ModelWant> {
        let default = target_of(&self.ollama.volume, &self.ollama.path)
            .expect("validated at load")
            .unwrap_or_else(|| Target::Volume(DEFAULT_VOLUME.into()));
        self.models
            .iter()
            .map(|m| ModelWant {
                name: ModelName::parse(&m.name).expect("validated at load"),
                target: target_of(&m.volume, &m.path)
                    .expect("validated at load")
                    .unwrap_or_else(|| default.clone()),
                source: m.source.or(self.ollama.source).unwrap_or_default(),
            })
            .collect()
    }

    /// The `[[files]]` entries with sources resolved against `spec_dir`.
    pub fn files_wants(&self, spec_dir: &Path) -> Vec<FilesWant> {
        self.files
            .iter()
            .map(|f| FilesWant {
                source: spec_dir.join(&f.source),
                target: target_of(&f.volume, &f.path)
                    .expect("validated at load")
                    .expect("validated at load"),
                dest: f
                    .dest
                    .as_deref()
                    .unwrap_or("")
                    .trim_end_matches('/')
                    .to_string(),
            })
            .collect()
    }

    /// The images, normalised, in spec order.
    pub fn image_refs(&self) -> Vec<ImageRef> {
        self.images
            .iter()
            .map(|i| ImageRef::parse(&i.reference).expect("validated at load"))
            .collect()
    }

    /// Where the pack side found image `r` when no `[[image]]` names it (see
    /// [`ImageSpec::from`]).
    pub fn image_origin(&self, r: &ImageRef) -> Option<&str> {
        self.images
            .iter()
            .find(|i| ImageRef::parse(&i.reference).is_ok_and(|p| &p == r))
            .and_then(|i| i.from.as_deref())
    }

    /// Registries to be spoken to over plain HTTP.
    pub fn insecure_registries(&self) -> BTreeSet<String> {
        self.registries
            .iter()
            .filter(|(_, r)| r.insecure)
            .map(|(host, _)| host.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_rules_parse_with_require_by_default() {
        let s = Spec::from_toml(
            "name = \"x\"\n[[verify]]\nmatch = \"docker.io/grafana/*\"\nkey = \"keys/g.pub\"\n\
             [[verify]]\nmatch = \"*\"\nkey = \"/k.pub\"\nrequire = false\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(s.verify.len(), 2);
        assert!(s.verify[0].require);
        assert!(!s.verify[1].require);
        for bad in ["a*b", "", "**"] {
            let text = format!("name = \"x\"\n[[verify]]\nmatch = \"{bad}\"\nkey = \"k\"\n");
            let e = Spec::from_toml(&text, Path::new("s.toml")).unwrap_err();
            assert!(e.to_string().contains("[[verify]] #1"), "{e}");
        }
    }

    #[test]
    fn models_and_files_resolve_targets() {
        let s = Spec::from_toml(
            r#"
name = "m"
[ollama]
path = "/usr/share/ollama/.ollama/models/"
[[model]]
name = "llama3"
[[model]]
name = "codellama:7b"
volume = "ollama-data"
[[model]]
name = "127.0.0.1:5000/library/tiny"
source = "local"
[[files]]
source = "configs/prometheus.yml"
volume = "prom-config"
dest = "etc/"
[[files]]
source = "/abs/compose"
path = "/srv/llm"
"#,
            Path::new("m.toml"),
        )
        .unwrap();
        let m = s.model_wants();
        assert_eq!(
            m[0].name.to_string(),
            "registry.ollama.ai/library/llama3:latest"
        );
        assert_eq!(
            m[0].target,
            Target::Path("/usr/share/ollama/.ollama/models".into())
        );
        assert_eq!(m[0].source, ModelSource::Registry);
        assert_eq!(m[1].target, Target::Volume("ollama-data".into()));
        assert_eq!(m[2].source, ModelSource::Local);
        let f = s.files_wants(Path::new("/specs"));
        assert_eq!(f[0].source, Path::new("/specs/configs/prometheus.yml"));
        assert_eq!(f[0].target, Target::Volume("prom-config".into()));
        assert_eq!(f[0].dest, "etc");
        assert_eq!(f[1].source, Path::new("/abs/compose"));
        assert_eq!(f[1].target, Target::Path("/srv/llm".into()));
        let plain =
            Spec::from_toml("name = \"x\"\n[[model]]\nname = \"m\"", Path::new("x.toml")).unwrap();
        assert_eq!(
            plain.model_wants()[0].target,
            Target::Volume("ollama-data".into())
        );
    }

    #[test]
    fn compose_entries_take_env_inline_or_as_a_table_after_the_entry() {
        let s = Spec::from_toml(
            r#"
name = "c"
[[compose]]
file = "stack/compose.yml"
path = "/opt/stack/"
env = { TAG = "1.2" }
[[compose]]
file = "/abs/other.yml"
path = "/opt/other"
[compose.env]
REGISTRY = "127.0.0.1:5000"
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        let w = s.compose_wants(Path::new("/specs"));
        assert_eq!(w[0].file, Path::new("/specs/stack/compose.yml"));
        assert_eq!(w[0].target, Target::Path("/opt/stack".into()));
        assert_eq!(w[0].env["TAG"], "1.2");
        // `[compose.env]` belongs to the entry above it.
        assert_eq!(w[1].file, Path::new("/abs/other.yml"));
        assert_eq!(w[1].env["REGISTRY"], "127.0.0.1:5000");
        assert!(!w[1].env.contains_key("TAG"));
        for (bad, why) in [
            ("[[compose]]\nfile = \"a.yml\"", "missing field `path`"),
            ("[[compose]]\nfile = \"a.yml\"\nvolume = \"v\"\npath = \"/p\"", "unknown field"),
            ("[[compose]]\nfile = \"\"\npath = \"/p\"", "file is empty"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"p\"", "must be absolute"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"/\"", "must be absolute"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"/p\"\nenv = { \"1X\" = \"v\" }", "not a variable name"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"/p\"\nenv = { X = \"it's\" }", "single quote"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"/p\"\nenv = { X = \"a\\nb\" }", "line break"),
            ("[[compose]]\nfile = \"a.yml\"\npath = \"/p\"\n[[compose]]\nfile = \"b.yml\"\npath = \"/p/\"", "goes to /p already"),
        ] {
            let text = format!("name = \"x\"\n{bad}");
            let e = Spec::from_toml(&text, Path::new("bad.toml")).unwrap_err().to_string();
            assert!(e.starts_with("bad.toml: ") && e.contains(why), "{bad}: {e}");
        }
        assert!(is_variable_name("_A1") && !is_variable_name("") && !is_variable_name("A-B"));
    }

    #[test]
    fn parses_a_spec() {
        let s = Spec::from_toml(
            r#"
name = "demo"
platforms = ["linux/amd64", "linux/arm64"]
[[image]]
ref = "busybox:1.36"
[[image]]
ref = "127.0.0.1:5000/demo/hello:v1"
[registries."127.0.0.1:5000"]
insecure = true
"#,
            Path::new("demo.toml"),
        )
        .unwrap();
        assert_eq!(s.platforms.len(), 2);
        let refs: Vec<String> = s.image_refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/busybox:1.36",
                "127.0.0.1:5000/demo/hello:v1"
            ]
        );
        assert!(s.insecure_registries().contains("127.0.0.1:5000"));
        assert!(!s.insecure_registries().contains("docker.io"));
    }

    #[test]
    fn defaults_and_refusals() {
        let s = Spec::from_toml("name = \"x\"", Path::new("x.toml")).unwrap();
        assert_eq!(s.platforms[0].to_string(), "linux/amd64");
        for bad in [
            "name = \"\"",
            "name = \"a/b\"",
            "name = \"x\"\nplatforms = []",
            "name = \"x\"\n[[image]]\nref = \"Bad\"",
            "name = \"x\"\n[[image]]\nref = \"a\"\n[[image]]\nref = \"docker.io/library/a:latest\"",
            "name = \"x\"\nunknown = 1",
            "name = \"x\"\n[[model]]\nname = \"../x\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\n[[model]]\nname = \"registry.ollama.ai/library/m:latest\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\nvolume = \"v\"\npath = \"/p\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\npath = \"relative\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\npath = \"/a/../etc\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\nvolume = \"../v\"",
            "name = \"x\"\n[[model]]\nname = \"m\"\nsource = \"ftp\"",
            "name = \"x\"\n[[files]]\nsource = \"a\"",
            "name = \"x\"\n[[files]]\nsource = \"a\"\npath = \"/p\"\ndest = \"d\"",
            "name = \"x\"\n[[files]]\nsource = \"a\"\nvolume = \"vv\"\ndest = \"../d\"",
            "name = \"x\"\n[[files]]\nsource = \"\"\nvolume = \"vv\"",
        ] {
            let err = Spec::from_toml(bad, Path::new("bad.toml")).unwrap_err();
            assert!(err.to_string().starts_with("bad.toml: "), "{err}");
        }
    }
}
