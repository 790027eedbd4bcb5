//! The signed bundle header (`airlock/header.json`): format version, every entry's digest and
//! size in tar order, and the images the bundle carries. See `docs/FORMAT.md`.

use serde::{Deserialize, Serialize};

use crate::oci::Platform;
use crate::{BundleError, Digest};

pub const FORMAT_NAME: &str = "airlock-bundle";
/// Version 2 added `models` and `files`, version 3 `expected_present` (delta bundles),
/// version 4 `provenance`, version 5 `compose`; an older header is a newer one without those
/// fields, so readers accept every version up to this one.
pub const FORMAT_VERSION: u32 = 5;

mod compose;

pub use compose::{
    check_service_name, ComposeRecord, ComposeService, COMPOSE_VERSION, MAX_COMPOSE_SERVICES,
    MAX_COMPOSE_STACKS,
};

pub const HEADER_PATH: &str = "airlock/header.json";
pub const SIGNATURE_PATH: &str = "airlock/header.json.minisig";
pub const OCI_LAYOUT_PATH: &str = "oci-layout";
pub const INDEX_PATH: &str = "index.json";

/// Upper bounds for the two entries read into memory before anything is verified.
pub const MAX_HEADER_SIZE: u64 = 16 << 20;
pub const MAX_SIGNATURE_SIZE: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub tool: String,
    pub name: String,
    pub created: String,
    pub entries: Vec<Entry>,
    pub images: Vec<ImageRecord>,
    /// Upstream signatures, attestations and SBOMs carried for the images (version 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<crate::provenance::Provenance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRecord>,
    /// A delta bundle leaves out blobs the target host already has (`build --have`); these
    /// are they, and `load` checks they are there before loading anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_present: Vec<Present>,
    /// Compose stacks whose compose file is one of `files` (version 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compose: Vec<ComposeRecord>,
}

/// How many distinct blobs `present` names, and their bytes (a layer used at several
/// positions has a record per chain ID). A validated header's total fits in a `u64`; an
/// unvalidated one's is shown as at most `u64::MAX`.
pub fn left_out_totals(present: &[Present]) -> (usize, u64) {
    let distinct: std::collections::HashMap<Digest, u64> =
        present.iter().map(|p| (p.digest, p.size)).collect();
    (distinct.len(), saturating_sum(distinct.values().copied()))
}

fn saturating_sum(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().fold(0, u64::saturating_add)
}

fn checked_sum(sizes: impl IntoIterator<Item = u64>) -> Option<u64> {
    sizes.into_iter().try_fold(0u64, u64::checked_add)
}

/// A blob a delta bundle leaves out because the host has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Present {
    pub digest: Digest,
    pub size: u64,
    /// For an image layer: the chain ID (of the layer and all below it in the image) the
    /// Docker engine must have; the engine loads a layer it has under that chain ID without
    /// reading it. Absent for a model blob, which must be in the model's Ollama store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    #[serde(rename = "ref")]
    pub reference: String,
    pub platform: Platform,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

/// An Ollama model: its raw manifest, config and layers are blobs of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// Fully qualified: `host/namespace/model:tag`.
    pub name: String,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub target: Target,
    /// Format, family, size label and quantisation, from the config blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<crate::ollama::ModelConfig>,
}

/// Where models or files go on the air-gapped host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A Docker named volume. For models, the volume root is Ollama's `/root/.ollama`, so
    /// the store goes under `models/`.
    Volume(String),
    /// An absolute path on the host. For models, the models directory itself.
    Path(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Volume(v) => write!(f, "volume {v}"),
            Target::Path(p) => write!(f, "{p}"),
        }
    }
}

impl Target {
    /// Docker's volume name rule, and absolute normalised paths only.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Target::Volume(v) => {
                let b = v.as_bytes();
                let ok = b.len() >= 2
                    && b.len() <= 255
                    && b[0].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "invalid volume name {v:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
                    ))
                }
            }
            Target::Path(p) => {
                let rest = p
                    .strip_prefix('/')
                    .ok_or_else(|| format!("path {p:?} must be absolute"))?;
                if rest.is_empty() {
                    return Err("path \"/\" is not allowed as a target".into());
                }
                check_relative(rest).map_err(|e| format!("path {p:?}: {e}"))
            }
        }
    }
}

