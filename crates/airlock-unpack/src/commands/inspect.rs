//! `airlock-unpack inspect`: what a bundle carries, from its signed header alone, as text or
//! `--json`; with `--engine`, the engine pre-flight's verdict on every image.

use airlock_bundle::header::{ComposeRecord, Entry, FileRecord, Present, Target};
use airlock_bundle::oci::Platform;
use airlock_bundle::ollama::ModelConfig;
use airlock_bundle::reader::Verified;
use airlock_bundle::{Digest, Header, ImageRecord, ModelRecord};
use airlock_progress::human;
use anyhow::Context as _;
use serde::Serialize;

use super::inspect_provenance;
use super::inspect_sbom::{self, Collect};
use super::shared::{host_policy, read_with, signer_text, Depth};
use crate::cli::InspectArgs;
use crate::engine::{EngineFacts, Outcome, Problem};
use crate::UnpackError;

pub(super) fn run(args: InspectArgs) -> anyhow::Result<()> {
    let InspectArgs {
        common,
        json,
        engine,
        platform,
        provenance,
        sbom,
        policy,
    } = args;
    if let Some(image) = sbom {
        return sbom_run(&common, &image, json);
    }
    let v = read_with(&common, "inspect", Depth::Header)
        .with_context(|| common.bundle.display().to_string())?;
    if provenance {
        let policy = host_policy(&common, policy.as_deref())?;
        let out = inspect_provenance::collect(&v.header, policy.as_ref());
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::to_value(&out)?)?
            );
        } else {
            println!("bundle   {}", v.header.name);
            println!("signer   {}", signer_text(&v));
            inspect_provenance::print(&out);
        }
        // Exit code 14 when load would refuse, so scripts can ask first.
        if let Some(p) = &policy {
            let checked = crate::provenance::check(&v.header, &p.verify);
            crate::provenance::refusal(&checked, &p.describe())
                .with_context(|| common.bundle.display().to_string())?;
        }
        return Ok(());
    }
    let judged = if engine {
        Some(engine_verdicts(&v.header, platform)?)
    } else {
        None
    };
    if json {
        let out = InspectJson::new(&v, judged.as_ref());
        // Through a `Value`, as the output always was: its objects print their keys sorted.
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(&out)?)?
        );
    } else {
        print_text(&v, judged.as_ref());
    }
    match judged.and_then(|j| j.error()) {
        Some(e) => Err(e).with_context(|| common.bundle.display().to_string()),
        None => Ok(()),
    }
}

/// `inspect --json`.
#[derive(Serialize)]
struct InspectJson<'a> {
    name: &'a str,
    format: &'a str,
    version: u32,
    tool: &'a str,
    created: &'a str,
    signer: Option<String>,
    signature_verified: bool,
    encrypted: bool,
    header_digest: Digest,
    payload_bytes: u64,
    images: Vec<ImageJson<'a>>,
    models: Vec<ModelJson<'a>>,
    files: &'a [FileRecord],
    entries: &'a [Entry],
    expected_present: &'a [Present],
    /// The compose stacks (format version 5); absent when there are none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    compose: &'a [ComposeRecord],
    /// Only with `--engine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<EngineJson<'a>>,
}

/// An image in `inspect --json`.
#[derive(Serialize)]
struct ImageJson<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    platform: &'a Platform,
    manifest: Digest,
    config: Digest,
    index: Option<Digest>,
    layers: &'a [Digest],
    size: u64,
    /// `unverified upstream`, or what the pack side verified (see `inspect --provenance`).
    upstream: String,
    /// Key fingerprints the pack side verified the upstream signature with.
    upstream_verified_with: Vec<String>,
}

/// A model in `inspect --json`.
#[derive(Serialize)]
struct ModelJson<'a> {
    name: &'a str,
    manifest: Digest,
    target: &'a Target,
    size: u64,
    info: &'a Option<ModelConfig>,
}

/// `inspect --engine --json`: the engine and its verdict on every image.
#[derive(Serialize)]
struct EngineJson<'a> {
    facts: &'a EngineFacts,
    description: String,
    platform: &'a Platform,
    verdicts: Vec<VerdictJson<'a>>,
}

/// One image's pre-flight verdict in `inspect --engine --json`.
#[derive(Serialize)]
struct VerdictJson<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    platform: &'a Platform,
    manifest: Digest,
    /// `loadable`, `other-platform` or `cannot`.
    verdict: &'static str,
    /// Why not, for `cannot` (empty otherwise).
    problems: &'a [Problem],
}

