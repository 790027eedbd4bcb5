//! The image engine behind the Docker Engine API socket, and what it can load.
//!
//! This module owns the connection (which socket: `DOCKER_HOST`, else Docker's default, else
//! Podman's rootful then rootless socket), the engine's facts read from `/version` and
//! `/info` ([`EngineFacts`]: Docker or Podman, version, API version, platform, storage
//! driver, whether Docker runs the containerd image store), and the pre-flight: a pure
//! judgement, per image of a verified header, of whether this engine can load it
//! ([`verdict`], [`judge`]). `load` refuses before a byte is sent when any image cannot be
//! loaded (exit code 13); `inspect --engine` shows the same judgement.
//!
//! Layer media types, decided from what each engine's loader reads:
//! - tar and gzip layers (Docker schema 2 and OCI): every engine.
//! - zstd (`application/vnd.oci.image.layer.v1.tar+zstd`): Podman, Docker with the containerd
//!   image store, and Docker Engine 23.0 or newer with the classic store. Older classic
//!   engines fail inside the load with "unexpected EOF" after loading earlier images.
//! - foreign / non-distributable layers (Docker's `foreign.diff`, OCI's `nondistributable`):
//!   loadable by their compression, as any other layer, when the bundle carries their bytes.
//!   The engine is never asked to fetch a layer's URLs: there is no network in the gap.
//!   A delta bundle's left-out layers are the engine's already (checked by chain ID).
//! - encrypted layers (`+encrypted`, ocicrypt): refused; the engine would need their keys.
//! - anything else, or a layer recorded without a media type: refused as unknown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_bundle::text::escape;
use airlock_bundle::Digest;
use bollard::models::{SystemInfo, SystemVersion};
use bollard::Docker;
use serde::Serialize;

use crate::UnpackError;

/// Docker's socket when `DOCKER_HOST` is unset.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Podman's rootful API socket (`podman system service`, `podman.socket`).
pub const PODMAN_ROOT_SOCKET: &str = "/run/podman/podman.sock";

/// Which engine socket to use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `DOCKER_HOST`, as given.
    DockerHost(String),
    /// Docker's default socket (it exists, or nothing else was found).
    DockerDefault,
    /// Podman's socket, found because `DOCKER_HOST` is unset and Docker's is absent.
    Podman(PathBuf),
}

impl Endpoint {
    /// The address, as `unix:///…` (or `DOCKER_HOST` verbatim).
    pub fn address(&self) -> String {
        match self {
            Endpoint::DockerHost(h) => h.clone(),
            Endpoint::DockerDefault => format!("unix://{DOCKER_SOCKET}"),
            Endpoint::Podman(p) => format!("unix://{}", p.display()),
        }
    }
}

/// Picks the engine socket: `DOCKER_HOST` if set; else Docker's default socket if it
/// exists; else Podman's rootful socket, then the rootless one under `XDG_RUNTIME_DIR`;
/// else Docker's default (whose absence the connection error then names). `exists` is the
/// filesystem check, injected so the order is testable.
pub fn discover(
    docker_host: Option<&str>,
    xdg_runtime_dir: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> Endpoint {
    if let Some(h) = docker_host.filter(|h| !h.is_empty()) {
        return Endpoint::DockerHost(h.to_string());
    }
    if exists(Path::new(DOCKER_SOCKET)) {
        return Endpoint::DockerDefault;
    }
    let rootless = xdg_runtime_dir
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("podman/podman.sock"));
    std::iter::once(PathBuf::from(PODMAN_ROOT_SOCKET))
        .chain(rootless)
        .find(|p| exists(p))
        .map(Endpoint::Podman)
        .unwrap_or(Endpoint::DockerDefault)
}