/// A relative path that stays inside the directory it is joined to: no empty, `.` or `..`
/// components, no leading `/`, no NUL. (Control characters are refused for every string of
/// a header by [`Header::validate`].)
pub fn check_relative(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 4096 {
        return Err("empty or too long".into());
    }
    if p.starts_with('/') {
        return Err("absolute where a relative path is required".into());
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(format!("component {c:?} is not allowed"));
        }
    }
    Ok(())
}

/// One file or directory carried for a `[[files]]` entry of the spec. A file's content is
/// the blob `digest`; a directory has no digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub target: Target,
    /// Relative to the target.
    pub path: String,
    /// Permission bits in octal, e.g. `"0644"`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl FileRecord {
    /// Permission bits (setuid, setgid and sticky bits are never carried).
    pub fn mode_bits(&self) -> Result<u32, String> {
        u32::from_str_radix(&self.mode, 8)
            .ok()
            .filter(|m| self.mode.len() <= 4 && *m <= 0o777)
            .ok_or_else(|| format!("invalid mode {:?} for {}", self.mode, self.path))
    }

    pub fn is_dir(&self) -> bool {
        self.digest.is_none()
    }
}

impl Header {
    /// Canonical bytes: pretty-printed JSON, fields in declaration order, a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("header serialises");
        v.push(b'\n');
        v
    }

    /// Parses header bytes whose signature has already been checked. The format name and
    /// version are checked first so that a newer header gets a version error, not a parse
    /// error about fields this reader does not know.
    pub fn parse(bytes: &[u8]) -> Result<Header, BundleError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u64>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        let format = probe.format.unwrap_or_default();
        let version = probe.version.unwrap_or(0);
        if format != FORMAT_NAME || version == 0 || version > u64::from(FORMAT_VERSION) {
            return Err(BundleError::UnsupportedVersion {
                format,
                found: version,
                supported_format: FORMAT_NAME,
                supported: FORMAT_VERSION,
            });
        }
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        header.validate()?;
        Ok(header)
    }

    /// Structural rules a signed header must still obey (a trusted signer can still have
    /// a bug): no string holds a control or formatting character, entry paths are exactly
    /// the ones the format allows, blob paths match their digests, there are no duplicates,
    /// sizes add up without overflow, and no two `[[files]]` records (or a record and a
    /// models directory) claim the same place on the host.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Malformed(format!("{HEADER_PATH}: {m}")));
        let value = serde_json::to_value(self)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        if let Some((field, text)) = find_control(&value, &mut String::new()) {
            return bad(format!(
                "{field} holds a control or formatting character: \"{}\"",
                crate::text::Escaped(&text)
            ));
        }
        self.check_sizes()?;
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let ok = match e.path.as_str() {
                OCI_LAYOUT_PATH => i == 0,
                INDEX_PATH => i == 1,
                p => p.strip_prefix("blobs/sha256/") == Some(e.digest.hex().as_str()) && i >= 2,
            };
            if !ok {
                return bad(format!("entry {i} has an invalid path {:?}", e.path));
            }
            if !seen.insert(e.path.as_str()) {
                return bad(format!("entry {:?} is listed twice", e.path));
            }
        }
        if self.entries.len() < 2 {
            return bad("entries must start with oci-layout and index.json".into());
        }
        let blobs_of_models = self.models.iter().flat_map(|m| {
            std::iter::once(&m.manifest)
                .chain(std::iter::once(&m.config))
                .chain(&m.layers)
        });
        let mut names = std::collections::HashSet::new();
        for m in &self.models {
            crate::ollama::ModelName::parse(&m.name)
                .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
            m.target.validate().map_err(|e| {
                BundleError::Malformed(format!("{HEADER_PATH}: model {}: {e}", m.name))
            })?;
            if !names.insert((&m.name, &m.target)) {
                return bad(format!("model {} is listed twice for {}", m.name, m.target));
            }
        }
        let model_present: std::collections::HashSet<&Digest> = self
            .expected_present
            .iter()
            .filter(|p| p.chain_id.is_none())
            .map(|p| &p.digest)
            .collect();
        let layer_present: std::collections::HashSet<&Digest> = self
            .expected_present
            .iter()
            .filter(|p| p.chain_id.is_some())
            .map(|p| &p.digest)
            .collect();
        for p in &self.expected_present {
            if seen.contains(p.digest.blob_path().as_str()) {
                return bad(format!("{} is both carried and expected present", p.digest));
            }
        }
        for m in &self.models {
            if !seen.contains(m.manifest.blob_path().as_str()) {
                return bad(format!(
                    "model {} refers to {}, which the bundle lacks",
                    m.name, m.manifest
                ));
            }
        }
        for d in blobs_of_models {
            if !seen.contains(d.blob_path().as_str()) && !model_present.contains(d) {
                return bad(format!("a model refers to {d}, which the bundle lacks"));
            }
        }
        for f in &self.files {
            let fail = |e: String| bad(format!("file {:?} for {}: {e}", f.path, f.target));
            if let Err(e) = f.target.validate().and_then(|()| check_relative(&f.path)) {
                return fail(e);
            }
            if let Err(e) = f.mode_bits() {
                return fail(e);
            }
            if let Some(d) = &f.digest {
                if !seen.contains(d.blob_path().as_str()) {
                    return fail(format!("refers to {d}, which the bundle lacks"));
                }
            }
        }
        self.check_host_places()?;
        compose::validate(self)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        crate::provenance::validate(&self.provenance, &self.images, &seen)
            .map_err(|e| BundleError::Malformed(format!("{HEADER_PATH}: {e}")))?;
        for img in &self.images {
            for d in std::iter::once(&img.manifest).chain(std::iter::once(&img.config)) {
                if !seen.contains(d.blob_path().as_str()) {
                    return bad(format!(
                        "image {} refers to {d}, which the bundle lacks",
                        img.reference
                    ));
                }
            }
            for d in &img.layers {
                if !seen.contains(d.blob_path().as_str()) && !layer_present.contains(d) {
                    return bad(format!(
                        "image {} refers to {d}, which the bundle lacks",
                        img.reference
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Total bytes of all entries after the signature (at most `u64::MAX`: a validated
    /// header's total fits).
    pub fn payload_size(&self) -> u64 {
        saturating_sum(self.entries.iter().map(|e| e.size))
    }

    /// Every sum a reader or `inspect` forms over the signer's sizes fits in a `u64`: all
    /// entries, each image's blobs (a layer may repeat), and the blobs left out.
    fn check_sizes(&self) -> Result<(), BundleError> {
        let too_big = |what: String| {
            BundleError::Malformed(format!(
                "{HEADER_PATH}: the sizes of {what} add up to more than {} bytes",
                u64::MAX
            ))
        };
        checked_sum(self.entries.iter().map(|e| e.size))
            .ok_or_else(|| too_big("the entries".into()))?;
        let size_of: std::collections::HashMap<&Digest, u64> =
            self.entries.iter().map(|e| (&e.digest, e.size)).collect();
        for img in &self.images {
            let blobs = std::iter::once(&img.manifest)
                .chain(std::iter::once(&img.config))
                .chain(&img.layers);
            checked_sum(blobs.filter_map(|d| size_of.get(d).copied())).ok_or_else(|| {
                too_big(format!("image {}", crate::text::Escaped(&img.reference)))
            })?;
        }
        let distinct: std::collections::HashMap<&Digest, u64> = self
            .expected_present
            .iter()
            .map(|p| (&p.digest, p.size))
            .collect();
        checked_sum(distinct.values().copied())
            .ok_or_else(|| too_big("the blobs left out".into()))?;
        Ok(())
    }

    /// `[[files]]` records and models directories on the joined host paths (target and
    /// path), across targets: two records may not land on one place (the last would win),
    /// nothing may lie under a place a file record makes a file (the load would fail half
    /// way), and no record or target may lie in or on a models directory, which the model
    /// restore owns. Volumes the same, per volume (a volume's models live under `models/`).
    fn check_host_places(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Malformed(format!("{HEADER_PATH}: {m}")));
        let record = |f: &FileRecord| format!("{:?} for {}", f.path, f.target);
        let mut at: std::collections::HashMap<Place<'_>, &FileRecord> = Default::default();
        for f in &self.files {
            let p = Place::of(&f.target, Some(&f.path));
            if let Some(other) = at.insert(p.clone(), f) {
                return bad(format!(
                    "{p} is listed twice: file {} and file {}",
                    record(other),
                    record(f)
                ));
            }
        }
        let file_at = |p: &Place<'_>| at.get(p).filter(|f| !f.is_dir()).copied();
        // Every place that is written or must be a directory: records, target roots
        // (created as directories) and models directories.
        let mut places: Vec<(Place<'_>, String)> = Vec::new();
        for f in &self.files {
            places.push((
                Place::of(&f.target, Some(&f.path)),
                format!("file {}", record(f)),
            ));
            if let Target::Path(_) = f.target {
                let root = Place::of(&f.target, None);
                places.push((root, format!("the target of file {}", record(f))));
            }
        }
        let files_end = places.len();
        for m in &self.models {
            let dir = match &m.target {
                Target::Path(_) => Place::of(&m.target, None),
                Target::Volume(_) => Place::of(&m.target, Some("models")),
            };
            if let Some(f) = file_at(&dir) {
                return bad(format!(
                    "the models directory of model {} is {dir}, which is a file (file {})",
                    m.name,
                    record(f)
                ));
            }
            if let Some((p, what)) = places[..files_end].iter().find(|(p, _)| p.within(&dir)) {
                return bad(format!(
                    "{p} ({what}) lies in {dir}, the models directory of model {}",
                    m.name
                ));
            }
            places.push((dir, format!("the models directory of model {}", m.name)));
        }
        for (p, what) in &places {
            for above in p.ancestors() {
                if let Some(f) = file_at(&above) {
                    return bad(format!(
                        "{p} ({what}) lies under {above}, which is a file (file {})",
                        record(f)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a record lands: a path in the host's file system (`space` None) or in a volume,
/// without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Place<'a> {
    space: Option<&'a str>,
    path: String,
}

impl<'a> Place<'a> {
    /// `rel` joined to target `t`'s root (targets and paths are validated: no empty, `.` or
    /// `..` components, so equal places have equal strings).
    fn of(t: &'a Target, rel: Option<&str>) -> Place<'a> {
        let (space, root) = match t {
            Target::Path(p) => (None, p.trim_start_matches('/')),
            Target::Volume(v) => (Some(v.as_str()), ""),
        };
        let path = match (root.is_empty(), rel) {
            (_, None) => root.to_string(),
            (true, Some(r)) => r.to_string(),
            (false, Some(r)) => format!("{root}/{r}"),
        };
        Place { space, path }
    }

    /// Every directory above this place, nearest first.
    fn ancestors(&self) -> impl Iterator<Item = Place<'a>> + '_ {
        let mut up = self.path.as_str();
        std::iter::from_fn(move || {
            let (parent, _) = up.rsplit_once('/')?;
            up = parent;
            Some(Place {
                space: self.space,
                path: parent.to_string(),
            })
        })
    }

    /// This place is `dir` or lies below it.
    fn within(&self, dir: &Place<'_>) -> bool {
        self.space == dir.space
            && (self.path == dir.path
                || self
                    .path
                    .strip_prefix(&dir.path)
                    .is_some_and(|r| r.starts_with('/')))
    }
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.space {
            None => write!(f, "host path /{}", self.path),
            Some(v) => write!(f, "volume {v} path {}", self.path),
        }
    }
}

/// The first string (or object key) in `v` with a character [`crate::text::needs_escape`]
/// escapes, and where it is (`files[2].path`).
fn find_control(v: &serde_json::Value, at: &mut String) -> Option<(String, String)> {
    use serde_json::Value;
    match v {
        Value::String(s) if crate::text::has_controls(s) => Some((at.clone(), s.clone())),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = at.len();
            at.push_str(&format!("[{i}]"));
            let found = find_control(item, at);
            at.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            let len = at.len();
            if !at.is_empty() {
                at.push('.');
            }
            at.push_str(k);
            let found = if crate::text::has_controls(k) {
                Some((at.clone(), k.clone()))
            } else {
                find_control(item, at)
            };
            at.truncate(len);
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let blob = Digest::of(b"blob");
        let entry = |path: &str, d: Digest| Entry {
            path: path.into(),
            digest: d,
            size: 4,
            media_type: None,
        };
        Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            provenance: Vec::new(),
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: vec![
                entry(OCI_LAYOUT_PATH, Digest::of(b"l")),
                entry(INDEX_PATH, Digest::of(b"i")),
                entry(&blob.blob_path(), blob),
            ],
            images: vec![],
            models: vec![ModelRecord {
                name: "registry.ollama.ai/library/tiny:latest".into(),
                manifest: blob,
                config: blob,
                layers: vec![blob],
                target: Target::Volume("ollama-data".into()),
                info: None,
            }],
            files: vec![
                FileRecord {
                    target: Target::Path("/srv/x".into()),
                    path: "conf".into(),
                    mode: "0755".into(),
                    digest: None,
                },
                FileRecord {
                    target: Target::Path("/srv/x".into()),
                    path: "conf/a.yml".into(),
                    mode: "0644".into(),
                    digest: Some(blob),
                },
            ],
            expected_present: vec![],
            compose: vec![],
        }
    }

    /// `header()` with an image and a compose stack whose file is `conf/a.yml`.
    fn with_compose() -> Header {
        let mut h = header();
        h.images.push(ImageRecord {
            reference: "docker.io/library/nginx:1".into(),
            platform: "linux/amd64".parse().unwrap(),
            manifest: Digest::of(b"blob"),
            config: Digest::of(b"blob"),
            layers: vec![],
            index: None,
        });
        h.compose.push(ComposeRecord {
            target: Target::Path("/srv/x".into()),
            path: "conf/a.yml".into(),
            services: vec![ComposeService {
                name: "web".into(),
                image: "docker.io/library/nginx:1".into(),
            }],
        });
        h
    }

    #[test]
    fn compose_stacks_round_trip_and_are_checked() {
        let h = with_compose();
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(h.compose[0].host_path(), "/srv/x/conf/a.yml");
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: Vec<(&str, Change)> = vec![
            ("need format version 5", Box::new(|h| h.version = 4)),
            (
                "goes to a host path",
                Box::new(|h| h.compose[0].target = Target::Volume("vol".into())),
            ),
            (
                "no such file is carried",
                Box::new(|h| h.compose[0].path = "conf".into()),
            ),
            (
                "no such file is carried",
                Box::new(|h| h.compose[0].path = "other.yml".into()),
            ),
            (
                "listed twice",
                Box::new(|h| h.compose.push(h.compose[0].clone())),
            ),
            (
                "service name",
                Box::new(|h| h.compose[0].services[0].name = "-x".into()),
            ),
            (
                "which the bundle lacks",
                Box::new(|h| h.compose[0].services[0].image = "docker.io/library/x:1".into()),
            ),
            (
                "listed twice",
                Box::new(|h| {
                    let s = h.compose[0].services[0].clone();
                    h.compose[0].services.push(s)
                }),
            ),
            (
                "control or formatting character",
                Box::new(|h| h.compose[0].services[0].name = "w\u{1b}[2J".into()),
            ),
        ];
        for (want, change) in cases {
            let mut bad = with_compose();
            change(&mut bad);
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Version 4 headers without compose still read.
        let mut v4 = header();
        v4.version = 4;
        assert_eq!(Header::parse(&v4.to_bytes()).unwrap(), v4);
    }

    #[test]
    fn models_and_files_round_trip_and_validate() {
        let h = header();
        let back = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        assert!(String::from_utf8(h.to_bytes())
            .unwrap()
            .contains(r#""target": {"#));
        // A version 1 header (no models, no files) still reads.
        let mut v1 = h.clone();
        v1.version = 1;
        v1.models.clear();
        v1.files.clear();
        assert_eq!(Header::parse(&v1.to_bytes()).unwrap(), v1);
        // A delta: a model blob left out, an image layer left out with its chain ID.
        let mut delta = h.clone();
        let weights = Digest::of(b"weights");
        let layer = Digest::of(b"layer");
        delta.models[0].layers.push(weights);
        delta.images.push(ImageRecord {
            reference: "r/a:1".into(),
            platform: "linux/amd64".parse().unwrap(),
            manifest: Digest::of(b"blob"),
            config: Digest::of(b"blob"),
            layers: vec![layer],
            index: None,
        });
        delta.expected_present = vec![
            Present {
                digest: weights,
                size: 9,
                chain_id: None,
            },
            Present {
                digest: layer,
                size: 9,
                chain_id: Some(Digest::of(b"chain")),
            },
        ];
        assert_eq!(Header::parse(&delta.to_bytes()).unwrap(), delta);
    }

    #[test]
    fn names_and_paths_from_a_signed_header_are_checked() {
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "model name",
                Box::new(|h| h.models[0].name = "../../etc/passwd".into()),
            ),
            (
                "model name",
                Box::new(|h| h.models[0].name = "h/n/m:..".into()),
            ),
            (
                "volume",
                Box::new(|h| h.models[0].target = Target::Volume("../x".into())),
            ),
            (
                "relative target",
                Box::new(|h| h.models[0].target = Target::Path("srv".into())),
            ),
            (
                "dotdot target",
                Box::new(|h| h.files[0].target = Target::Path("/srv/../etc".into())),
            ),
            (
                "dotdot path",
                Box::new(|h| h.files[1].path = "conf/../../x".into()),
            ),
            (
                "absolute path",
                Box::new(|h| h.files[1].path = "/etc/passwd".into()),
            ),
            ("mode", Box::new(|h| h.files[1].mode = "4755".into())),
            (
                "missing blob",
                Box::new(|h| h.files[1].digest = Some(Digest::of(b"other"))),
            ),
            (
                "missing blob",
                Box::new(|h| h.models[0].layers.push(Digest::of(b"other"))),
            ),
            ("twice", Box::new(|h| h.files.push(h.files[1].clone()))),
            (
                "both carried and expected present",
                Box::new(|h| {
                    h.expected_present.push(Present {
                        digest: Digest::of(b"blob"),
                        size: 4,
                        chain_id: None,
                    })
                }),
            ),
            (
                "a model manifest is always carried",
                Box::new(|h| {
                    let m = Digest::of(b"manifest-elsewhere");
                    h.models[0].manifest = m;
                    h.expected_present.push(Present {
                        digest: m,
                        size: 4,
                        chain_id: None,
                    })
                }),
            ),
            (
                "a layer's chain-less record does not stand in for an image layer",
                Box::new(|h| {
                    let l = Digest::of(b"layer-elsewhere");
                    h.images.push(ImageRecord {
                        reference: "r/a:1".into(),
                        platform: "linux/amd64".parse().unwrap(),
                        manifest: Digest::of(b"blob"),
                        config: Digest::of(b"blob"),
                        layers: vec![l],
                        index: None,
                    });
                    h.expected_present.push(Present {
                        digest: l,
                        size: 4,
                        chain_id: None,
                    })
                }),
            ),
            (
                "under a file",
                Box::new(|h| {
                    let mut f = h.files[1].clone();
                    f.path = "conf/a.yml/b".into();
                    h.files.push(f);
                }),
            ),
        ];
        for (what, change) in cases {
            let mut h = header();
            change(&mut h);
            let err = Header::parse(&h.to_bytes()).expect_err(what);
            assert!(matches!(err, BundleError::Malformed(_)), "{what}: {err}");
        }
    }

    /// The refusal for `h`, which must be a malformed header.
    fn refusal(h: &Header) -> String {
        let err = Header::parse(&h.to_bytes()).expect_err("refused");
        assert!(matches!(err, BundleError::Malformed(_)), "{err}");
        let shown = err.to_string();
        assert!(!crate::text::has_controls(&shown), "{shown:?}");
        shown
    }

    #[test]
    fn no_string_of_a_header_holds_a_control_character() {
        type Change = Box<dyn Fn(&mut Header, &str)>;
        let cases: Vec<(&str, Change)> = vec![
            ("name", Box::new(|h, e| h.name = e.into())),
            ("tool", Box::new(|h, e| h.tool = e.into())),
            ("created", Box::new(|h, e| h.created = e.into())),
            (
                "files[1].path",
                Box::new(|h, e| h.files[1].path = format!("conf/{e}")),
            ),
            (
                "files[0].target.path",
                Box::new(|h, e| h.files[0].target = Target::Path(format!("/srv/{e}"))),
            ),
            (
                "models[0].name",
                Box::new(|h, e| h.models[0].name = format!("registry.ollama.ai/library/{e}:1")),
            ),
            (
                "models[0].info.model_family",
                Box::new(|h, e| {
                    h.models[0].info = Some(crate::ollama::ModelConfig {
                        model_family: e.into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "images[0].ref",
                Box::new(|h, e| {
                    let d = Digest::of(b"blob");
                    h.images.push(ImageRecord {
                        reference: format!("r/a:{e}"),
                        platform: "linux/amd64".parse().unwrap(),
                        manifest: d,
                        config: d,
                        layers: vec![],
                        index: None,
                    })
                }),
            ),
            (
                "entries[0].media_type",
                Box::new(|h, e| h.entries[0].media_type = Some(e.into())),
            ),
        ];
        for evil in ["a\u{1b}]0;PWNED\u{7}b", "a\nb", "a\u{202e}b", "a\u{9b}31mb"] {
            for (field, change) in &cases {
                let mut h = header();
                change(&mut h, evil);
                let shown = refusal(&h);
                assert!(
                    shown.contains(&format!("{field} holds a control")),
                    "{field}: {shown}"
                );
                assert!(shown.contains(&crate::text::escape(evil)), "{shown}");
            }
        }
        // Printable text from anywhere is fine.
        let mut h = header();
        h.name = "Übergabe – stack ✓".into();
        Header::parse(&h.to_bytes()).unwrap();
    }

    fn file(target: &str, path: &str, dir: bool) -> FileRecord {
        FileRecord {
            target: Target::Path(target.into()),
            path: path.into(),
            mode: if dir { "0755" } else { "0644" }.into(),
            digest: (!dir).then(|| Digest::of(b"blob")),
        }
    }

    #[test]
    fn records_may_not_overlap_on_the_host_across_targets() {
        let with = |files: Vec<FileRecord>| {
            let mut h = header();
            h.files = files;
            h
        };
        // T13: a file, and a target below it.
        let shown = refusal(&with(vec![
            file("/srv/t13", "b", false),
            file("/srv/t13/b", "c", false),
            file("/srv/t13z", "later", false),
        ]));
        assert!(
            shown.contains("host path /srv/t13/b/c")
                && shown.contains("lies under host path /srv/t13/b, which is a file"),
            "{shown}"
        );
        // The target itself a file of another record.
        let shown = refusal(&with(vec![
            file("/srv/x", "b", false),
            file("/srv/x/b/c", "d", false),
        ]));
        assert!(shown.contains("which is a file"), "{shown}");
        // T14: two records, one host path (files or directories alike).
        for dir in [false, true] {
            let shown = refusal(&with(vec![
                file("/srv/t14", "b/c", dir),
                file("/srv/t14/b", "c", dir),
            ]));
            assert!(
                shown.contains("host path /srv/t14/b/c is listed twice"),
                "{shown}"
            );
        }
        // Volumes: the same rules, per volume; another volume is another place.
        let vol = |v: &str, path: &str, dir: bool| FileRecord {
            target: Target::Volume(v.into()),
            ..file("/unused", path, dir)
        };
        let shown = refusal(&with(vec![
            vol("data", "a", false),
            vol("data", "a/b", false),
        ]));
        assert!(shown.contains("volume data path a/b"), "{shown}");
        Header::parse(&with(vec![vol("data", "a", false), vol("other", "a/b", false)]).to_bytes())
            .unwrap();
        // What airlock-pack writes for nested sources is fine: directories above files, a
        // target inside a directory of another target.
        Header::parse(
            &with(vec![
                file("/srv/app", "conf", true),
                file("/srv/app", "conf/a.yml", false),
                file("/srv/app/conf", "b.yml", false),
                file("/srv/app/conf/sub", "c.yml", false),
            ])
            .to_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn records_may_not_land_in_a_models_directory() {
        let mut base = header();
        base.models[0].target = Target::Path("/var/lib/ollama/models".into());
        for (files, needle) in [
            (
                vec![file("/var/lib/ollama/models", "blobs/x", false)],
                "lies in host path /var/lib/ollama/models, the models directory",
            ),
            (
                vec![file("/var/lib/ollama/models/manifests", "x", false)],
                "lies in host path /var/lib/ollama/models, the models directory",
            ),
            (
                vec![file("/var/lib/ollama", "models", false)],
                "which is a file",
            ),
            (vec![file("/var/lib", "ollama", false)], "which is a file"),
        ] {
            let mut h = base.clone();
            h.files = files;
            let shown = refusal(&h);
            assert!(shown.contains(needle), "{shown}");
        }
        // Beside the models directory, or a directory above it: fine.
        let mut h = base.clone();
        h.files = vec![
            file("/var/lib/ollama", "id_ed25519", false),
            file("/var/lib", "ollama", true),
        ];
        Header::parse(&h.to_bytes()).unwrap();
        // A model in a volume owns `models/` in it.
        let mut h = header();
        h.files = vec![FileRecord {
            target: Target::Volume("ollama-data".into()),
            ..file("/unused", "models/manifests/x", false)
        }];
        assert!(refusal(&h).contains("volume ollama-data path models"));
    }

    #[test]
    fn sizes_that_do_not_fit_in_a_u64_are_refused() {
        let mut h = header();
        h.entries[2].size = u64::MAX;
        // Unvalidated, the totals saturate instead of wrapping (or panicking).
        assert_eq!(h.payload_size(), u64::MAX);
        let shown = refusal(&h);
        assert!(
            shown.contains("the sizes of the entries add up to more than"),
            "{shown}"
        );
        // An image whose layer repeats: the entries fit, the image's sum does not.
        let mut h = header();
        let d = Digest::of(b"blob");
        h.entries[2].size = u64::MAX / 2 + 1;
        h.entries[0].size = 0;
        h.entries[1].size = 0;
        h.images.push(ImageRecord {
            reference: "r/a:1".into(),
            platform: "linux/amd64".parse().unwrap(),
            manifest: d,
            config: d,
            layers: vec![],
            index: None,
        });
        assert!(
            refusal(&h).contains("image r/a:1 add up"),
            "{}",
            refusal(&h)
        );
        // What a delta leaves out.
        let mut h = header();
        let present = |b: &[u8]| Present {
            digest: Digest::of(b),
            size: u64::MAX,
            chain_id: None,
        };
        h.expected_present = vec![present(b"x"), present(b"y")];
        assert_eq!(left_out_totals(&h.expected_present), (2, u64::MAX));
        assert!(
            refusal(&h).contains("the blobs left out"),
            "{}",
            refusal(&h)
        );
        // One record per chain ID for the same blob counts once.
        h.expected_present = vec![present(b"x"), present(b"x")];
        assert_eq!(left_out_totals(&h.expected_present), (1, u64::MAX));
    }
}
