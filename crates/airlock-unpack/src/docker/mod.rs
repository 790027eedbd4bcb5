//! `load`: images from a bundle into the Docker engine at `DOCKER_HOST`, in one pass.
//!
//! The bundle is read, verified and re-framed on the fly into the hybrid archive
//! `POST /images/load` takes (blobs, then `oci-layout`, `index.json` and a docker
//! `manifest.json`), streamed to the engine with no temp copy on our side. The three
//! documents that make the archive loadable are written only after the last digest of the
//! bundle checked; on any failure the upload is aborted mid-body, so the engine has nothing
//! it could load. Afterwards every tag is checked to point at the expected image ID.
//!
//! Before a byte is sent, the engine pre-flight ([`crate::engine`]) must find every image
//! loadable (else exit 13, nothing sent). If the engine still refuses (an error in its load
//! stream, or a tag not at the expected ID afterwards), the load is rolled back
//! ([`Rollback`]): tags it created are removed, tags it moved point back, images it added
//! are removed, so the engine's images and tags are as before. The error names the image
//! the engine was loading (the first of the archive's, in order, it did not report loaded).
//!
//! The order of a load and its all-or-nothing cleanup are [`crate::load`]'s; this module is
//! the Docker engine's side of it ([`DockerSide`]): which images to send, the upload
//! ([`upload`]), the check of the tags, and the rollback ([`rollback`], [`refusal`]).

mod refusal;
mod rollback;
mod upload;

use std::collections::HashSet;

use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::oci::Platform;
use airlock_bundle::Digest;
use airlock_progress::Progress;
use bollard::Docker;
use tokio::runtime::Handle;

pub use crate::load::{LoadReport, LoadedImage};
pub use rollback::Rollback;

use crate::archive::repo_tag;
use crate::engine::{select_images, EngineFacts, Problem};
use crate::load::EngineSide;
use crate::open::Access;
use crate::policy::LoadGuard;
use crate::restore::RestoreOptions;
use crate::UnpackError;
use refusal::{refusal, Refused};
use rollback::{rollback, Before};
use upload::{ArchiveStream, Chunks};

/// What `load` checks and does beyond verifying: `--no-preflight` turns the engine
/// pre-flight off (an engine refusal is then rolled back, as always).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub preflight: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { preflight: true }
    }
}

/// Loads the bundle at `path`: images into the engine, models and files into their host
/// directories and volumes. Nothing becomes visible unless all of it verified, and nothing
/// is written or sent unless `guard` (the host's policy, anti-rollback) let the verified
/// header through and the engine pre-flight found every image loadable; a successful load
/// is recorded in `guard`'s state. If the engine refuses what it was sent, what the load
/// changed in the engine is undone ([`Rollback`]).
pub fn load(
    path: &std::path::Path,
    access: &Access,
    platform: Option<Platform>,
    engine_opts: EngineOptions,
    restore: &RestoreOptions,
    guard: &mut LoadGuard,
    progress: &Progress,
) -> Result<LoadReport, UnpackError> {
    let side = DockerSide {
        platform,
        opts: engine_opts,
        engine: None,
        selected: Vec::new(),
        sending: Vec::new(),
        tags: Vec::new(),
        before: None,
        chunks: None,
    };
    crate::load::run(path, access, side, restore, guard, progress)
}

/// The Docker engine (or Podman) in a load.
struct DockerSide {
    /// `--platform`, else the engine's.
    platform: Option<Platform>,
    opts: EngineOptions,
    /// The engine and its facts, when images or volumes need it.
    engine: Option<(Docker, EngineFacts)>,
    /// Every image for the engine's platform, loaded now or already there.
    selected: Vec<ImageRecord>,
    /// The images not in the engine yet: the ones sent.
    sending: Vec<ImageRecord>,
    /// The tags about to be loaded, with the image each names now.
    tags: Vec<(String, Option<String>)>,
    /// The engine's images and tags before anything was sent, for a rollback.
    before: Option<Before>,
    /// The upload's body, while the bundle streams.
    chunks: Option<Chunks>,
}

impl DockerSide {
    fn docker(&self) -> Option<&Docker> {
        self.engine.as_ref().map(|(d, _)| d)
    }