/// Connects to the engine [`discover`] picks, with a timeout long enough for a large upload
/// (the engine answers only after it consumed the whole body), and negotiates the API
/// version. A Podman socket found by discovery is said on stderr (even with `--quiet`: it
/// says which engine is about to be written to).
pub async fn connect() -> Result<Docker, UnpackError> {
    let host = std::env::var("DOCKER_HOST").ok();
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    let endpoint = discover(host.as_deref(), xdg.as_deref(), |p| p.exists());
    let where_ = endpoint.address();
    if let Endpoint::Podman(_) = &endpoint {
        airlock_progress::notice(format!(
            "engine: DOCKER_HOST is unset and {DOCKER_SOCKET} absent; using the Podman socket {}",
            escape(&where_)
        ));
    }
    // Only a local engine: the gap side opens no TCP connection (DOCKER_HOST=tcp:// would
    // otherwise be ignored and the default socket used, which is worse than refusing).
    let Some(path) = where_.strip_prefix("unix://") else {
        return Err(UnpackError::Usage(format!(
            "DOCKER_HOST={}: airlock-unpack talks to a local engine over its unix socket only (unix:///PATH)",
            escape(&where_)
        )));
    };
    let tried = match &endpoint {
        Endpoint::DockerDefault if host.is_none() => format!(
            " (DOCKER_HOST is unset; neither {PODMAN_ROOT_SOCKET} nor $XDG_RUNTIME_DIR/podman/podman.sock exists either)"
        ),
        _ => String::new(),
    };
    let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|source| UnpackError::EngineCall {
            what: format!("cannot connect to {where_}{tried}"),
            source,
        })?
        .with_timeout(Duration::from_secs(24 * 3600));
    docker
        .negotiate_version()
        .await
        .map_err(|source| UnpackError::EngineCall {
            what: format!("cannot reach the engine at {where_}{tried}"),
            source,
        })
}

/// Docker or Podman (through its Docker-compatible API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Docker,
    Podman,
}

/// What the engine says it is, from `/version` and `/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineFacts {
    pub kind: Kind,
    /// The engine's own version (`20.10.24+dfsg1`; Podman's `4.3.1`).
    pub version: String,
    pub api_version: String,
    pub os: String,
    /// As the engine reports it (`x86_64`, `aarch64`).
    pub arch: String,
    pub storage_driver: String,
    /// Docker with the containerd image store (image IDs are manifest digests there).
    pub containerd_store: bool,
}

/// The `DriverStatus` entry Docker's containerd image store shows.
const SNAPSHOTTER_DRIVER_TYPE: &str = "io.containerd.snapshotter.v1";

impl EngineFacts {
    /// From the answers of `/version` and `/info`.
    pub fn from_api(version: &SystemVersion, info: &SystemInfo) -> EngineFacts {
        let podman = version
            .components
            .iter()
            .flatten()
            .find(|c| c.name == "Podman Engine");
        let containerd_store = info.driver_status.iter().flatten().any(|kv| {
            kv.first().is_some_and(|k| k == "driver-type")
                && kv.get(1).is_some_and(|v| v == SNAPSHOTTER_DRIVER_TYPE)
        });
        EngineFacts {
            kind: if podman.is_some() {
                Kind::Podman
            } else {
                Kind::Docker
            },
            version: podman
                .map(|c| c.version.clone())
                .or_else(|| version.version.clone())
                .or_else(|| info.server_version.clone())
                .unwrap_or_default(),
            api_version: version.api_version.clone().unwrap_or_default(),
            os: info
                .os_type
                .clone()
                .or_else(|| version.os.clone())
                .unwrap_or_else(|| "linux".into()),
            arch: info
                .architecture
                .clone()
                .or_else(|| version.arch.clone())
                .unwrap_or_else(|| "x86_64".into()),
            storage_driver: info.driver.clone().unwrap_or_default(),
            containerd_store: containerd_store && podman.is_none(),
        }
    }

    /// The platform the engine runs images for.
    pub fn platform(&self) -> Platform {
        Platform::from_engine(&self.os, &self.arch)
    }

