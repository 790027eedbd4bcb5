//! Undoing a load the Docker engine refused (or that failed beside it): what the engine had
//! before ([`Before`], taken last before anything is sent), and the [`Rollback`] that puts
//! its tags and images back.

use std::collections::HashSet;

use airlock_bundle::header::ImageRecord;
use airlock_bundle::text::escape;
use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;
use serde::Serialize;

use super::is_image;
use crate::UnpackError;

/// The engine before a load: the image each tag being loaded named (or none), and every
/// image ID it had. What a failed load changed is undone against this.
///
/// On the containerd image store an image is its name: when a load moves a tag, the image
/// it named is gone, and with it the snapshots only it held. A delta that relies on those
/// (its left-out layers under the old image's chain) then fails inside the engine ("parent
/// snapshot does not exist"), and a rollback has nothing to point the tag back at. So there,
/// each image a moved tag names is held by a name of its own for the length of the load
/// (`airlock-hold-RANDOM:N`), removed by [`Before::release`].
#[derive(Debug)]
pub(super) struct Before {
    tags: Vec<(String, Option<String>)>,
    ids: HashSet<String>,
    holds: Vec<String>,
}

impl Before {
    pub(super) async fn take(
        docker: &Docker,
        tags: Vec<(String, Option<String>)>,
        hold: bool,
    ) -> Result<Before, UnpackError> {
        let mut before = Before {
            tags,
            ids: image_ids(docker).await?,
            holds: Vec::new(),
        };
        if hold {
            // Repository names are lowercase alphanumerics (and separators, not at the ends).
            let token: String = crate::hostfs::random_token()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let repo = format!("airlock-hold-{token}");
            for (n, (_, prev)) in before.tags.iter().enumerate() {
                let Some(prev) = prev else { continue };
                let opts = TagImageOptions {
                    repo: Some(repo.clone()),
                    tag: Some(n.to_string()),
                };
                if let Err(source) = docker.tag_image(prev, Some(opts)).await {
                    before.release(docker).await;
                    return Err(UnpackError::EngineCall {
                        what: format!("holding image {prev} for the length of the load"),
                        source,
                    });
                }
                before.holds.push(format!("{repo}:{n}"));
            }
        }
        Ok(before)
    }

    /// Removes the hold names; the images keep whatever other names they have (an image a
    /// moved tag no longer names goes, as it would have without the hold).
    pub(super) async fn release(&self, docker: &Docker) {
        for h in &self.holds {
            let opts = RemoveImageOptions {
                noprune: true,
                ..Default::default()
            };
            let _ = docker.remove_image(h, Some(opts), None).await;
        }
    }
}