impl<'a> InspectJson<'a> {
    fn new(v: &'a Verified, judged: Option<&'a Judged>) -> InspectJson<'a> {
        let h = &v.header;
        InspectJson {
            name: &h.name,
            format: &h.format,
            version: h.version,
            tool: &h.tool,
            created: &h.created,
            signer: v.signer.map(|k| k.to_string()),
            signature_verified: v.signature_checked,
            encrypted: v.encrypted,
            header_digest: v.header_digest,
            payload_bytes: h.payload_size(),
            images: h
                .images
                .iter()
                .map(|i| {
                    let (upstream, upstream_verified_with) =
                        inspect_provenance::upstream_status(h, &i.reference);
                    ImageJson {
                        reference: &i.reference,
                        platform: &i.platform,
                        manifest: i.manifest,
                        config: i.config,
                        index: i.index,
                        layers: &i.layers,
                        size: image_size(h, i),
                        upstream,
                        upstream_verified_with,
                    }
                })
                .collect(),
            models: h
                .models
                .iter()
                .map(|m| ModelJson {
                    name: &m.name,
                    manifest: m.manifest,
                    target: &m.target,
                    size: model_size(h, m),
                    info: &m.info,
                })
                .collect(),
            files: &h.files,
            entries: &h.entries,
            expected_present: &h.expected_present,
            compose: &h.compose,
            engine: judged.map(Judged::json),
        }
    }
}

/// The text form: the header's facts, then tables of images, models and files.
fn print_text(v: &Verified, judged: Option<&Judged>) {
    let h = &v.header;
    println!("bundle   {}", h.name);
    println!("created  {}", h.created);
    println!("tool     {} (format {} v{})", h.tool, h.format, h.version);
    println!("signer   {}", signer_text(v));
    println!(
        "payload  {} in {} entries{}",
        human(h.payload_size()),
        h.entries.len(),
        if v.encrypted {
            ", encrypted"
        } else {
            ", not encrypted"
        }
    );
    if !h.expected_present.is_empty() {
        let (blobs, bytes) = airlock_bundle::header::left_out_totals(&h.expected_present);
        println!(
            "delta    leaves out {blobs} blobs ({}) the target host has; load checks them",
            human(bytes)
        );
    }
    println!();
    println!(
        "{:<56} {:<14} {:>10}  MANIFEST",
        "IMAGE", "PLATFORM", "SIZE"
    );
    for i in &h.images {
        println!(
            "{:<56} {:<14} {:>10}  {}",
            i.reference,
            i.platform.to_string(),
            human(image_size(h, i)),
            i.manifest
        );
    }
    print_upstream(h);
    print_models(h);
    print_files(h);
    print_compose(h);
    if let Some(j) = judged {
        j.print();
    }
}

/// Per image reference: verified upstream at pack time, or not.
fn print_upstream(h: &Header) {
    let refs = crate::provenance::references(h);
    if refs.is_empty() {
        return;
    }
    println!();
    println!("{:<56} UPSTREAM", "IMAGE");
    for r in refs {
        println!(
            "{:<56} {}",
            airlock_bundle::text::escape(r),
            inspect_provenance::upstream_status(h, r).0
        );
    }
}

/// `inspect --sbom IMAGE`: the whole bundle read and verified, then the packages of the
/// image's SBOMs printed (nothing before the bundle verified).
fn sbom_run(common: &crate::cli::Common, image: &str, json: bool) -> anyhow::Result<()> {
    let wanted = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut collect = Collect {
        wanted: &wanted,
        got: Default::default(),
    };
    let plan = |v: &Verified| inspect_sbom::plan(v, image, &wanted);
    let v = read_with(common, "inspect", Depth::Checked(&plan, &mut collect))
        .with_context(|| common.bundle.display().to_string())?;
    let (reference, sboms, unreadable) = inspect_sbom::read_sboms(&v, image, &collect.got)?;
    for u in unreadable {
        airlock_progress::notice(format!("warning: {u}"));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&sboms)?);
    } else {
        inspect_sbom::print(&reference, &sboms);
    }
    Ok(())
}

fn print_models(h: &Header) {
    if h.models.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<56} {:>10}  {:<8} {:<10} {:<8} TARGET",
        "MODEL", "SIZE", "FORMAT", "FAMILY", "QUANT"
    );
    for m in &h.models {
        let info = m.info.clone().unwrap_or_default();
        let short = airlock_bundle::ollama::ModelName::parse(&m.name)
            .map(|n| n.short())
            .unwrap_or_else(|_| m.name.clone());
        println!(
            "{:<56} {:>10}  {:<8} {:<10} {:<8} {}",
            short,
            human(model_size(h, m)),
            info.model_format,
            info.model_family,
            info.file_type,
            m.target
        );
    }
}

