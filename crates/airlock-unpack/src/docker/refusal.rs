//! What the error says when the Docker engine refused a load: which image it failed at
//! (the first of the archive's it did not report loaded), which of its layers the
//! pre-flight would have named, and what the rollback did.

use std::collections::HashSet;

use airlock_bundle::header::ImageRecord;
use airlock_bundle::text::escape;

use super::rollback::Rollback;
use crate::archive::repo_tag;
use crate::engine::EngineFacts;
use crate::UnpackError;

/// The engine refused what it was sent (or its tags are not as loaded afterwards).
#[derive(Debug)]
pub(super) struct Refused {
    /// What the engine streamed before it failed ("Loaded image: …").
    pub(super) messages: Vec<String>,
    /// Its error, as it said it.
    pub(super) said: String,
    /// The image at fault, when known without the archive order.
    pub(super) image: Option<String>,
}

/// The image a refused load failed at: the first, in archive order, the engine did not
/// report loaded.
fn failed_image<'a>(sent: &'a [ImageRecord], messages: &[String]) -> Option<&'a ImageRecord> {
    let reported: HashSet<&str> = messages
        .iter()
        .filter_map(|m| {
            m.strip_prefix("Loaded image ID: ")
                .or_else(|| m.strip_prefix("Loaded image: "))
        })
        .map(str::trim)
        .collect();
    sent.iter().find(|i| {
        let tag = repo_tag(&i.reference);
        !(tag.as_deref().is_some_and(|t| reported.contains(t))
            || reported.contains(i.config.to_string().as_str())
            || reported.contains(i.manifest.to_string().as_str()))
    })
}

/// The error for an engine refusal: which image, which layers the pre-flight would have
/// named (else all of the image's), that the bundle verified, and what the rollback did.
pub(super) fn refusal(
    facts: &EngineFacts,
    header: &airlock_bundle::Header,
    sent: &[ImageRecord],
    refused: Refused,
    rollback: Rollback,
) -> UnpackError {
    let image = match &refused.image {
        Some(name) => sent
            .iter()
            .find(|i| repo_tag(&i.reference).as_deref() == Some(name.as_str())),
        None => failed_image(sent, &refused.messages),
    };
    let layers: Vec<String> = image
        .map(|i| match crate::engine::verdict(facts, i, header) {
            Err(problems) => problems
                .iter()
                .filter_map(|p| {
                    p.layer.map(|l| {
                        format!(
                            "layer {l}, media type {}",
                            escape(p.media_type.as_deref().unwrap_or("unknown"))
                        )
                    })
                })
                .collect(),
            Ok(()) => i
                .layers
                .iter()
                .map(|l| {
                    let mt = header
                        .entry(&l.blob_path())
                        .and_then(|e| e.media_type.as_deref())
                        .unwrap_or("unknown");
                    format!("layer {l}, media type {}", escape(mt))
                })
                .collect(),
        })
        .unwrap_or_default();
    UnpackError::EngineRefused {
        engine: facts.describe(),
        image: image
            .map(|i| i.reference.clone())
            .or(refused.image)
            .map(|r| escape(&r)),
        layers,
        said: escape(&refused.said),
        unreadable_layer: refused.said.contains("unexpected EOF")
            || refused.said.contains("Error processing tar file"),
        rollback: Box::new(rollback),
    }
}