async fn image_ids(docker: &Docker) -> Result<HashSet<String>, UnpackError> {
    let list = docker
        .list_images(Some(ListImagesOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(|source| UnpackError::EngineCall {
            what: "listing the engine's images".into(),
            source,
        })?;
    Ok(list.into_iter().map(|i| i.id).collect())
}

/// What undoing a failed load did in the engine (recorded in the load report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollback {
    /// Tags this load created, removed again.
    pub untagged: Vec<String>,
    /// Tags this load moved, pointed back at the image they named before.
    pub repointed: Vec<Repointed>,
    /// Images this load added, removed.
    pub removed: Vec<String>,
    /// What could not be undone, and why.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Repointed {
    pub tag: String,
    pub from: Option<String>,
    pub to: String,
}

impl Rollback {
    pub(crate) fn is_empty(&self) -> bool {
        self.untagged.is_empty()
            && self.repointed.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }

    /// One sentence: what was undone, and whether the engine is as before.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing of it stayed in the engine (nothing to roll back)".into();
        }
        let mut done = Vec::new();
        if !self.removed.is_empty() {
            done.push(format!("removed image {}", self.removed.join(", ")));
        }
        if !self.untagged.is_empty() {
            done.push(format!(
                "removed tag {}",
                self.untagged
                    .iter()
                    .map(|t| escape(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for r in &self.repointed {
            done.push(format!("pointed {} back at {}", escape(&r.tag), r.to));
        }
        let mut s = format!("rolled back: {}", done.join("; "));
        if self.failed.is_empty() {
            s.push_str("; the engine's images and tags are as before this load");
        } else {
            s.push_str(&format!(
                "; NOT undone: {}",
                self.failed
                    .iter()
                    .map(|t| escape(t))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        s
    }
}

/// Undoes what a failed load changed in the engine: tags it created are removed, tags it
/// moved point back at their previous image, and images it added are removed. Only images
/// of this load (`sent`: their config or manifest digest) that were not in the engine before
/// are removed, so another client's concurrent work is never touched.
pub(super) async fn rollback(docker: &Docker, before: &Before, sent: &[ImageRecord]) -> Rollback {
    let mut rb = Rollback::default();
    // What this load added, listed before any tag is touched: removing an image's last tag
    // removes the image.
    let mut added: Vec<String> = match image_ids(docker).await {
        Ok(now) => now
            .into_iter()
            .filter(|id| !before.ids.contains(id) && sent.iter().any(|i| is_image(id, i)))
            .collect(),
        Err(e) => {
            rb.failed.push(format!("images this load added: {e}"));
            Vec::new()
        }
    };
    added.sort();
    for (tag, prev) in &before.tags {
        let now = docker.inspect_image(tag).await.ok();
        let now_id = now.as_ref().and_then(|i| i.id.clone());
        if now_id == *prev {
            continue;
        }
        match (prev, now_id) {
            (Some(prev), now_id) => {
                let (repo, t) = split_tag(tag);
                let opts = TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(t.to_string()),
                };
                match docker.tag_image(prev, Some(opts)).await {
                    Ok(()) => rb.repointed.push(Repointed {
                        tag: tag.clone(),
                        from: now_id,
                        to: prev.clone(),
                    }),
                    Err(e) => rb
                        .failed
                        .push(format!("pointing {tag} back at {prev}: {e}")),
                }
            }
            (None, Some(id)) => {
                let other_tags = now
                    .as_ref()
                    .and_then(|i| i.repo_tags.as_ref())
                    .is_some_and(|t| t.len() > 1);
                // Removing an image's only tag removes the image: right for one this load
                // added, wrong for one that was there (untagged) before.
                if before.ids.contains(&id) && !other_tags {
                    rb.failed.push(format!(
                        "tag {tag} stays on image {id}: it was in the engine before, untagged, and removing its only tag would remove it"
                    ));
                    continue;
                }
                let opts = RemoveImageOptions {
                    noprune: true,
                    ..Default::default()
                };
                match docker.remove_image(tag, Some(opts), None).await {
                    Ok(_) => rb.untagged.push(tag.clone()),
                    Err(e) => rb.failed.push(format!("removing tag {tag}: {e}")),
                }
            }
            (None, None) => {}
        }
    }
    let left = match image_ids(docker).await {
        Ok(left) => left,
        Err(e) => {
            rb.failed.push(format!("images this load added: {e}"));
            return rb;
        }
    };
    for id in added {
        if !left.contains(&id) {
            // Gone with its last tag.
            rb.removed.push(id);
            continue;
        }
        let opts = RemoveImageOptions {
            force: true,
            noprune: true,
            ..Default::default()
        };
        match docker.remove_image(&id, Some(opts), None).await {
            Ok(_) => rb.removed.push(id),
            Err(e) => rb.failed.push(format!("removing image {id}: {e}")),
        }
    }
    rb
}

/// `registry:5000/a/b:v1` → (`registry:5000/a/b`, `v1`).
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rfind(':') {
        Some(at) if !tag[at..].contains('/') => (&tag[..at], &tag[at + 1..]),
        _ => (tag, "latest"),
    }
}
