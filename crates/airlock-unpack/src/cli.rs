//! The `airlock-unpack` command line: arguments, output, exit codes.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_bundle::crypt::{generate_identity, identity_file_text};
use airlock_bundle::header::Entry;
use airlock_bundle::oci::Platform;
use airlock_bundle::reader::{read_bundle, ReadOptions, Verified, Visitor};
use airlock_bundle::sign::KeyDir;
use airlock_progress::{human, Mode, Progress};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::open::{open_bundle, Access, BundleOnDisk};
use crate::report::ReportSink;
use crate::restore::RestoreOptions;
use crate::{exit, UnpackError};
use airlock_bundle::header::Target;

const AFTER_HELP: &str = "\
On the air-gapped host:
  airlock-unpack keygen -o /etc/airlock              # once: prints the recipient to pack for
  cp airlock.pub /etc/airlock/trust.d/               # trust the packing side's key
  airlock-unpack verify llm-stack.airlock --identity /etc/airlock/host.key
  airlock-unpack load   llm-stack.airlock --identity /etc/airlock/host.key

Trust: --trust PUB (repeatable), else every *.pub in $AIRLOCK_TRUST_DIR or /etc/airlock/trust.d.
Identity: --identity FILE or $AIRLOCK_IDENTITY; passphrase bundles ask (or $AIRLOCK_PASSPHRASE).

Exit codes: 0 ok, 1 internal error, 2 usage, 3 bundle corrupt/truncated/tampered,
4 signature missing/invalid/untrusted, 5 cannot decrypt, 6 unsupported format version,
7 environment (engine or containerd unreachable, or it refused the load, which was rolled
back; disk full, cannot write), 9 registry unreachable or refused (push), 10 an existing file differs
from the bundle's (nothing changed; see load --overwrite), 11 a delta bundle relies on blobs
this host lacks (nothing loaded; see inventory), 12 refused by this host's policy: its policy
file, or an older, too old or future-dated bundle (nothing loaded; see load --help), 13 this
engine cannot load the bundle's content: a layer type it does not read, or no image for its
platform (nothing sent; see inspect --engine).";