    /// Whatever the engine took of a load that failed is undone; with nothing sent, there
    /// is nothing to undo (and no engine call is made).
    async fn undo(&self) -> Option<Rollback> {
        let (docker, _) = self.engine.as_ref()?;
        Some(rollback(docker, self.before.as_ref()?, &self.sending).await)
    }

    /// After the load, or its rollback: the hold names go (see [`Before`]).
    async fn release(&self) {
        if let (Some((docker, _)), Some(b)) = (self.engine.as_ref(), self.before.as_ref()) {
            b.release(docker).await;
        }
    }

    /// Undoes what the engine took, and says so when there was anything.
    async fn undo_and_say(&self, progress: &Progress) {
        if let Some(rb) = self.undo().await.filter(|rb| !rb.is_empty()) {
            progress.say(format!("engine: {}", rb.describe()));
        }
    }
}

impl EngineSide for DockerSide {
    type Stream = ArchiveStream;
    type Refusal = Refused;

    /// The engine (only if images or volumes need it), the images to load (those already
    /// in the engine under the right ID are skipped), and whether the engine can load them
    /// (the pre-flight).
    async fn plan(
        &mut self,
        h: &Header,
        restored: &Header,
        restore: &RestoreOptions,
    ) -> Result<(), UnpackError> {
        if h.images.is_empty() && !crate::restore::wants_engine(restored, restore) {
            return Ok(());
        }
        let docker = crate::engine::connect().await?;
        let facts = crate::engine::facts(&docker).await?;
        let explicit = self.platform.is_some();
        let platform = self.platform.clone().unwrap_or_else(|| facts.platform());
        let all = select_images(&h.images, &platform);
        if all.is_empty() && !h.images.is_empty() {
            return Err(no_platform_error(&facts, h, &platform, explicit));
        }
        let mut images = Vec::new();
        let mut tags = Vec::new();
        for i in &all {
            let (present, tag) = tagged_as(&docker, i).await;
            if !present {
                images.push(i.clone());
                if let Some(t) = tag {
                    tags.push(t);
                }
            }
        }
        if self.opts.preflight {
            preflight(&facts, h, &platform, &images)?;
        }
        self.selected = all;
        self.sending = images;
        self.tags = tags;
        self.engine = Some((docker, facts));
        Ok(())
    }

    fn docker(&self) -> Option<&Docker> {
        DockerSide::docker(self)
    }

    async fn missing(&mut self, h: &Header) -> Result<Vec<String>, UnpackError> {
        match self.docker() {
            Some(d) => missing_layers(d, h, &self.sending).await,
            None => Ok(Vec::new()),
        }
    }

    async fn hold(&mut self) -> Result<(), UnpackError> {
        let Some((docker, facts)) = &self.engine else {
            return Ok(());
        };
        if self.sending.is_empty() {
            return Ok(());
        }
        let tags = std::mem::take(&mut self.tags);
        self.before = Some(Before::take(docker, tags, facts.containerd_store).await?);
        Ok(())
    }

    fn stream(&mut self, header: &Header, _handle: &Handle) -> ArchiveStream {
        let (stream, chunks) = upload::channel(header, self.sending.clone());
        self.chunks = Some(chunks);
        stream
    }

    async fn upload(&mut self) -> Result<Vec<String>, Refused> {
        let chunks = self.chunks.take();
        match (&self.engine, chunks) {
            (Some((docker, _)), Some(rx)) if !self.sending.is_empty() => {
                upload::upload(docker, rx).await
            }
            // Nothing for the engine: the reader's writes go nowhere.
            _ => Ok(Vec::new()),
        }
    }

    async fn finish(&mut self, _header: &Header) -> Result<Vec<LoadedImage>, Refused> {
        match self.docker() {
            Some(docker) => upload::check_tags(docker, &self.selected, &self.sending).await,
            None => Ok(Vec::new()),
        }
    }

    async fn refuse(&mut self, refused: Refused, header: &Header) -> UnpackError {
        let rb = self.undo().await;
        let e = match &self.engine {
            Some((_, facts)) => refusal(
                facts,
                header,
                &self.sending,
                refused,
                rb.unwrap_or_default(),
            ),
            None => UnpackError::EngineAnswered { said: refused.said },
        };
        self.release().await;
        e
    }