fn print_files(h: &Header) {
    if h.files.is_empty() {
        return;
    }
    println!();
    println!("{:<6} {:>10}  FILE", "MODE", "SIZE");
    for f in &h.files {
        let size = f
            .digest
            .and_then(|d| h.entry(&d.blob_path()))
            .map(|e| human(e.size))
            .unwrap_or_else(|| "dir".into());
        let at = match &f.target {
            Target::Volume(v) => format!("{v}:/{}", f.path),
            Target::Path(p) => format!("{p}/{}", f.path),
        };
        println!("{:<6} {:>10}  {at}", f.mode, size);
    }
}

/// Each compose stack: its file on the host, then its services and their images.
fn print_compose(h: &Header) {
    for c in &h.compose {
        println!();
        println!("COMPOSE  {}", airlock_bundle::text::escape(&c.host_path()));
        for s in &c.services {
            println!(
                "  {:<24} {}",
                airlock_bundle::text::escape(&s.name),
                airlock_bundle::text::escape(&s.image)
            );
        }
    }
}

/// Bytes of an image's manifest, config and layers.
fn image_size(h: &Header, i: &ImageRecord) -> u64 {
    std::iter::once(&i.manifest)
        .chain(std::iter::once(&i.config))
        .chain(&i.layers)
        .filter_map(|d| h.entry(&d.blob_path()))
        .map(|e| e.size)
        .sum()
}

/// Bytes of a model's manifest, config and layers.
fn model_size(h: &Header, m: &ModelRecord) -> u64 {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(&m.manifest)
        .chain(std::iter::once(&m.config))
        .chain(&m.layers)
        .filter(|d| seen.insert(**d))
        .filter_map(|d| h.entry(&d.blob_path()))
        .map(|e| e.size)
        .sum()
}

/// `inspect --engine`: the engine's facts and the pre-flight's judgement of every image.
struct Judged {
    facts: EngineFacts,
    platform: Platform,
    outcomes: Vec<(ImageRecord, Outcome)>,
}

fn engine_verdicts(h: &Header, platform: Option<Platform>) -> Result<Judged, UnpackError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UnpackError::Runtime)?;
    let facts = rt.block_on(async {
        let docker = crate::engine::connect().await?;
        crate::engine::facts(&docker).await
    })?;
    let platform = platform.unwrap_or_else(|| facts.platform());
    let outcomes = crate::engine::judge(&facts, h, &platform);
    Ok(Judged {
        facts,
        platform,
        outcomes,
    })
}

impl Judged {
    fn verdict_text(o: &Outcome) -> String {
        match o {
            Outcome::Load => "loadable".into(),
            Outcome::OtherPlatform => "another platform (not loaded)".into(),
            Outcome::Cannot(p) => format!(
                "CANNOT: {}",
                p.iter()
                    .map(|p| match (&p.layer, &p.media_type) {
                        (Some(l), Some(m)) => format!(
                            "layer {l} ({}): {}",
                            airlock_bundle::text::escape(m),
                            p.reason
                        ),
                        (Some(l), None) => format!("layer {l}: {}", p.reason),
                        _ => p.reason.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    fn print(&self) {
        println!();
        println!("engine   {} for {}", self.facts.describe(), self.platform);
        println!("{:<56} {:<14} VERDICT", "IMAGE", "PLATFORM");
        for (i, o) in &self.outcomes {
            println!(
                "{:<56} {:<14} {}",
                i.reference,
                i.platform.to_string(),
                Self::verdict_text(o)
            );
        }
    }

    fn json(&self) -> EngineJson<'_> {
        EngineJson {
            facts: &self.facts,
            description: self.facts.describe(),
            platform: &self.platform,
            verdicts: self
                .outcomes
                .iter()
                .map(|(i, o)| VerdictJson {
                    reference: &i.reference,
                    platform: &i.platform,
                    manifest: i.manifest,
                    verdict: match o {
                        Outcome::Load => "loadable",
                        Outcome::OtherPlatform => "other-platform",
                        Outcome::Cannot(_) => "cannot",
                    },
                    problems: match o {
                        Outcome::Cannot(p) => p,
                        _ => &[],
                    },
                })
                .collect(),
        }
    }

    /// Exit code 13 when load would refuse, so scripts can ask first.
    fn error(&self) -> Option<UnpackError> {
        let problems = crate::engine::problems(&self.outcomes);
        if problems.is_empty() {
            return None;
        }
        Some(UnpackError::EngineCannot {
            engine: self.facts.describe(),
            remedies: crate::engine::remedies(&problems, &self.platform),
            problems,
        })
    }
}
