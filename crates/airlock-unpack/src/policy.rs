//! The gap host's operator policy: what a bundle signed by a trusted key may do on this host.
//!
//! A trusted signature says who made a bundle, not what it may touch; the signing key lives
//! on the connected side. The policy file (`--policy FILE`, else `$AIRLOCK_POLICY`, else
//! `/etc/airlock/policy.toml` if it exists) bounds it: host path prefixes for `[[files]]`,
//! volume names, image repositories, model names, models directories, a maximum file mode
//! and a maximum age, and `[signer.NAME]` sections that narrow what one trusted key (the
//! trust file `NAME.pub`) may do. Once a policy file exists everything is denied by default:
//! a category it does not list allows nothing.
//!
//! This module owns finding and parsing that file (bounded, unknown keys refused, patterns
//! validated, signer names checked against the trust sources), mapping the key that
//! verified a bundle to its trust file names, and [`LoadGuard`]: the one check `load` runs
//! once the signed header verified and before anything is written or sent to the engine
//! (this policy, `--no-files`, and anti-rollback and freshness from [`crate::state`]).
//! Every problem is listed, not only the first; the refusal is exit code 12.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use airlock_bundle::header::{check_relative, FileRecord, Header, Target};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::reader::Verified;
use airlock_bundle::sign::{KeyId, TrustedKey};
use airlock_bundle::text::escape;
use airlock_bundle::{Digest, ImageRef};
use serde::Deserialize;

use crate::state::{Freshness, RollbackDecision, State};
use crate::UnpackError;

/// Where the policy is looked for when neither `--policy` nor `$AIRLOCK_POLICY` names one.
pub const DEFAULT_POLICY: &str = "/etc/airlock/policy.toml";

/// A policy is a few lines; this bound only keeps a wrong file from being read whole.
pub const MAX_POLICY_SIZE: u64 = 1 << 20;

/// The policy file to use: the one named (which must exist), else the default if it exists.
pub fn locate(named: Option<&Path>) -> Result<Option<PathBuf>, UnpackError> {
    if let Some(p) = named {
        return Ok(Some(p.to_path_buf()));
    }
    let default = Path::new(DEFAULT_POLICY);
    match std::fs::symlink_metadata(default) {
        Ok(_) => Ok(Some(default.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // Cannot tell whether the operator wrote a policy: failing open would ignore it.
        Err(e) => Err(UnpackError::Environment(format!(
            "{DEFAULT_POLICY}: {e} (cannot tell whether this host has a policy)"
        ))),
    }
}

/// One category's or section's keys, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionToml {
    files: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
    images: Option<Vec<String>>,
    models: Option<Vec<String>>,
    models_dirs: Option<Vec<String>>,
    max_mode: Option<ModeToml>,
    max_age: Option<String>,
}

/// The whole file: the top-level rules and the per-key sections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    files: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
    images: Option<Vec<String>>,
    models: Option<Vec<String>>,
    models_dirs: Option<Vec<String>>,
    max_mode: Option<ModeToml>,
    max_age: Option<String>,
    #[serde(default)]
    signer: BTreeMap<String, SectionToml>,
}

/// `max_mode = "0755"`, or TOML's own octal `0o755`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ModeToml {
    Text(String),
    Number(i64),
}