    async fn abandon(&mut self, progress: &Progress) {
        // The archive never got its documents, so the engine should have nothing to undo;
        // should it have kept anything, it is undone and said.
        self.undo_and_say(progress).await;
        self.release().await;
    }

    async fn committed(&mut self, placed: bool, progress: &Progress) {
        if !placed {
            self.undo_and_say(progress).await;
        }
        self.release().await;
    }

    fn describe(&self) -> String {
        self.engine
            .as_ref()
            .map(|(_, f)| f.describe())
            .unwrap_or_default()
    }
}

/// The pre-flight: every image about to be sent (and the platform itself) must be one the
/// engine can load, else nothing is sent (exit 13).
fn preflight(
    facts: &EngineFacts,
    h: &Header,
    platform: &Platform,
    images: &[ImageRecord],
) -> Result<(), UnpackError> {
    let problems: Vec<Problem> = crate::engine::problems(&crate::engine::judge(facts, h, platform))
        .into_iter()
        .filter(|p| {
            p.remedy == crate::engine::Remedy::Platform
                || images
                    .iter()
                    .any(|i| i.reference == p.image && i.platform.to_string() == p.platform)
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let remedies = crate::engine::remedies(&problems, platform);
    Err(UnpackError::EngineCannot {
        engine: facts.describe(),
        problems,
        remedies,
    })
}

/// No image of the bundle is for `platform`: asked with `--platform`, a usage error; the
/// engine's own platform, the engine cannot load the bundle (exit 13).
fn no_platform_error(
    facts: &EngineFacts,
    header: &airlock_bundle::Header,
    platform: &Platform,
    explicit: bool,
) -> UnpackError {
    let have: Vec<String> = header
        .images
        .iter()
        .map(|i| i.platform.to_string())
        .collect();
    if explicit {
        return UnpackError::Usage(format!(
            "the bundle has no image for --platform {platform} (it has: {})",
            have.join(", ")
        ));
    }
    let problems = crate::engine::problems(&crate::engine::judge(facts, header, platform));
    UnpackError::EngineCannot {
        engine: facts.describe(),
        remedies: crate::engine::remedies(&problems, platform),
        problems,
    }
}

/// The layers a delta bundle left out for `loading` whose chain ID the engine lacks.
async fn missing_layers(
    docker: &Docker,
    h: &airlock_bundle::Header,
    loading: &[ImageRecord],
) -> Result<Vec<String>, UnpackError> {
    let wanted: Vec<_> = h
        .expected_present
        .iter()
        .filter_map(|p| p.chain_id.map(|c| (p, c)))
        .filter(|(p, _)| loading.iter().any(|i| i.layers.contains(&p.digest)))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let have: HashSet<Digest> = crate::inventory::engine_images(docker)
        .await?
        .iter()
        .flat_map(|i| airlock_bundle::inventory::chain_ids(&i.diff_ids))
        .collect();
    Ok(wanted
        .into_iter()
        .filter(|(_, c)| !have.contains(c))
        .map(|(p, c)| {
            let users: Vec<&str> = loading
                .iter()
                .filter(|i| i.layers.contains(&p.digest))
                .map(|i| i.reference.as_str())
                .collect();
            format!(
                "image layer {} ({} bytes, chain ID {c}) of {}, in the Docker engine",
                p.digest,
                p.size,
                users.join(", ")
            )
        })
        .collect())
}

/// An engine's image ID is the config digest (classic store) or the manifest digest
/// (containerd store).
fn is_image(id: &str, i: &ImageRecord) -> bool {
    id == i.config.to_string() || id == i.manifest.to_string()
}

/// Whether the image's tag already names this exact image (loading it again would change
/// nothing), and otherwise its tag with the image ID it names now, if any.
async fn tagged_as(docker: &Docker, i: &ImageRecord) -> (bool, Option<(String, Option<String>)>) {
    let Some(name) = repo_tag(&i.reference) else {
        return (false, None);
    };
    let id = docker
        .inspect_image(&name)
        .await
        .ok()
        .and_then(|inspect| inspect.id);
    match id {
        Some(id) if is_image(&id, i) => (true, None),
        id => (false, Some((name, id))),
    }
}