    /// `Docker 20.10.24+dfsg1 (API 1.41, linux/x86_64, storage overlay2, classic image store)`.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            Kind::Docker => "Docker",
            Kind::Podman => "Podman",
        };
        let store = match (self.kind, self.containerd_store) {
            (Kind::Docker, true) => ", containerd image store",
            (Kind::Docker, false) => ", classic image store",
            (Kind::Podman, _) => "",
        };
        escape(&format!(
            "{name} {} (API {}, {}/{}, storage {}{store})",
            self.version, self.api_version, self.os, self.arch, self.storage_driver
        ))
    }

    /// Whether the engine reads zstd-compressed layers (see the module docs).
    fn reads_zstd(&self) -> bool {
        match self.kind {
            Kind::Podman => true,
            Kind::Docker if self.containerd_store => true,
            // Docker Engine 23.0 speaks API 1.42: the fallback for an odd version string.
            Kind::Docker => major_minor(&self.version)
                .or_else(|| {
                    major_minor(&self.api_version)
                        .map(|v| if v >= (1, 42) { (23, 0) } else { (0, 0) })
                })
                .is_some_and(|v| v >= (23, 0)),
        }
    }
}

/// Reads both facts endpoints at once (they are independent; together they cost one round
/// trip on the socket).
pub async fn facts(docker: &Docker) -> Result<EngineFacts, UnpackError> {
    let (version, info) = tokio::join!(docker.version(), docker.info());
    let err = |what: &str, source: bollard::errors::Error| UnpackError::EngineCall {
        what: format!("reading the engine's {what}"),
        source,
    };
    Ok(EngineFacts::from_api(
        &version.map_err(|e| err("/version", e))?,
        &info.map_err(|e| err("/info", e))?,
    ))
}

/// `20.10.24+dfsg1` → (20, 10); `1.41` → (1, 41).
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '+', '-', '~']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How a layer's bytes are compressed, and whether it is a foreign / non-distributable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    Tar {
        foreign: bool,
    },
    Gzip {
        foreign: bool,
    },
    Zstd {
        foreign: bool,
    },
    /// ocicrypt (`…+encrypted`): the engine would need the key.
    Encrypted,
    Unknown,
}

/// Classifies a layer media type (see the module docs for what each engine reads).
pub fn classify(media_type: &str) -> LayerType {
    if media_type.ends_with("+encrypted") {
        return LayerType::Encrypted;
    }
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => LayerType::Tar { foreign: false },
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => LayerType::Gzip { foreign: false },
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => LayerType::Zstd { foreign: false },
        "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => {
            LayerType::Tar { foreign: true }
        }
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            LayerType::Gzip { foreign: true }
        }
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            LayerType::Zstd { foreign: true }
        }
        _ => LayerType::Unknown,
    }
}

/// What would make a refused image loadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Remedy {
    /// Docker Engine 23.0 or newer, Podman, or Docker with the containerd image store.
    NewerEngine,
    /// No engine loads it: push into a registry, or extract, and decide there.
    NoEngine,
    /// `--platform`, or a bundle packed for this engine's platform.
    Platform,
}