/// One allowed name or path, as the policy writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
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
    fn matches(&self, subject: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => subject == e,
            Pattern::Prefix(p) => subject.starts_with(p.as_str()),
            Pattern::Under(p) => path_under(subject, p),
            Pattern::Model { .. } => false,
        }
    }

    fn matches_model(&self, m: &ModelName) -> bool {
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
fn path_under(p: &str, prefix: &str) -> bool {
    prefix == "/"
        || p == prefix
        || (p.starts_with(prefix) && p.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// An absolute, normalised host path (`/` itself allowed only where `allow_root`). Paths
/// are not globs: a `*` in one is taken for a misunderstanding, not a file name.
fn parse_path(s: &str, allow_root: bool) -> Result<String, String> {
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
fn split_glob(s: &str) -> Result<Option<&str>, String> {
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
fn names_tag(s: &str) -> bool {
    matches!((s.rfind(':'), s.rfind('/')), (Some(c), slash) if slash.is_none_or(|sl| c > sl))
}

fn parse_files(s: &str) -> Result<Pattern, String> {
    if s == "*" {
        return Ok(Pattern::Any);
    }
    parse_path(s, true).map(Pattern::Under)
}

fn parse_models_dir(s: &str) -> Result<Pattern, String> {
    if s == "*" {
        return Ok(Pattern::Any);
    }
    parse_path(s, false).map(Pattern::Exact)
}

fn parse_volume(s: &str) -> Result<Pattern, String> {
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

fn parse_image(s: &str) -> Result<Pattern, String> {
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

fn parse_model(s: &str) -> Result<Pattern, String> {
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

fn parse_mode(m: &ModeToml) -> Result<u32, String> {
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
struct Category {
    key: &'static str,
    listed: Option<Vec<Pattern>>,
    /// As written, for messages.
    written: Vec<String>,
}

impl Category {
    fn parse(
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

    fn allows(&self, f: impl Fn(&Pattern) -> bool) -> bool {
        self.listed.as_ref().is_some_and(|l| l.iter().any(f))
    }

    /// The rule as the operator wrote it, for a refusal.
    fn rule(&self) -> String {
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
struct Rules {
    /// `[signer.NAME] ` for a section, empty for the top level (message prefix).
    scope: String,
    files: Category,
    volumes: Category,
    images: Category,
    models: Category,
    models_dirs: Category,
    max_mode: Option<u32>,
    max_age: Option<Duration>,
}

impl Rules {
    fn parse(scope: String, t: SectionToml) -> Result<Rules, String> {
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

/// The operator's policy file, parsed.
#[derive(Debug)]
pub struct Policy {
    pub path: PathBuf,
    /// sha256 of the file's bytes: which policy decided, in reports and refusals.
    pub sha256: Digest,
    top: Rules,
    signers: BTreeMap<String, Rules>,
}

/// A problem with the policy file itself: a usage error (exit 2) naming the file.
fn bad_policy(path: &Path, e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Usage(format!("policy {}: {e}", path.display()))
}

impl Policy {
    /// Reads and parses the policy at `path`. `signers`: the names of the trusted keys
    /// (`None` when the signature is not checked); a `[signer.NAME]` for another name is an
    /// error, so that a typo cannot leave a key unrestricted.
    pub fn load(path: &Path, signers: Option<&TrustNames>) -> Result<Policy, UnpackError> {
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad_policy(path, "no such file"),
            _ => UnpackError::Environment(format!("policy {}: {e}", path.display())),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| UnpackError::Environment(format!("policy {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(bad_policy(path, "not a regular file"));
        }
        check_owner(path, &meta)?;
        let mut bytes = Vec::new();
        file.take(MAX_POLICY_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| UnpackError::Environment(format!("policy {}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_POLICY_SIZE {
            return Err(bad_policy(
                path,
                format!("larger than {MAX_POLICY_SIZE} bytes; not a policy"),
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| bad_policy(path, e))?;
        Policy::parse(path, Digest::of(&bytes), text, signers.map(|s| &s.names))
            .map_err(|e| bad_policy(path, e))
    }

    /// Parses policy text (`known`: the trusted keys' names, when known).
    fn parse(
        path: &Path,
        sha256: Digest,
        text: &str,
        known: Option<&BTreeSet<String>>,
    ) -> Result<Policy, String> {
        let t: PolicyToml = toml::from_str(text).map_err(|e| e.to_string())?;
        let top = Rules::parse(
            String::new(),
            SectionToml {
                files: t.files,
                volumes: t.volumes,
                images: t.images,
                models: t.models,
                models_dirs: t.models_dirs,
                max_mode: t.max_mode,
                max_age: t.max_age,
            },
        )?;
        let mut signers = BTreeMap::new();
        for (name, section) in t.signer {
            if let Some(known) = known {
                if !known.contains(&name) {
                    return Err(format!(
                        "[signer.{name}]: no trusted key is named {name} (a section applies to the trust file NAME.pub; trusted: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ));
                }
            }
            let rules = Rules::parse(format!("[signer.{name}] "), section)
                .map_err(|e| format!("[signer.{name}] {e}"))?;
            signers.insert(name, rules);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            sha256,
            top,
            signers,
        })
    }

    /// How refusals and reports name this policy.
    pub fn describe(&self) -> String {
        format!("policy {}, {}", self.path.display(), self.sha256)
    }

    /// The rule sets that apply to a bundle signed by a key with these trust file names:
    /// the top level, and every matching section (each narrows further).
    fn applicable<'a>(&'a self, signer: &'a [String]) -> impl Iterator<Item = &'a Rules> + 'a {
        std::iter::once(&self.top).chain(signer.iter().filter_map(|n| self.signers.get(n)))
    }

    /// The strictest `max_age` among the rules that apply, with where it was written.
    pub fn max_age(&self, signer: &[String]) -> Option<(Duration, String)> {
        self.applicable(signer)
            .filter_map(|r| {
                r.max_age
                    .map(|a| (a, format!("{}max_age in {}", r.scope, self.path.display())))
            })
            .min_by_key(|(a, _)| *a)
    }

    /// Every violation of this policy by header `h`, signed by a key with the trust file
    /// names `signer`, with models going to `models_to` when the command line overrides
    /// their targets. `[[files]]` are not looked at with `no_files` (they are skipped).
    pub fn check(
        &self,
        h: &Header,
        signer: &[String],
        models_to: Option<&Target>,
        no_files: bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let file = self.path.display();
        for r in self.applicable(signer) {
            let refuse = |what: String, cat: &Category| {
                format!("{what}: not allowed by {}{} in {file}", r.scope, cat.rule())
            };
            if !no_files {
                for f in &h.files {
                    let what = describe_file(f);
                    match &f.target {
                        Target::Path(root) => {
                            let host = host_path(root, &f.path);
                            if !r.files.allows(|p| p.matches(&host)) {
                                out.push(format!(
                                    "{what}: not under any allowed prefix: {}{} in {file}",
                                    r.scope,
                                    r.files.rule()
                                ));
                            }
                        }
                        Target::Volume(v) => {
                            if !r.volumes.allows(|p| p.matches(v)) {
                                out.push(refuse(what.clone(), &r.volumes));
                            }
                        }
                    }
                    if let (Some(max), Ok(mode)) = (r.max_mode, f.mode_bits()) {
                        if mode & !max != 0 {
                            out.push(format!(
                                "{what}: mode {:04o} has bits beyond {}max_mode = \"{max:04o}\" in {file}",
                                mode, r.scope
                            ));
                        }
                    }
                }
            }
            for m in &h.models {
                let shown = escape(&m.name);
                match ModelName::parse(&m.name) {
                    Ok(name) if r.models.allows(|p| p.matches_model(&name)) => {}
                    Ok(name) => {
                        let full = name.to_string();
                        let what = if full == m.name {
                            format!("model {shown}")
                        } else {
                            format!("model {shown} (normalised {})", escape(&full))
                        };
                        out.push(refuse(what, &r.models));
                    }
                    Err(e) => out.push(format!("model {shown}: {e}")),
                }
                let (target, how) = match models_to {
                    Some(t) => (t, "the command line's target"),
                    None => (&m.target, "the bundle's target"),
                };
                let what = format!("model {shown} into {} ({how})", show_target(target));
                match target {
                    Target::Path(dir) => {
                        if !r.models_dirs.allows(|p| p.matches(dir)) {
                            out.push(refuse(what, &r.models_dirs));
                        }
                    }
                    Target::Volume(v) => {
                        if !r.volumes.allows(|p| p.matches(v)) {
                            out.push(refuse(what, &r.volumes));
                        }
                    }
                }
            }
            let mut seen = BTreeSet::new();
            for i in &h.images {
                if !seen.insert(i.reference.as_str()) {
                    continue;
                }
                // The header's references parsed when the bundle was built; one that does
                // not now cannot be matched, so it is refused.
                let repo = ImageRef::parse(&i.reference).map(|r| r.name());
                let allowed = repo
                    .as_ref()
                    .is_ok_and(|repo| r.images.allows(|p| p.matches(repo)));
                if !allowed {
                    out.push(refuse(
                        format!(
                            "image {} (repository {})",
                            escape(&i.reference),
                            repo.as_deref()
                                .map(escape)
                                .unwrap_or_else(|e| e.to_string())
                        ),
                        &r.images,
                    ));
                }
            }
        }
        out
    }
}

/// A file record as refusals show it: the host path it would be, and where that came from.
fn describe_file(f: &FileRecord) -> String {
    let kind = if f.is_dir() { "directory" } else { "file" };
    match &f.target {
        Target::Path(root) => format!(
            "{kind} {} (bundle target {}, path {})",
            escape(&host_path(root, &f.path)),
            escape(root),
            escape(&f.path)
        ),
        Target::Volume(v) => format!("{kind} {} in volume {}", escape(&f.path), escape(v)),
    }
}

fn show_target(t: &Target) -> String {
    match t {
        Target::Path(p) => escape(p),
        Target::Volume(v) => format!("volume {}", escape(v)),
    }
}

/// The host path a file record writes.
fn host_path(root: &str, rel: &str) -> String {
    format!("{}/{rel}", root.trim_end_matches('/'))
}

/// A policy anyone but its owner can change is no limit: refused, like `sshd` refuses a
/// group-writable `authorized_keys`.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), UnpackError> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(bad_policy(
            path,
            format!(
                "owned by uid {}, neither root nor this user: its owner could rewrite what bundles may do",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad_policy(
            path,
            format!(
                "mode {:04o} lets group or others write it, and so decide what bundles may do (chmod go-w)",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The names of the trusted keys: the file stem of each trust file (`trust.d/pack.pub` is
/// `pack`), by key id. Read from the same sources `load` trusts (`--trust` files, else the
/// `*.pub` files of `$AIRLOCK_TRUST_DIR` or `/etc/airlock/trust.d`), as
/// [`crate::open::Access::new`] reads them.
#[derive(Debug, Default)]
pub struct TrustNames {
    by_key: HashMap<KeyId, BTreeSet<String>>,
    names: BTreeSet<String>,
}

impl TrustNames {
    pub fn read(trust_args: &[PathBuf]) -> Result<TrustNames, UnpackError> {
        let paths: Vec<PathBuf> = if !trust_args.is_empty() {
            trust_args.to_vec()
        } else {
            let dir = std::env::var_os("AIRLOCK_TRUST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(crate::open::DEFAULT_TRUST_DIR));
            match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(UnpackError::Environment(format!("{}: {e}", dir.display()))),
            }
        };
        let mut t = TrustNames::default();
        for p in paths {
            let key = TrustedKey::load(&p)?;
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            t.by_key.entry(key.id).or_default().insert(name.clone());
            t.names.insert(name);
        }
        Ok(t)
    }

    /// The trust file names of key `id` (several if one key is in several files).
    pub fn of(&self, id: KeyId) -> Vec<String> {
        self.by_key
            .get(&id)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What `load` checks once the signed header verified and before anything is written or
/// sent to the engine: the policy (if this host has one), `--no-files`, and anti-rollback
/// and freshness. It holds the state (locked) until the load is recorded.
#[derive(Debug)]
pub struct LoadGuard {
    pub policy: Option<Policy>,
    pub trust_names: TrustNames,
    /// `--no-files`: `[[files]]` are skipped (and not checked against the policy).
    pub no_files: bool,
    /// `--max-age`.
    pub max_age: Option<Duration>,
    pub allow_downgrade: bool,
    pub state: State,
}

/// What the guard let through, for the output and the report.
#[derive(Debug, Clone)]
pub struct Cleared {
    pub rollback: RollbackDecision,
    /// `[[files]]` skipped by `--no-files`.
    pub files_skipped: Vec<FileRecord>,
}

impl LoadGuard {
    /// Every reason to refuse `v` (the policy's and anti-rollback's together), or what is
    /// let through. `models_to`: `--ollama-models` / `--ollama-volume`.
    pub fn check(&self, v: &Verified, models_to: Option<&Target>) -> Result<Cleared, UnpackError> {
        let h = &v.header;
        let signer = v
            .signer
            .filter(|_| v.signature_checked)
            .map(|k| self.trust_names.of(k))
            .unwrap_or_default();
        let mut problems = match &self.policy {
            Some(p) => p.check(h, &signer, models_to, self.no_files),
            None => Vec::new(),
        };
        // The trust files were read for the policy apart from the verification; a signer
        // missing from them (trust changed in between) could escape its section.
        if let (Some(p), Some(k), true) = (&self.policy, v.signer, v.signature_checked) {
            if signer.is_empty() && !p.signers.is_empty() {
                problems.push(format!(
                    "the bundle is signed by key {k}, which none of the trust files read for the [signer.*] sections of {} holds (did the trust files change during the load?); run the load again",
                    p.path.display()
                ));
            }
        }
        // The stricter of --max-age and the policy's applies: the command line cannot
        // loosen what the operator wrote.
        let max_age = self
            .max_age
            .map(|a| (a, "--max-age".to_string()))
            .into_iter()
            .chain(self.policy.as_ref().and_then(|p| p.max_age(&signer)))
            .min_by_key(|(a, _)| *a);
        let fresh = Freshness {
            max_age,
            allow_downgrade: self.allow_downgrade,
            now: SystemTime::now(),
        };
        let (rollback, mut stale) = self.state.check(h, v.header_digest, &fresh);
        problems.append(&mut stale);
        if !problems.is_empty() {
            return Err(UnpackError::Policy {
                policy: self.policy.as_ref().map(Policy::describe),
                problems,
            });
        }
        Ok(Cleared {
            rollback,
            files_skipped: if self.no_files {
                h.files.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// Records a loaded bundle as the newest of its name (only after it loaded).
    pub fn record(&mut self, v: &Verified) -> Result<(), UnpackError> {
        self.state.record(&v.header, v.header_digest)
    }
}

/// The one line `load` prints when this host has no policy.
pub fn no_policy_notice() -> String {
    format!(
        "notice: no policy file ({DEFAULT_POLICY}, --policy or $AIRLOCK_POLICY): any trusted signer may write any path, volume, image tag and model on this host; see `airlock-unpack load --help` to limit it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_bundle::header::{ImageRecord, ModelRecord};

    fn policy(text: &str) -> Policy {
        Policy::parse(
            Path::new("/etc/airlock/policy.toml"),
            Digest::of(text.as_bytes()),
            text,
            Some(&["pack".to_string(), "ops".to_string()].into()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(text: &str) -> String {
        Policy::parse(
            Path::new("p.toml"),
            Digest::of(b""),
            text,
            Some(&["pack".to_string()].into()),
        )
        .map(|_| ())
        .expect_err("must be refused")
    }

    fn header(files: &[(&str, &str, &str)], models: &[&str], images: &[&str]) -> Header {
        let d = Digest::of(b"x");
        Header {
            format: "airlock-bundle".into(),
            version: 3,
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: vec![],
            images: images
                .iter()
                .map(|r| ImageRecord {
                    reference: (*r).into(),
                    platform: "linux/amd64".parse().unwrap(),
                    manifest: d,
                    config: d,
                    layers: vec![],
                    index: None,
                })
                .collect(),
            models: models
                .iter()
                .map(|n| ModelRecord {
                    name: (*n).into(),
                    manifest: d,
                    config: d,
                    layers: vec![],
                    target: Target::Volume("ollama-data".into()),
                    info: None,
                })
                .collect(),
            files: files
                .iter()
                .map(|(root, path, mode)| FileRecord {
                    target: if root.starts_with('/') {
                        Target::Path((*root).into())
                    } else {
                        Target::Volume((*root).into())
                    },
                    path: (*path).into(),
                    mode: (*mode).into(),
                    digest: Some(d),
                })
                .collect(),
            expected_present: vec![],
        }
    }

    #[test]
    fn path_prefixes_are_component_wise() {
        assert!(path_under("/opt/llm", "/opt/llm"));
        assert!(path_under("/opt/llm/a/b", "/opt/llm"));
        assert!(!path_under("/opt/llm-stack/a", "/opt/llm"));
        assert!(!path_under("/opt/llmx", "/opt/llm"));
        assert!(!path_under("/opt", "/opt/llm"));
        assert!(path_under("/etc/shadow", "/"));
        let p = policy("files = [\"/opt/llm\"]\n");
        let h = header(
            &[
                ("/opt/llm", "a.yml", "0644"),
                ("/opt/llm-stack", "b.yml", "0644"),
                ("/opt", "llm-stack/c.yml", "0644"),
                ("/opt", "llm/d.yml", "0644"),
            ],
            &[],
            &[],
        );
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(v[0].starts_with("file /opt/llm-stack/b.yml (bundle target /opt/llm-stack, path b.yml): not under any allowed prefix: files = [\"/opt/llm\"] in /etc/airlock/policy.toml"), "{v:#?}");
        assert!(v[1].starts_with("file /opt/llm-stack/c.yml"), "{v:#?}");
    }

    #[test]
    fn policy_paths_must_be_absolute_and_normalised() {
        for bad in [
            "opt/llm",
            "/opt/../etc",
            "/opt/./llm",
            "/opt//llm",
            "/opt/llm/",
            "",
            "/opt/l*m",
        ] {
            let e = refused(&format!("files = [{bad:?}]\n"));
            assert!(e.contains("files:"), "{bad}: {e}");
        }
        assert!(refused("models_dirs = [\"/\"]\n").contains("models_dirs"));
        assert!(refused("models_dirs = [\"/srv/m/\"]\n").contains("models_dirs"));
        // "/" and "*" allow every path.
        for any in ["/", "*"] {
            let p = policy(&format!("files = [{any:?}]\n"));
            let h = header(&[("/etc/cron.d", "x", "0644")], &[], &[]);
            assert!(p.check(&h, &[], None, false).is_empty());
        }
    }

    #[test]
    fn globs_end_in_a_star_or_are_exact() {
        let p = policy(
            "volumes = [\"ollama-data\", \"open-webui-*\"]\n\
             images = [\"ollama/ollama\", \"ghcr.io/open-webui/*\", \"busybox\"]\n\
             models = [\"registry.ollama.ai/library/*\", \"hf.co/bartowski/Tiny:Q4\"]\n\
             files = [\"*\"]\n",
        );
        let ok = header(
            &[("open-webui-data", "a", "0644"), ("ollama-data", "b", "0600")],
            &[
                "llama3:8b",
                "registry.ollama.ai/library/Llama3",
                "hf.co/bartowski/tiny:q4",
            ],
            &[
                "docker.io/ollama/ollama:0.5",
                "ollama/ollama@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "ghcr.io/open-webui/open-webui:main",
                "busybox:1.36",
            ],
        );
        let v = p.check(&ok, &[], None, false);
        assert!(v.is_empty(), "{v:#?}");
        let bad = header(
            &[("open-webui", "a", "0644"), ("ollama-data-2", "b", "0644")],
            &["other/llama3", "hf.co/bartowski/tiny:q8"],
            &[
                "ollama/ollama-x",
                "ghcr.io/open-webuix/x",
                "docker.io/library/busybox2",
            ],
        );
        let v = p.check(&bad, &[], None, false);
        assert_eq!(v.len(), 7, "{v:#?}");
        assert!(v.iter().any(|l| l.starts_with("file a in volume open-webui: not allowed by volumes = [\"ollama-data\", \"open-webui-*\"]")), "{v:#?}");
        assert!(
            v.iter().any(|l| l.starts_with(
                "model other/llama3 (normalised registry.ollama.ai/other/llama3:latest)"
            )),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|l| l
                    .starts_with("image ghcr.io/open-webuix/x (repository ghcr.io/open-webuix/x)")),
            "{v:#?}"
        );
        // The models went to the bundle's volume, which the policy allows.
        assert!(!v.iter().any(|l| l.contains("into volume")), "{v:#?}");

        for (bad, why) in [
            ("volumes = [\"a*b\"]", "may only end"),
            ("volumes = [\"-x\"]", "invalid volume name"),
            ("images = [\"busybox:1.36\"]", "leave out the tag"),
            ("images = [\"busybox@sha256:00\"]", "leave out the tag"),
            ("images = [\"Busybox\"]", "lowercase"),
            ("models = [\"a/b/c/d\"]", "invalid model name"),
            ("models = [\"*x*\"]", "may only end"),
        ] {
            let e = refused(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unlisted_category_allows_nothing() {
        let p = policy("files = [\"/opt\"]\n");
        let h = header(&[], &["tiny"], &["busybox"]);
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 3, "{v:#?}");
        for l in &v {
            assert!(
                l.contains("is not listed (a category a policy does not list allows nothing)"),
                "{l}"
            );
        }
        // An empty list is the same, and says what it is.
        let p = policy("images = []\n");
        let v = p.check(&header(&[], &[], &["busybox"]), &[], None, false);
        assert!(v[0].contains("images = []"), "{v:#?}");
    }

    #[test]
    fn signer_sections_narrow_the_top_level() {
        let text = "files = [\"/opt\", \"/etc/grafana\"]\nimages = [\"*\"]\nmax_mode = \"0755\"\n\
                    [signer.pack]\nfiles = [\"/opt/llm-stack\"]\nimages = [\"*\"]\nmax_mode = \"0750\"\n\
                    [signer.ops]\nfiles = [\"/etc\"]\n";
        let p = policy(text);
        let h = header(
            &[
                ("/opt/llm-stack", "a", "0755"),
                ("/etc/grafana", "b", "0644"),
                ("/etc/ssh", "c", "0644"),
            ],
            &[],
            &["busybox"],
        );
        // No section: the top level alone.
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].starts_with("file /etc/ssh/c"), "{v:#?}");
        // pack: only /opt/llm-stack, and 0750 at most (0644 has the others' read bit).
        let v = p.check(&h, &["pack".into()], None, false);
        assert_eq!(v.len(), 6, "{v:#?}");
        assert!(v.iter().any(|l| l.starts_with("file /etc/grafana/b (bundle target /etc/grafana, path b): not under any allowed prefix: [signer.pack] files = [\"/opt/llm-stack\"]")), "{v:#?}");
        assert!(
            v.iter()
                .any(|l| l.contains("mode 0755 has bits beyond [signer.pack] max_mode = \"0750\"")),
            "{v:#?}"
        );
        // ops: /etc narrowed by the top level's /etc/grafana; images not listed = none.
        let v = p.check(&h, &["ops".into()], None, false);
        assert!(v.iter().any(|l| l.starts_with("file /opt/llm-stack/a") && l.contains("[signer.ops] files")), "{v:#?}");
        assert!(
            v.iter()
                .any(|l| l.starts_with("file /etc/ssh/c") && !l.contains("[signer")),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|l| l.contains("[signer.ops] images is not listed")),
            "{v:#?}"
        );
        // --no-files: files are neither written nor checked.
        assert!(p.check(&h, &["pack".into()], None, true).is_empty());
        // The strictest max_age applies.
        let p = policy("max_age = \"30d\"\n[signer.pack]\nmax_age = \"1d\"\n");
        assert_eq!(p.max_age(&[]).unwrap().0, Duration::from_secs(30 * 86400));
        let (age, from) = p.max_age(&["pack".into()]).unwrap();
        assert_eq!(age, Duration::from_secs(86400));
        assert!(from.starts_with("[signer.pack] max_age"), "{from}");
    }

    #[test]
    fn typos_are_errors_not_silent_permissions() {
        assert!(refused("file = [\"/opt\"]\n").contains("unknown field `file`"));
        assert!(refused("[signer.pack]\nvolume = []\n").contains("unknown field `volume`"));
        let e = refused("[signer.pakc]\nfiles = []\n");
        assert!(
            e.contains("no trusted key is named pakc") && e.contains("pack"),
            "{e}"
        );
        assert!(refused("max_mode = \"0855\"\n").contains("max_mode"));
        assert!(refused("max_mode = 755\n").contains("max_mode"));
        assert!(refused("max_age = \"a month\"\n").contains("max_age"));
        assert_eq!(policy("max_mode = 0o750\n").top.max_mode, Some(0o750));
    }

    #[test]
    fn model_targets_and_overrides_are_checked() {
        let p = policy(
            "models = [\"*\"]\nmodels_dirs = [\"/usr/share/ollama/.ollama/models\"]\nvolumes = [\"ollama-data\"]\n",
        );
        let h = header(&[], &["tiny"], &[]);
        assert!(p.check(&h, &[], None, false).is_empty());
        let ok = Target::Path("/usr/share/ollama/.ollama/models".into());
        assert!(p.check(&h, &[], Some(&ok), false).is_empty());
        // models_dirs are exact: not a directory below one.
        let below = Target::Path("/usr/share/ollama/.ollama/models/blobs".into());
        let v = p.check(&h, &[], Some(&below), false);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].starts_with("model tiny into /usr/share/ollama/.ollama/models/blobs (the command line's target): not allowed by models_dirs"), "{v:#?}");
        let v = p.check(&h, &[], Some(&Target::Volume("other".into())), false);
        assert!(
            v[0].contains("into volume other (the command line's target): not allowed by volumes"),
            "{v:#?}"
        );
    }

    #[test]
    fn untrusted_names_are_escaped() {
        let p = policy("files = [\"/opt\"]\n");
        let h = header(&[("/srv", "a\u{1b}]0;x\u{7}", "0644")], &[], &[]);
        let v = p.check(&h, &[], None, false);
        assert!(v[0].contains("a\\u{1b}]0;x\\u{7}"), "{v:#?}");
        assert!(!v[0].chars().any(airlock_bundle::text::needs_escape));
    }
}