#[derive(Debug, Parser)]
#[command(name = "airlock-unpack", version, about = "Verify an airlock bundle offline, load its images into the local Docker engine and restore its Ollama models and files.", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write this host's age identity (host.key, 0600) and recipient (host.pub, 0644, also
    /// printed). Both are created new, never over an existing file or through a symbolic
    /// link.
    Keygen {
        /// Directory to write them into. Created with mode 0700 if missing; an existing one
        /// keeps its mode, but is refused if it is a symbolic link or writable by others.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check signature, every digest and size. Reads everything, writes nothing. Without an
    /// identity (for an encrypted bundle) or with --outer-only: check the signed sums of
    /// every part instead, which needs no decryption key.
    #[command(after_help = VERIFY_HELP)]
    Verify {
        #[command(flatten)]
        common: Common,
        /// Only check the parts against NAME.sums and its signature (no key needed).
        #[arg(long)]
        outer_only: bool,
    },
    /// Show what a bundle carries (reads only the signed header).
    Inspect {
        #[command(flatten)]
        common: Common,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also ask the engine (DOCKER_HOST, else Docker's or Podman's socket) what it is, and
        /// show per image whether it can load it, as load's pre-flight would (exit 13 if not).
        #[arg(long)]
        engine: bool,
        /// With --engine: judge the images for this platform instead of the engine's.
        #[arg(long, requires = "engine")]
        platform: Option<Platform>,
    },
    /// Write the verified OCI image layout into DIR (usable by skopeo as oci:DIR:REF), plus
    /// DIR/ollama/models (an Ollama store) and DIR/files/{volume/NAME,path/…} for models
    /// and files; or, with --archive FILE, one image archive for other loaders.
    #[command(after_help = EXTRACT_HELP)]
    Extract {
        #[command(flatten)]
        common: Common,
        /// Destination directory (must not exist, or be empty).
        #[arg(long, required_unless_present = "archive", conflicts_with = "archive")]
        to: Option<PathBuf>,
        /// Write the images (one per reference, for --platform) as one archive FILE (must
        /// not exist; - for stdout) that docker load -i, podman load -i and ctr images
        /// import read. Models and files are not in it.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// With --archive: the images for this platform (os/arch[/variant]) [default: this
        /// machine's].
        #[arg(long, requires = "archive")]
        platform: Option<Platform>,
    },
    /// List the blobs this host already has (Docker engine images with their layers' diff
    /// IDs, Ollama stores), for `airlock-pack build --have FILE`: a delta bundle that
    /// leaves them out.
    #[command(after_help = INVENTORY_HELP)]
    Inventory {
        /// Write the inventory here (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// An Ollama models directory to list (repeatable) [default: $OLLAMA_MODELS, else
        /// ~/.ollama/models, if it exists].
        #[arg(long, value_name = "DIR")]
        ollama_models: Vec<PathBuf>,
        /// A Docker volume holding an Ollama store to list (repeatable) [default: ollama-data,
        /// if it exists].
        #[arg(long, value_name = "NAME")]
        ollama_volume: Vec<String>,
        /// Do not list the Docker engine's images (and do not contact the engine unless a
        /// volume is named).
        #[arg(long)]
        no_engine: bool,
    },
    /// Verify, then load images into the Docker engine at DOCKER_HOST (or containerd, see
    /// --containerd) and restore models and files into their volumes and directories, all or
    /// nothing.
    #[command(after_help = LOAD_HELP)]
    Load {
        #[command(flatten)]
        common: Common,
        /// Load images for this platform instead of the engine's (os/arch[/variant]).
        #[arg(long)]
        platform: Option<Platform>,
        /// Load even if pre-flight says the engine cannot; an engine refusal is then rolled
        /// back.
        #[arg(long)]
        no_preflight: bool,
        /// Restore every model into this Ollama models directory instead of the bundle's
        /// targets; without DIR (put it after the bundle): $OLLAMA_MODELS, else
        /// ~/.ollama/models.
        #[arg(long, value_name = "DIR", num_args = 0..=1, conflicts_with = "ollama_volume")]
        ollama_models: Option<Option<PathBuf>>,
        /// Restore every model into this Docker named volume (mounted by Ollama at
        /// /root/.ollama) instead of the bundle's targets.
        #[arg(long, value_name = "NAME")]
        ollama_volume: Option<String>,
        /// Replace existing files whose content differs from the bundle's (refused otherwise,
        /// with exit code 10).
        #[arg(long)]
        overwrite: bool,
        /// Where content bound for Docker volumes waits until the whole bundle verified
        /// [default: $TMPDIR, else /var/tmp].
        #[arg(long, env = "AIRLOCK_WORK_DIR", value_name = "DIR")]
        work_dir: Option<PathBuf>,
        #[command(flatten)]
        guard: Box<GuardArgs>,
        #[command(flatten)]
        containerd: Box<crate::containerd::ContainerdArgs>,
        /// Print the load report as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Verify, then push the images and Ollama models into an OCI registry inside the gap
    /// (distribution, Harbor, zot); tags appear only once the whole bundle verified.
    #[cfg(feature = "push")]
    #[command(after_help = PUSH_HELP)]
    Push {
        #[command(flatten)]
        common: Common,
        /// The registry to push to: HOST or HOST:PORT. The only host push ever contacts.
        #[arg(long, value_name = "HOST:PORT")]
        registry: String,
        /// Speak plain HTTP to the registry instead of HTTPS.
        #[arg(long)]
        insecure: bool,
        /// Put every repository under this path (e.g. mirror/ gives
        /// HOST:PORT/mirror/library/busybox:1.36).
        #[arg(long, value_name = "PATH/")]
        prefix: Option<String>,
        /// The registry's token service, when it is not at the registry's own origin: the
        /// only other place push sends the registry's credentials to.
        #[arg(long, value_name = "URL")]
        token_realm: Option<String>,
        /// Print the push report as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
}

#[cfg(feature = "push")]
const PUSH_HELP: &str = "\
Naming: the source registry host is dropped and --prefix put in front:
  docker.io/library/busybox:1.36          -> HOST:PORT/[PREFIX]library/busybox:1.36
  registry.ollama.ai/library/llama3:8b    -> HOST:PORT/[PREFIX]library/llama3:8b (lowercased)
An image carried for several platforms is pushed as an image index of those platforms (a new
digest when the source index had more); one platform is pushed as its manifest.

Example:
  airlock-unpack push llm-stack.airlock --registry registry.gap:5000 --identity /etc/airlock/host.key
  docker pull registry.gap:5000/library/busybox:1.36
  ollama pull registry.gap:5000/library/llama3:8b          # add --insecure for plain HTTP

Blobs the registry already has are not sent again (a second push reports \"unchanged\"); a blob
several repositories need is uploaded once and mounted into the others (copied across when
the registry refuses the mount). Blobs stream from the
bundle into the registry, which checks each digest; tags (manifests) are pushed only after the
whole bundle verified, so a corrupt bundle (exit 3) leaves no new tag.

Credentials: REGISTRY_AUTH_FILE, else `auths` in $DOCKER_CONFIG/config.json or
~/.docker/config.json (as `docker login` writes them); Basic and Bearer-token registries work.
A Bearer token service (the challenge's realm) gets them only at the registry's own scheme,
host and port, or over https on the registry's host for an https registry, or at the URL
given with --token-realm; never over plain http for an https registry (exit 9 otherwise).
Requests are retried with back-off on connection errors and 5xx; exit code 9 when the
registry stays unreachable or refuses. Error answers are read up to 4 KiB, shown escaped.";

const LOAD_HELP: &str = "\
Where things go:
  images  the engine at DOCKER_HOST, else /var/run/docker.sock, else Podman's socket
          (/run/podman/podman.sock, then $XDG_RUNTIME_DIR/podman/podman.sock); an image
          already there under its tag is skipped. Or with --containerd [SOCKET] containerd
          itself (Kubernetes, k3s, RKE2, nerdctl):
            airlock-unpack load llm-stack.airlock --containerd /run/k3s/containerd/containerd.sock
          blobs go into its content store under a lease, images (named by reference, target
          the platform's manifest) are created and unpacked only once everything verified
  models  the bundle's target: a Docker volume (default ollama-data, files under models/) or a
          host models directory; --ollama-models / --ollama-volume override it
  files   their volume or host path; an existing file that differs is an error unless --overwrite

Engine pre-flight: before a byte is sent, the engine's /version and /info decide whether it
can load every image (layer media types: zstd needs Docker Engine 23.0+, Podman, or Docker
with the containerd image store; encrypted and unknown layer types are refused; an image for
the engine's platform must exist). If not, nothing is sent (exit 13), naming each image,
layer and media type; `inspect --engine` shows the same verdict. If the engine refuses
anyway (--no-preflight), what this load changed in the engine is rolled back: tags it created
removed, tags it moved pointed back, images it added removed (exit 7).

Nothing is visible until the whole bundle verified: model blobs go to temp files and each
model's manifest is written last, so `ollama list` never shows a half-loaded model. Blobs
already present are checked against the bundle and kept when they match. Volumes are filled through the Engine API
with a never-started helper container (its empty image is created and removed on the fly).

Host directories may belong to other users (the ollama user's models directory): no symlink
below a target directory is followed (one in the way is refused, exit 10), temp files get
unpredictable names and stay private (0600) until placed, and decrypted content waits in a
private spool (0700) under the work dir. A target directory given as a symlink is followed
only if root or you own the link and no one else can write the directory it is in.

Policy: a trusted signature says who made a bundle, not what it may touch. Without a policy
file any trusted signer may write any host path (new files need no --overwrite), any
volume, any image tag and any model on this host, and load says so on stderr. With one
(--policy FILE, $AIRLOCK_POLICY, else /etc/airlock/policy.toml) everything is denied unless
listed; a category the file does not list allows nothing, [\"*\"] allows anything:
  files       = [\"/opt/llm-stack\"]                                  # host path prefixes
  volumes     = [\"ollama-data\", \"webui-*\"]                         # '*' only at the end
  images      = [\"docker.io/ollama/ollama\", \"ghcr.io/open-webui/*\"]  # repositories, no tag
  models      = [\"registry.ollama.ai/library/*\", \"llama3:8b\"]        # names, tag optional
  models_dirs = [\"/usr/share/ollama/.ollama/models\"]                # exactly these dirs
  max_mode    = \"0755\"                                              # no mode bit beyond
  max_age     = \"30d\"                                               # refuse older bundles
  [signer.pack]     # the key in trust.d/pack.pub (or --trust pack.pub) may do only what
  files       = [\"/opt/llm-stack/conf\"]  # both the top level and its section allow;
  images      = [\"*\"]                    # a section, too, allows nothing it does not list
Path prefixes match whole components (/opt/llm does not cover /opt/llm-stack). Names compare
after docker's and Ollama's normalisation (busybox is docker.io/library/busybox); a pattern
ending in '*' compares with the full name. Unknown keys, relative or unnormalised paths and
sections for keys not trusted are errors (exit 2), and so is a policy file others may write.
The check runs once the signed header verified, before anything is written or the engine is
contacted; every violation is listed, naming the rule and the record (exit 12).
--ollama-models and --ollama-volume are checked against models_dirs and volumes too.

Anti-rollback: this host records, per bundle name, the newest signed `created` it loaded and
that bundle's header digest (DIR/state.json, see --state-dir). An older bundle of that name,
or one as old with other content, is refused (exit 12) unless --allow-downgrade; the same
bundle again loads. A bundle created more than a day in this host's future is refused too
(recorded, it would block every later one: check the clocks), and with --max-age or the
policy's max_age one created too long ago.";

const INVENTORY_HELP: &str = "\
A delta bundle, in three steps:
  gap host:        airlock-unpack inventory -o host.inventory     (carry it out)
  connected side:  airlock-pack build SPEC -o update.airlock --have host.inventory …
  gap host:        airlock-unpack load update.airlock …
The delta leaves out every image layer and model blob the inventory lists, per layer, and
its signed header records them as expected present. load checks they are here before it
loads anything, and refuses (exit 11) naming each one that is not.";

const EXTRACT_HELP: &str = "\
--archive FILE writes what load sends to the engine: a docker-archive that is also an OCI
layout (blobs, oci-layout, index.json, manifest.json), verified before FILE appears:
  airlock-unpack extract llm-stack.airlock --archive images.tar --identity /etc/airlock/host.key
  docker load -i images.tar        podman load -i images.tar
  ctr -n k8s.io images import images.tar
  k3s, RKE2: put it in /var/lib/rancher/k3s/agent/images/ (…/rke2/agent/images/) before start
Models and [[files]] are not in the archive: use load, or extract --to DIR.";

const VERIFY_HELP: &str = "\
Two layers:
  outer  NAME.sums lists the sha256 of the bundle file or of each part (NAME.001, …), and
         NAME.sums.minisig signs it with the pack key. Checking it needs no decryption key:
         a transfer station can do it, with this command or with standard tools:
           minisign -Vm NAME.sums -p airlock.pub && sha256sum -c NAME.sums
         A missing, extra, renamed, reordered or corrupt part is named.
  inner  the signed header inside lists every entry's digest and size; with --identity (or
         for a bundle that is not encrypted) every entry is decrypted and checked.";

#[derive(Debug, Args)]
struct Common {
    /// The bundle: its file, its first (or any) part, or its .sums file.
    bundle: PathBuf,
    /// Trust signatures by this minisign public key (repeatable).
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// age identity file to decrypt with (repeatable).
    #[arg(short, long, env = "AIRLOCK_IDENTITY")]
    identity: Vec<PathBuf>,
    /// Do not check the signature. Dangerous: anyone could have made the bundle.
    #[arg(long)]
    insecure_skip_signature: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

/// What this host allows a load: its policy, `--no-files`, anti-rollback and freshness.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The operator policy bounding what a trusted signer may do on this host (see
    /// below) [default: /etc/airlock/policy.toml, if it exists].
    #[arg(long, env = "AIRLOCK_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Skip every [[files]] record: load only images and models. The skipped files are
    /// listed (and in the report); they are still verified with the rest of the bundle.
    #[arg(long)]
    pub no_files: bool,
    /// Load a bundle although this host already loaded a newer one of the same name (or
    /// one as old with other content): a deliberate rollback. The newer record is kept.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Refuse a bundle whose signed creation time is longer ago than AGE (30d, 12h, 2w);
    /// with the policy's max_age too, the stricter one applies.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// Where this host records, per bundle name, the newest bundle it loaded (state.json;
    /// a directory of its own, 0700, created on the first load)
    /// [default: /var/lib/airlock].
    #[arg(long, env = "AIRLOCK_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Where the audit report of a load or push goes.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the JSON report (bundle digests, signer, what went where with digests, times,
    /// version, and the error if refused) to FILE, whether the run succeeds or not.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Sign the report with this minisign secret key (FILE.minisig, checkable with
    /// `minisign -Vm FILE -p KEY.pub`); its password from AIRLOCK_KEY_PASSWORD.
    #[arg(long, value_name = "KEY", requires = "report")]
    pub report_sign_key: Option<PathBuf>,
}

impl Common {
    fn access(&self) -> Result<Access, UnpackError> {
        Access::new(&self.trust, self.insecure_skip_signature, &self.identity)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The documented exit code for a failure.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<UnpackError>()
                .map(UnpackError::exit_code)
                .or_else(|| {
                    c.downcast_ref::<airlock_bundle::BundleError>()
                        .map(crate::bundle_exit_code)
                })
        })
        .unwrap_or(exit::INTERNAL)
}

struct Drain;
impl Visitor for Drain {
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

struct HeaderOnly;
impl Visitor for HeaderOnly {
    fn header(&mut self, _: &Verified) -> Result<bool, airlock_bundle::BundleError> {
        Ok(false)
    }
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

fn signer_text(v: &Verified) -> String {
    match (v.signer, v.signature_checked) {
        (Some(k), true) => format!("key {k} (verified)"),
        (Some(k), false) => format!("key {k} (NOT verified)"),
        (None, _) => "unknown (NOT verified)".into(),
    }
}

fn read_with(c: &Common, label: &str, visitor: &mut dyn Visitor) -> Result<Verified, UnpackError> {
    let progress = Progress::new(Mode::detect(c.quiet));
    let access = c.access()?;
    let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)?;
    read_located(&on_disk, &access, &progress, label, visitor)
}

fn read_located(
    on_disk: &BundleOnDisk,
    access: &Access,
    progress: &Progress,
    label: &str,
    visitor: &mut dyn Visitor,
) -> Result<Verified, UnpackError> {
    let (input, bar) = on_disk.open(progress, label)?;
    let opts = ReadOptions {
        trust: access.trust(),
        decryption: &access.decryption,
    };
    let r = read_bundle(input, &opts, visitor);
    progress.remove(&bar);
    r.map_err(|e| on_disk.explain(e.into(), progress))
}

/// `verify` of the outer layer only: the signed sums of every part.
fn verify_outer(on_disk: &BundleOnDisk, progress: &Progress) -> Result<(), UnpackError> {
    let sums = on_disk.check_outer(progress)?;
    let n = on_disk.files.parts.len();
    println!(
        "OK {}: {n} {}, {}, sums signed by {}; contents not decrypted (give --identity to check every entry)",
        sums.path.display(),
        if n == 1 { "file" } else { "parts" },
        human(on_disk.files.total_size()),
        match sums.signer {
            Some(k) => format!("key {k} (verified)"),
            None => "unknown (NOT verified)".into(),
        }
    );
    Ok(())
}

/// Bytes of a model's manifest, config and layers.
fn model_size(h: &airlock_bundle::Header, m: &airlock_bundle::ModelRecord) -> u64 {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(&m.manifest)
        .chain(std::iter::once(&m.config))
        .chain(&m.layers)
        .filter(|d| seen.insert(**d))
        .filter_map(|d| h.entry(&d.blob_path()))
        .map(|e| e.size)
        .sum()
}

/// The policy, `--no-files` and anti-rollback state for a load, all read before the bundle
/// is: a broken policy or state file is refused before any work.
fn load_guard(common: &Common, args: GuardArgs) -> Result<crate::policy::LoadGuard, UnpackError> {
    let GuardArgs {
        policy,
        no_files,
        allow_downgrade,
        max_age,
        state_dir,
    } = args;
    let policy = match crate::policy::locate(policy.as_deref())? {
        Some(path) => {
            // Section names are checked against the keys this load trusts; with the
            // signature skipped there is no signer, and the top level alone applies.
            let names = if common.insecure_skip_signature {
                None
            } else {
                Some(crate::policy::TrustNames::read(&common.trust)?)
            };
            let p = crate::policy::Policy::load(&path, names.as_ref())?;
            Some((p, names.unwrap_or_default()))
        }
        None => {
            // Shown even with --quiet: it is not progress, and scripted loads are the ones
            // nobody watches.
            eprintln!("{}", crate::policy::no_policy_notice());
            None
        }
    };
    let (policy, trust_names) = match policy {
        Some((p, n)) => (Some(p), n),
        None => (None, Default::default()),
    };
    let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_STATE_DIR));
    Ok(crate::policy::LoadGuard {
        policy,
        trust_names,
        no_files,
        max_age,
        allow_downgrade,
        state: crate::state::State::open(&state_dir)?,
    })
}

/// `inspect --engine`: the engine's facts and the pre-flight's judgement of every image.
struct Judged {
    facts: crate::engine::EngineFacts,
    platform: Platform,
    outcomes: Vec<(airlock_bundle::ImageRecord, crate::engine::Outcome)>,
}

fn engine_verdicts(
    h: &airlock_bundle::Header,
    platform: Option<Platform>,
) -> Result<Judged, UnpackError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UnpackError::Environment(format!("async runtime: {e}")))?;
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
    fn verdict_text(o: &crate::engine::Outcome) -> String {
        use crate::engine::Outcome;
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

    fn json(&self) -> serde_json::Value {
        use crate::engine::Outcome;
        json!({
            "facts": self.facts,
            "description": self.facts.describe(),
            "platform": self.platform,
            "verdicts": self.outcomes.iter().map(|(i, o)| json!({
                "ref": i.reference,
                "platform": i.platform,
                "manifest": i.manifest,
                "verdict": match o {
                    Outcome::Load => "loadable",
                    Outcome::OtherPlatform => "other-platform",
                    Outcome::Cannot(_) => "cannot",
                },
                "problems": match o {
                    Outcome::Cannot(p) => serde_json::to_value(p).unwrap_or_default(),
                    _ => json!([]),
                },
            })).collect::<Vec<_>>(),
        })
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

/// An absolute path for a target given on the command line.
fn absolute(p: &std::path::Path) -> Result<String, UnpackError> {
    let abs =
        std::path::absolute(p).map_err(|e| UnpackError::Usage(format!("{}: {e}", p.display())))?;
    abs.to_str()
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| UnpackError::Usage(format!("{}: not a UTF-8 path", p.display())))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { output } => {
            let dir = KeyDir::create(&output)?;
            dir.check_free(&["host.key", "host.pub"])?;
            let (secret, recipient) = generate_identity();
            let created =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let (key, public) = dir.write_pair(
                (
                    "host.key",
                    identity_file_text(&secret, &recipient, &created).as_bytes(),
                ),
                ("host.pub", format!("{recipient}\n").as_bytes()),
            )?;
            eprintln!("wrote identity {} (never leaves this host)", key.display());
            eprintln!(
                "wrote recipient {} (give it to the packing side: --recipients-file)",
                public.display()
            );
            println!("{recipient}");
            Ok(())
        }
        Command::Verify {
            common: c,
            outer_only,
        } => {
            let progress = Progress::new(Mode::detect(c.quiet));
            let access = c.access()?;
            let on_disk = BundleOnDisk::locate(&c.bundle, &access, &progress)
                .with_context(|| c.bundle.display().to_string())?;
            // No identity for a bundle encrypted to keys, with sums: the outer layer is what
            // can be checked. (A passphrase bundle asks for its passphrase instead.)
            let no_key =
                c.identity.is_empty() && on_disk.sums.is_some() && on_disk.encrypted_to_keys()?;
            if outer_only || no_key {
                return verify_outer(&on_disk, &progress)
                    .with_context(|| c.bundle.display().to_string());
            }
            let v = read_located(&on_disk, &access, &progress, "verify", &mut Drain)
                .with_context(|| c.bundle.display().to_string())?;
            println!(
                "OK {}: {} entries, {} verified, signed by {}{}",
                c.bundle.display(),
                v.header.entries.len(),
                human(v.header.payload_size()),
                signer_text(&v),
                if v.encrypted {
                    ", decrypted"
                } else {
                    ", not encrypted"
                }
            );
            Ok(())
        }
        Command::Inspect {
            common,
            json,
            engine,
            platform,
        } => {
            let v = read_with(&common, "inspect", &mut HeaderOnly)
                .with_context(|| common.bundle.display().to_string())?;
            let h = &v.header;
            let judged = if engine {
                Some(engine_verdicts(h, platform)?)
            } else {
                None
            };
            if json {
                let out = json!({
                    "name": h.name,
                    "format": h.format,
                    "version": h.version,
                    "tool": h.tool,
                    "created": h.created,
                    "signer": v.signer.map(|k| k.to_string()),
                    "signature_verified": v.signature_checked,
                    "encrypted": v.encrypted,
                    "header_digest": v.header_digest,
                    "payload_bytes": h.payload_size(),
                    "images": h.images.iter().map(|i| json!({
                        "ref": i.reference,
                        "platform": i.platform,
                        "manifest": i.manifest,
                        "config": i.config,
                        "index": i.index,
                        "layers": i.layers,
                        "size": std::iter::once(&i.manifest).chain(std::iter::once(&i.config)).chain(&i.layers)
                            .filter_map(|d| h.entry(&d.blob_path())).map(|e| e.size).sum::<u64>(),
                    })).collect::<Vec<_>>(),
                    "models": h.models.iter().map(|m| json!({
                        "name": m.name,
                        "manifest": m.manifest,
                        "target": m.target,
                        "size": model_size(h, m),
                        "info": m.info,
                    })).collect::<Vec<_>>(),
                    "files": h.files,
                    "entries": h.entries,
                    "expected_present": h.expected_present,
                });
                let mut out = out;
                if let Some(j) = &judged {
                    out["engine"] = j.json();
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("bundle   {}", h.name);
                println!("created  {}", h.created);
                println!("tool     {} (format {} v{})", h.tool, h.format, h.version);
                println!("signer   {}", signer_text(&v));
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
                    let (blobs, bytes) =
                        airlock_bundle::header::left_out_totals(&h.expected_present);
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
                    let size: u64 = std::iter::once(&i.manifest)
                        .chain(std::iter::once(&i.config))
                        .chain(&i.layers)
                        .filter_map(|d| h.entry(&d.blob_path()))
                        .map(|e| e.size)
                        .sum();
                    println!(
                        "{:<56} {:<14} {:>10}  {}",
                        i.reference,
                        i.platform.to_string(),
                        human(size),
                        i.manifest
                    );
                }
                if !h.models.is_empty() {
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
                if !h.files.is_empty() {
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
                if let Some(j) = &judged {
                    j.print();
                }
            }
            match judged.and_then(|j| j.error()) {
                Some(e) => Err(e).with_context(|| common.bundle.display().to_string()),
                None => Ok(()),
            }
        }
        Command::Extract {
            common,
            archive: Some(file),
            platform,
            ..
        } => {
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let (input, bar, on_disk) = open_bundle(&common.bundle, &access, &progress, "extract")?;
            let opts = ReadOptions {
                trust: access.trust(),
                decryption: &access.decryption,
            };
            let platform = platform.unwrap_or_else(crate::extract_archive::host_platform);
            let r = crate::extract_archive::extract_archive(input, &opts, &file, platform)
                .map_err(|e| on_disk.explain(e, &progress));
            progress.remove(&bar);
            let w = r.with_context(|| common.bundle.display().to_string())?;
            let h = &w.verified.header;
            if !h.models.is_empty() || !h.files.is_empty() {
                progress.say(format!(
                    "note: {} models and {} files of the bundle are not in the archive (load, or extract --to DIR)",
                    h.models.len(),
                    h.files.iter().filter(|f| !f.is_dir()).count()
                ));
            }
            // stdout may be the archive itself: the summary goes to stderr.
            eprintln!(
                "wrote {} images ({}) to {} (signed by {})",
                w.images.len(),
                w.images
                    .iter()
                    .map(|i| format!(
                        "{} {}",
                        airlock_bundle::text::escape(&i.reference),
                        i.platform
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                file.display(),
                signer_text(&w.verified)
            );
            Ok(())
        }
        Command::Extract { common, to, .. } => {
            let to =
                to.ok_or_else(|| UnpackError::Usage("give --to DIR or --archive FILE".into()))?;
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let (input, bar, on_disk) = open_bundle(&common.bundle, &access, &progress, "extract")?;
            let opts = ReadOptions {
                trust: access.trust(),
                decryption: &access.decryption,
            };
            let r = crate::extract::extract(input, &opts, &to)
                .map_err(|e| on_disk.explain(e, &progress));
            progress.remove(&bar);
            let v = r.with_context(|| common.bundle.display().to_string())?;
            if !v.header.expected_present.is_empty() {
                progress.say(format!(
                    "warning: a delta bundle: {} blobs it leaves out (the target host has them) are not in {}",
                    v.header.expected_present.len(),
                    to.display()
                ));
            }
            println!(
                "extracted {} images, {} models and {} files into {} (signed by {})",
                v.header.images.len(),
                v.header.models.len(),
                v.header.files.iter().filter(|f| !f.is_dir()).count(),
                to.display(),
                signer_text(&v)
            );
            Ok(())
        }
        Command::Inventory {
            output,
            ollama_models,
            ollama_volume,
            no_engine,
        } => {
            let mut sources = crate::inventory::Sources {
                engine: !no_engine,
                models_dirs: ollama_models,
                volumes: ollama_volume,
            };
            if sources.models_dirs.is_empty() && sources.volumes.is_empty() {
                let dir = airlock_bundle::ollama::default_models_dir();
                if dir.is_dir() {
                    sources.models_dirs.push(dir);
                }
                if !no_engine {
                    sources.volumes.push("ollama-data".into());
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let inv = rt.block_on(crate::inventory::take(&sources))?;
            let bytes = inv.to_bytes();
            match &output {
                Some(p) => crate::report::write_output("inventory", p, &bytes)?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
            eprintln!(
                "inventory: {} images ({} layers), {} Ollama stores ({} blobs){}",
                inv.images.len(),
                inv.chain_ids().len(),
                inv.ollama.len(),
                inv.model_blobs().len(),
                output
                    .map(|p| format!(" -> {}", p.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Load {
            common,
            platform,
            no_preflight,
            json,
            report,
            ollama_models,
            ollama_volume,
            overwrite,
            work_dir,
            guard,
            containerd,
        } => {
            let report_sink =
                ReportSink::new(report.report, json, report.report_sign_key.as_deref())?;
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let mut guard = load_guard(&common, *guard)?;
            let models_to = match (ollama_models, ollama_volume) {
                (Some(None), _) => Some(Target::Path(absolute(
                    &airlock_bundle::ollama::default_models_dir(),
                )?)),
                (Some(Some(dir)), _) => Some(Target::Path(absolute(&dir)?)),
                (None, Some(v)) => Some(Target::Volume(v)),
                (None, None) => None,
            };
            if let Some(t) = &models_to {
                t.validate().map_err(UnpackError::Usage)?;
            }
            let restore = RestoreOptions {
                models_to,
                overwrite,
                work_dir: work_dir.unwrap_or_else(|| {
                    std::env::var_os("TMPDIR")
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
                }),
            };
            let loaded = match containerd.options() {
                Some(o) => crate::containerd::load(
                    &common.bundle,
                    &access,
                    &o,
                    platform,
                    &restore,
                    &mut guard,
                    &progress,
                ),
                None => crate::docker::load(
                    &common.bundle,
                    &access,
                    platform,
                    crate::docker::EngineOptions {
                        preflight: !no_preflight,
                    },
                    &restore,
                    &mut guard,
                    &progress,
                ),
            }
            .with_context(|| common.bundle.display().to_string());
            let policy_used = guard.policy.as_ref().map(|p| {
                json!({
                    "path": p.path,
                    "sha256": p.sha256,
                })
            });
            let body = loaded.as_ref().map(|r| {
                json!({
                    "header_digest": r.verified.header_digest,
                    "bundle_name": r.verified.header.name,
                    "signer": r.verified.signer.map(|k| k.to_string()),
                    "signature_verified": r.verified.signature_checked,
                    "encrypted": r.verified.encrypted,
                    "engine": r.engine,
                    "images": r.images,
                    "models": r.models,
                    "files": r.files,
                    "files_skipped": r.cleared.files_skipped.iter().map(|f| json!({
                        "target": f.target.to_string(),
                        "path": f.path,
                        "reason": "--no-files",
                    })).collect::<Vec<_>>(),
                    "policy": policy_used,
                    "rollback": r.cleared.rollback,
                    "expected_present": r.verified.header.expected_present,
                })
            });
            report_sink.write("load", &common.bundle, &body)?;
            let report = loaded?;
            if json {
            } else {
                for i in &report.images {
                    let how = if i.already_present {
                        "already present"
                    } else {
                        "loaded"
                    };
                    println!("{how} {} ({}) as {}", i.reference, i.platform, i.id);
                }
                for m in &report.models {
                    println!(
                        "restored model {} into {} ({} blobs written, {} already present{})",
                        m.name,
                        m.target,
                        m.blobs_written,
                        m.blobs_present,
                        m.replaced
                            .map(|d| format!(", replaced {d}"))
                            .unwrap_or_default()
                    );
                }
                for f in report.files.iter().filter(|f| f.action != "directory") {
                    match f.previous {
                        Some(p) => println!("{} {} {} (was {p})", f.action, f.target, f.path),
                        None => println!("{} {} {}", f.action, f.target, f.path),
                    }
                }
                for f in report.cleared.files_skipped.iter().filter(|f| !f.is_dir()) {
                    println!(
                        "skipped (--no-files) {} {}",
                        airlock_bundle::text::escape(&f.target.to_string()),
                        airlock_bundle::text::escape(&f.path)
                    );
                }
                progress.say(report.cleared.rollback.describe());
                progress.say(format!(
                    "verified; {} images, {} models, {} files in place{}",
                    report.images.len(),
                    report.models.len(),
                    report
                        .files
                        .iter()
                        .filter(|f| f.action != "directory")
                        .count(),
                    if report.engine.is_empty() {
                        String::new()
                    } else {
                        format!(" (engine: {})", report.engine)
                    }
                ));
            }
            Ok(())
        }
        #[cfg(feature = "push")]
        Command::Push {
            common,
            registry,
            insecure,
            prefix,
            token_realm,
            json,
            report: report_args,
        } => {
            let report_sink = ReportSink::new(
                report_args.report,
                json,
                report_args.report_sign_key.as_deref(),
            )?;
            let progress = Progress::new(Mode::detect(common.quiet));
            let access = common.access()?;
            let opts = crate::push::PushOptions {
                registry,
                insecure,
                prefix: crate::push::naming::normalize_prefix(prefix.as_deref())
                    .map_err(UnpackError::Usage)?,
                token_realm,
            };
            let pushed = crate::push::push(&common.bundle, &access, &opts, &progress)
                .with_context(|| common.bundle.display().to_string());
            let body = pushed
                .as_ref()
                .map(|r| serde_json::to_value(r).expect("report serialises"));
            report_sink.write("push", &common.bundle, &body)?;
            let report = pushed?;
            if !json {
                for i in report.images.iter().chain(&report.models) {
                    println!(
                        "{} {} ({}; blobs: {} uploaded, {} mounted, {} present)",
                        match i.status {
                            crate::push::Status::Pushed => "pushed",
                            crate::push::Status::Unchanged => "unchanged",
                        },
                        i.reference,
                        i.manifest,
                        i.blobs_uploaded,
                        i.blobs_mounted,
                        i.blobs_present
                    );
                }
                progress.say(format!(
                    "verified; {} images and {} models in {} ({} blobs, {} uploaded, {} mounted, {} already there)",
                    report.images.len(),
                    report.models.len(),
                    report.registry,
                    report.blobs_uploaded + report.blobs_mounted + report.blobs_present,
                    report.blobs_uploaded,
                    report.blobs_mounted,
                    report.blobs_present
                ));
            }
            Ok(())
        }
    }
}