/// Why one image cannot be loaded into this engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub image: String,
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub reason: String,
    pub remedy: Remedy,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", escape(&self.image), self.platform)?;
        if let Some(l) = &self.layer {
            write!(f, ": layer {l}")?;
            if let Some(m) = &self.media_type {
                write!(f, ", media type {}", escape(m))?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// Whether `facts`' engine can load `image` (a record of `header`), judged by its layers'
/// media types as the verified header records them.
pub fn verdict(
    facts: &EngineFacts,
    image: &ImageRecord,
    header: &Header,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |layer: &Digest, media_type: Option<&str>, reason: String, remedy| Problem {
        image: image.reference.clone(),
        platform: image.platform.to_string(),
        layer: Some(*layer),
        media_type: media_type.map(str::to_string),
        reason,
        remedy,
    };
    for layer in &image.layers {
        let Some(entry) = header.entry(&layer.blob_path()) else {
            // A delta bundle left it out: the engine has it (checked by chain ID before
            // anything is sent), so it is not sent and cannot be refused.
            if !header.expected_present.iter().any(|p| p.digest == *layer) {
                problems.push(problem(
                    layer,
                    None,
                    "the bundle neither carries it nor expects the host to have it".into(),
                    Remedy::NoEngine,
                ));
            }
            continue;
        };
        let Some(mt) = entry.media_type.as_deref() else {
            problems.push(problem(
                layer,
                None,
                "no media type recorded, so its format is unknown".into(),
                Remedy::NoEngine,
            ));
            continue;
        };
        match classify(mt) {
            LayerType::Tar { .. } | LayerType::Gzip { .. } => {}
            LayerType::Zstd { .. } if facts.reads_zstd() => {}
            LayerType::Zstd { .. } => problems.push(problem(
                layer,
                Some(mt),
                format!(
                    "zstd-compressed, which Docker reads from Engine 23.0 on (this is {}; Podman and Docker with the containerd image store read it too)",
                    escape(&facts.version)
                ),
                Remedy::NewerEngine,
            )),
            LayerType::Encrypted => problems.push(problem(
                layer,
                Some(mt),
                "encrypted (ocicrypt); the engine cannot decrypt it".into(),
                Remedy::NoEngine,
            )),
            LayerType::Unknown => problems.push(problem(
                layer,
                Some(mt),
                "an unknown layer type; no engine is known to load it".into(),
                Remedy::NoEngine,
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The pre-flight's judgement of one image record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Chosen for `platform` and loadable.
    Load,
    /// Another platform's image of a reference that has one for `platform`.
    OtherPlatform,
    /// Chosen (or the reference has none for `platform`) and not loadable.
    Cannot(Vec<Problem>),
}

/// Picks, per reference, the image for `platform` (the first the bundle lists): what a load
/// sends to the engine and what the pre-flight judges.
pub fn select_images(images: &[ImageRecord], platform: &Platform) -> Vec<ImageRecord> {
    let mut seen = std::collections::HashSet::new();
    images
        .iter()
        .filter(|i| platform.matches(&i.platform.to_oci()))
        .filter(|i| seen.insert(i.reference.clone()))
        .cloned()
        .collect()
}

/// Judges every image record of `header` for loading into `facts`' engine as `platform`
/// (the engine's, or `--platform`): per reference, the image [`select_images`]
/// picks is judged by [`verdict`]; a reference with no image for `platform` cannot be
/// loaded either.
pub fn judge(
    facts: &EngineFacts,
    header: &Header,
    platform: &Platform,
) -> Vec<(ImageRecord, Outcome)> {
    let selected = select_images(&header.images, platform);
    header
        .images
        .iter()
        .map(|i| {
            let chosen = selected
                .iter()
                .any(|s| s.reference == i.reference && s.manifest == i.manifest);
            let outcome = if chosen {
                match verdict(facts, i, header) {
                    Ok(()) => Outcome::Load,
                    Err(p) => Outcome::Cannot(p),
                }
            } else if selected.iter().any(|s| s.reference == i.reference) {
                Outcome::OtherPlatform
            } else {
                Outcome::Cannot(vec![Problem {
                    image: i.reference.clone(),
                    platform: i.platform.to_string(),
                    layer: None,
                    media_type: None,
                    reason: format!("no image of this reference for {platform}"),
                    remedy: Remedy::Platform,
                }])
            };
            (i.clone(), outcome)
        })
        .collect()
}

/// Every problem of a judgement, in header order.
pub fn problems(judged: &[(ImageRecord, Outcome)]) -> Vec<Problem> {
    judged
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Cannot(p) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// What would work instead, for these problems (one line each).
pub fn remedies(problems: &[Problem], platform: &Platform) -> Vec<String> {
    let has = |r: Remedy| problems.iter().any(|p| p.remedy == r);
    let mut out = Vec::new();
    if has(Remedy::NewerEngine) {
        out.push(
            "load into Docker Engine 23.0 or newer, Docker with the containerd image store, or Podman (DOCKER_HOST=unix:///run/podman/podman.sock)"
                .to_string(),
        );
    }
    if has(Remedy::Platform) {
        let have: Vec<String> = problems
            .iter()
            .filter(|p| p.remedy == Remedy::Platform)
            .map(|p| p.platform.clone())
            .collect();
        out.push(format!(
            "load --platform {} (an image for another platform than {platform}), or pack the bundle for {platform}",
            have.first().map(String::as_str).unwrap_or("OS/ARCH")
        ));
    }
    out.push(
        "airlock-unpack push BUNDLE --registry HOST:PORT (a registry in the gap; engines pull what they can read)"
            .to_string(),
    );
    out.push("airlock-unpack extract BUNDLE --to DIR (a verified OCI layout, for skopeo or another loader)".to_string());
    if !has(Remedy::Platform) || problems.iter().any(|p| p.remedy != Remedy::Platform) {
        out.push(
            "load --no-preflight to try anyway (an engine refusal is then rolled back)".to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_bundle::header::{Entry, Present};

    fn docker(version: &str, containerd_store: bool) -> EngineFacts {
        EngineFacts {
            kind: Kind::Docker,
            version: version.into(),
            api_version: "1.41".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            storage_driver: "overlay2".into(),
            containerd_store,
        }
    }

    fn podman() -> EngineFacts {
        EngineFacts {
            kind: Kind::Podman,
            version: "4.3.1".into(),
            ..docker("4.3.1", false)
        }
    }

    /// A header with one amd64 image whose layers have `media_types` (None: no media type;
    /// "-": left out by a delta bundle).
    fn header(media_types: &[Option<&str>]) -> (Header, ImageRecord) {
        let mut h = Header {
            format: airlock_bundle::header::FORMAT_NAME.into(),
            version: airlock_bundle::header::FORMAT_VERSION,
            provenance: Vec::new(),
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: Vec::new(),
            images: Vec::new(),
            models: Vec::new(),
            files: Vec::new(),
            expected_present: Vec::new(),
            compose: Vec::new(),
        };
        let mut layers = Vec::new();
        for (n, mt) in media_types.iter().enumerate() {
            let d = Digest::of(format!("layer {n}").as_bytes());
            layers.push(d);
            if *mt == Some("-") {
                h.expected_present.push(Present {
                    digest: d,
                    size: 1,
                    chain_id: Some(d),
                });
                continue;
            }
            h.entries.push(Entry {
                path: d.blob_path(),
                digest: d,
                size: 1,
                media_type: mt.map(str::to_string),
            });
        }
        let image = ImageRecord {
            reference: "registry.test/app:1".into(),
            platform: "linux/amd64".parse().expect("platform"),
            manifest: Digest::of(b"manifest"),
            config: Digest::of(b"config"),
            layers,
            index: None,
        };
        h.images.push(image.clone());
        (h, image)
    }

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

    /// The verdict table: rows are layer media types, columns engines; `true` = loadable.
    #[test]
    fn verdict_table() {
        let engines = [
            ("docker 20.10 classic", docker("20.10.24+dfsg1", false)),
            ("docker 23.0 classic", docker("23.0.0", false)),
            ("docker 26 containerd", docker("26.1.5+dfsg1", true)),
            ("podman 4.3", podman()),
        ];
        let rows: &[(Option<&str>, [bool; 4])] = &[
            (Some(GZIP), [true, true, true, true]),
            (
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
                [true; 4],
            ),
            (Some("application/vnd.oci.image.layer.v1.tar"), [true; 4]),
            (Some(ZSTD), [false, true, true, true]),
            (
                Some("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
                [true; 4],
            ),
            (
                Some("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
                [true; 4],
            ),
            (
                Some("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
                [false, true, true, true],
            ),
            (
                Some("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
                [false; 4],
            ),
            (
                Some("application/vnd.oci.image.layer.v1.tar+bzip2"),
                [false; 4],
            ),
            (Some("application/octet-stream"), [false; 4]),
            (None, [false; 4]),
            // Left out by a delta bundle: the engine has it, nothing is sent.
            (Some("-"), [true; 4]),
        ];
        for (mt, expect) in rows {
            let (h, image) = header(&[Some(GZIP), *mt]);
            for ((name, facts), want) in engines.iter().zip(expect) {
                let got = verdict(facts, &image, &h);
                assert_eq!(got.is_ok(), *want, "{mt:?} on {name}: {got:?}");
                if let Err(p) = got {
                    // The problem names the image, the very layer and its media type.
                    assert_eq!(p.len(), 1, "{p:?}");
                    assert_eq!(p[0].image, "registry.test/app:1");
                    assert_eq!(p[0].layer, Some(image.layers[1]));
                    assert_eq!(p[0].media_type.as_deref(), *mt);
                }
            }
        }
    }

    #[test]
    fn zstd_refusal_says_what_and_where() {
        let (h, image) = header(&[Some(ZSTD), Some(GZIP), Some(ZSTD)]);
        let p = verdict(&docker("20.10.24+dfsg1", false), &image, &h).unwrap_err();
        assert_eq!(p.len(), 2, "each zstd layer is named: {p:?}");
        let text = p[0].to_string();
        for needle in [
            "registry.test/app:1",
            "linux/amd64",
            &image.layers[0].to_string(),
            ZSTD,
            "23.0",
            "20.10.24+dfsg1",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert_eq!(p[0].remedy, Remedy::NewerEngine);
        let r = remedies(&p, &"linux/amd64".parse().unwrap()).join("\n");
        for needle in ["23.0", "Podman", "push", "extract", "--no-preflight"] {
            assert!(r.contains(needle), "{needle:?} not in {r}");
        }
    }

    #[test]
    fn docker_version_threshold() {
        for (v, api, zstd) in [
            ("20.10.24+dfsg1", "1.41", false),
            ("22.06.0-beta.0", "1.42", false),
            ("23.0.0", "1.42", true),
            ("29.1.0", "1.52", true),
            // An odd version string: the API version decides (23.0 speaks 1.42).
            ("dev", "1.42", true),
            ("dev", "1.41", false),
            ("", "", false),
        ] {
            let f = EngineFacts {
                api_version: api.into(),
                ..docker(v, false)
            };
            assert_eq!(f.reads_zstd(), zstd, "{v} / API {api}");
        }
    }

    #[test]
    fn judges_platforms_per_reference() {
        let (mut h, image) = header(&[Some(GZIP)]);
        let arm = ImageRecord {
            platform: "linux/arm64".parse().unwrap(),
            manifest: Digest::of(b"arm manifest"),
            ..image.clone()
        };
        let arm_only = ImageRecord {
            reference: "registry.test/arm-only:1".into(),
            ..arm.clone()
        };
        h.images.extend([arm, arm_only]);
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let judged = judge(&docker("20.10.24", false), &h, &amd64);
        let outcomes: Vec<&Outcome> = judged.iter().map(|(_, o)| o).collect();
        assert_eq!(outcomes[0], &Outcome::Load);
        assert_eq!(outcomes[1], &Outcome::OtherPlatform);
        let p = problems(&judged);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].image, "registry.test/arm-only:1");
        assert_eq!(p[0].remedy, Remedy::Platform);
        assert!(p[0].to_string().contains("linux/amd64"), "{}", p[0]);
        let r = remedies(&p, &amd64).join("\n");
        assert!(r.contains("--platform linux/arm64"), "{r}");
        // Asked for arm64, both references load.
        let judged = judge(
            &docker("20.10.24", false),
            &h,
            &"linux/arm64".parse().unwrap(),
        );
        assert!(problems(&judged).is_empty(), "{judged:?}");
    }

    #[test]
    fn facts_from_real_answers() {
        // Abridged answers of this machine's Docker 20.10, a Docker 26 with the containerd
        // image store, and Podman 4.3's Docker-compatible API.
        let docker20 = (
            r#"{"Components":[{"Name":"Engine","Version":"20.10.24+dfsg1"},{"Name":"containerd","Version":"1.6.20~ds1"}],"Version":"20.10.24+dfsg1","ApiVersion":"1.41","Os":"linux","Arch":"amd64"}"#,
            r#"{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]],"OSType":"linux","Architecture":"x86_64","ServerVersion":"20.10.24+dfsg1"}"#,
        );
        let docker26 = (
            r#"{"Components":[{"Name":"Engine","Version":"26.1.5+dfsg1"}],"Version":"26.1.5+dfsg1","ApiVersion":"1.45","Os":"linux","Arch":"amd64"}"#,
            r#"{"Driver":"native","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],"OSType":"linux","Architecture":"x86_64"}"#,
        );
        let podman = (
            r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1"}},{"Name":"Conmon","Version":"conmon version 2.1.6"}],"Version":"4.3.1","ApiVersion":"1.41","Os":"linux","Arch":"amd64"}"#,
            r#"{"Driver":"overlay","DriverStatus":[["Backing Filesystem","extfs"]],"OSType":"linux","Architecture":"amd64"}"#,
        );
        let parse = |(v, i): (&str, &str)| {
            EngineFacts::from_api(
                &serde_json::from_str(v).unwrap(),
                &serde_json::from_str(i).unwrap(),
            )
        };
        let f = parse(docker20);
        assert_eq!(
            (f.kind, f.containerd_store, f.version.as_str()),
            (Kind::Docker, false, "20.10.24+dfsg1")
        );
        assert_eq!(f.platform().to_string(), "linux/amd64");
        assert_eq!(
            f.describe(),
            "Docker 20.10.24+dfsg1 (API 1.41, linux/x86_64, storage overlay2, classic image store)"
        );
        let f = parse(docker26);
        assert_eq!((f.kind, f.containerd_store), (Kind::Docker, true));
        assert!(
            f.describe().contains("containerd image store"),
            "{}",
            f.describe()
        );
        let f = parse(podman);
        assert_eq!(
            (f.kind, f.version.as_str(), f.containerd_store),
            (Kind::Podman, "4.3.1", false)
        );
        assert_eq!(f.platform().to_string(), "linux/amd64");
        assert!(
            f.describe().starts_with("Podman 4.3.1 "),
            "{}",
            f.describe()
        );
    }

    #[test]
    fn socket_discovery_order() {
        let with = |present: &[&str]| {
            let present: Vec<PathBuf> = present.iter().map(PathBuf::from).collect();
            move |p: &Path| present.iter().any(|q| q == p)
        };
        let xdg = Some("/run/user/1000");
        let all = [
            DOCKER_SOCKET,
            PODMAN_ROOT_SOCKET,
            "/run/user/1000/podman/podman.sock",
        ];
        // DOCKER_HOST wins over everything, even a missing socket.
        assert_eq!(
            discover(Some("unix:///tmp/x.sock"), xdg, with(&all)),
            Endpoint::DockerHost("unix:///tmp/x.sock".into())
        );
        // Docker's socket, then Podman's rootful, then rootless.
        assert_eq!(discover(None, xdg, with(&all)), Endpoint::DockerDefault);
        assert_eq!(
            discover(None, xdg, with(&all[1..])),
            Endpoint::Podman(PODMAN_ROOT_SOCKET.into())
        );
        assert_eq!(
            discover(None, xdg, with(&all[2..])),
            Endpoint::Podman("/run/user/1000/podman/podman.sock".into())
        );
        // An empty DOCKER_HOST is unset; no XDG_RUNTIME_DIR, no rootless socket.
        assert_eq!(
            discover(Some(""), None, with(&all[2..])),
            Endpoint::DockerDefault
        );
        // Nothing found: Docker's default, whose absence the connection error names.
        assert_eq!(discover(None, xdg, with(&[])), Endpoint::DockerDefault);
        assert_eq!(
            Endpoint::Podman(PODMAN_ROOT_SOCKET.into()).address(),
            "unix:///run/podman/podman.sock"
        );
    }

    fn record(reference: &str, platform: &str) -> ImageRecord {
        ImageRecord {
            reference: reference.into(),
            platform: platform.parse().unwrap(),
            manifest: Digest::of(platform.as_bytes()),
            config: Digest::of(reference.as_bytes()),
            layers: vec![],
            index: None,
        }
    }

    #[test]
    fn selects_one_image_per_reference_for_the_platform() {
        use crate::archive::repo_tag;
        let images = [
            record("r/a:1", "linux/amd64"),
            record("r/a:1", "linux/arm64/v8"),
            record("r/b:1", "linux/arm64/v8"),
        ];
        let amd: Vec<String> = select_images(&images, &"linux/amd64".parse().unwrap())
            .into_iter()
            .map(|i| format!("{} {}", i.reference, i.platform))
            .collect();
        assert_eq!(amd, ["r/a:1 linux/amd64"]);
        // No variant asked: any variant of the architecture will do.
        let arm = select_images(&images, &"linux/arm64".parse().unwrap());
        assert_eq!(arm.len(), 2);
        assert!(select_images(&images, &"linux/s390x".parse().unwrap()).is_empty());
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b:v1").as_deref(),
            Some("127.0.0.1:5000/a/b:v1")
        );
        assert_eq!(repo_tag(&format!("a/b@{}", Digest::of(b"x"))), None);
    }
}
