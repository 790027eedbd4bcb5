//! `inspect --sbom IMAGE`: the packages of every SPDX or CycloneDX SBOM the bundle carries
//! for one image (cosign `.sbom` attachments, SBOM attestations, SBOM referrers, BuildKit
//! SBOM attestation manifests). The whole bundle is read and must verify before anything
//! is printed; each SBOM-bearing blob is held in memory only up to
//! [`airlock_sigstore::sbom::MAX_SBOM_SIZE`], and a larger one is refused before the body
//! is read.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use airlock_bundle::header::Entry;
use airlock_bundle::provenance::{ArtifactKind, Provenance};
use airlock_bundle::reader::{Verified, Visitor};
use airlock_bundle::text::escape;
use airlock_bundle::{Digest, Header, ImageRef};
use airlock_sigstore::sbom::{self, Package, MAX_SBOM_SIZE};
use serde::Serialize;

use crate::UnpackError;

/// The header's reference that `wanted` names: the same normalised reference, or, when
/// `wanted` has no tag or digest, the one reference of that repository.
pub(super) fn resolve<'h>(h: &'h Header, wanted: &str) -> Result<&'h str, UnpackError> {
    let refs = crate::provenance::references(h);
    let parsed = ImageRef::parse(wanted).map_err(|e| UnpackError::Usage(e.to_string()))?;
    if let Some(r) = refs
        .iter()
        .find(|r| ImageRef::parse(r).is_ok_and(|x| x == parsed))
    {
        return Ok(r);
    }
    let untagged = !wanted.contains('@')
        && !matches!((wanted.rfind(':'), wanted.rfind('/')), (Some(c), s) if s.is_none_or(|s| c > s));
    let by_name: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|r| untagged && ImageRef::parse(r).is_ok_and(|x| x.name() == parsed.name()))
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] => Err(UnpackError::Usage(format!(
            "--sbom {}: the bundle has no such image; it has: {}",
            escape(wanted),
            refs.iter()
                .map(|r| escape(r))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        many => Err(UnpackError::Usage(format!(
            "--sbom {}: several images of that repository; name one: {}",
            escape(wanted),
            many.iter()
                .map(|r| escape(r))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether a record may carry an SBOM, from what the header says of it: not a signature,
/// nor an attestation that declares only other predicate types (SLSA provenance).
fn may_carry_sbom(p: &Provenance) -> bool {
    let declared_sbom = p
        .predicate_types
        .iter()
        .any(|t| sbom::is_sbom_predicate(t) || sbom::is_sbom_media_type(t));
    match p.kind {
        ArtifactKind::Sbom => true,
        ArtifactKind::Signature => false,
        ArtifactKind::Attestation | ArtifactKind::BuildkitAttestation => {
            declared_sbom || p.predicate_types.is_empty()
        }
        // A referrer's artifact type is its producer's to name (`application/vnd.example.sbom`,
        // `application/spdx+json`): its layers are read, and kept only if they are SBOMs.
        ArtifactKind::Referrer => true,
    }
}

/// The layers (not the config) of the image's records that may carry an SBOM, each with
/// the first record naming it. A layer larger than the bound is refused now.
fn candidates<'h>(
    h: &'h Header,
    reference: &str,
) -> Result<BTreeMap<Digest, &'h Provenance>, UnpackError> {
    let mut out = BTreeMap::new();
    for p in h
        .provenance
        .iter()
        .filter(|p| p.reference == reference && may_carry_sbom(p))
    {
        for d in p.blobs.iter().skip(1) {
            let size = h.entry(&d.blob_path()).map_or(0, |e| e.size);
            if size > MAX_SBOM_SIZE {
                return Err(UnpackError::Usage(format!(
                    "{} {} of {}: layer {d} is {size} bytes, larger than the {MAX_SBOM_SIZE} an SBOM is read up to; not read",
                    p.kind.name(),
                    p.manifest,
                    escape(reference)
                )));
            }
            out.entry(*d).or_insert(p);
        }
    }
    Ok(out)
}

/// Keeps the bytes of the wanted blobs while the bundle streams (each checked by the
/// reader as it goes; nothing is used before the whole bundle verified).
pub(super) struct Collect<'w> {
    /// Blob paths to keep, filled by [`plan`] once the header verified.
    pub(super) wanted: &'w RefCell<BTreeSet<String>>,
    pub(super) got: BTreeMap<String, Vec<u8>>,
}

impl Visitor for Collect<'_> {
    fn entry(&mut self, e: &Entry, data: &mut dyn Read) -> std::io::Result<()> {
        if !self.wanted.borrow().contains(&e.path) {
            return Ok(());
        }
        let mut bytes = Vec::new();
        data.take(MAX_SBOM_SIZE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_SBOM_SIZE {
            return Err(std::io::Error::other(format!(
                "{}: larger than {MAX_SBOM_SIZE} bytes",
                e.path
            )));
        }
        self.got.insert(e.path.clone(), bytes);
        Ok(())
    }
}

/// Once the header verified: which blobs to keep for `image` (an error if the image is not
/// in the bundle, or an SBOM layer is too large).
pub(super) fn plan(
    v: &Verified,
    image: &str,
    wanted: &RefCell<BTreeSet<String>>,
) -> Result<(), UnpackError> {
    let reference = resolve(&v.header, image)?;
    let c = candidates(&v.header, reference)?;
    *wanted.borrow_mut() = c.keys().map(Digest::blob_path).collect();
    Ok(())
}

/// One SBOM found (`--json`: an array of these).
#[derive(Debug, Serialize)]
pub(super) struct SbomJson {
    pub(super) digest: Digest,
    pub(super) format: sbom::Format,
    /// The record that carried it: its kind, manifest and subject.
    pub(super) kind: &'static str,
    pub(super) manifest: Digest,
    pub(super) subject: Digest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) wrapped_in: Vec<String>,
    pub(super) packages: Vec<Package>,
}

/// What the collected blobs hold: the SBOMs, and for layers of SBOM attachments that are
/// none, why (said on stderr; an attestation's other layers are not expected to be).
pub(super) fn read_sboms(
    v: &Verified,
    wanted: &str,
    got: &BTreeMap<String, Vec<u8>>,
) -> Result<(String, Vec<SbomJson>, Vec<String>), UnpackError> {
    let reference = resolve(&v.header, wanted)?;
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (d, p) in candidates(&v.header, reference)? {
        let Some(bytes) = got.get(&d.blob_path()) else {
            continue;
        };
        match sbom::parse(bytes) {
            Ok(s) => found.push(SbomJson {
                digest: d,
                format: s.format,
                kind: p.kind.name(),
                manifest: p.manifest,
                subject: p.subject,
                wrapped_in: s.wrapped_in,
                packages: s.packages,
            }),
            Err(e) if p.kind == ArtifactKind::Sbom => unreadable.push(format!(
                "{} layer {d}: not read as an SBOM: {e}",
                p.kind.name()
            )),
            Err(_) => {}
        }
    }
    Ok((reference.to_string(), found, unreadable))
}

/// The text form: per SBOM a line, then its packages.
pub(super) fn print(reference: &str, sboms: &[SbomJson]) {
    if sboms.is_empty() {
        println!(
            "{}: the bundle carries no SPDX or CycloneDX SBOM for it",
            escape(reference)
        );
        return;
    }
    for s in sboms {
        println!(
            "SBOM {} of {} ({}, {} {} on {}{}): {} packages",
            s.digest,
            escape(reference),
            s.format.name(),
            s.kind,
            s.manifest,
            s.subject,
            s.wrapped_in
                .iter()
                .map(|w| format!(", {}", escape(w)))
                .collect::<String>(),
            s.packages.len()
        );
        println!("  {:<40} {:<24} PURL", "NAME", "VERSION");
        for p in &s.packages {
            println!(
                "  {:<40} {:<24} {}",
                escape(&p.name),
                escape(p.version.as_deref().unwrap_or("-")),
                escape(p.purl.as_deref().unwrap_or("-"))
            );
        }
    }
}
