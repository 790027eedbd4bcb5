//! The `airlock-unpack` command line: its clap definitions and help texts, nothing else.
//! What each subcommand does with its arguments is in [`crate::commands`].
//!
//! The subcommands' own argument structs carry no `///` doc comment of their own (only
//! `//`): the help a subcommand shows comes from its variant in [`Command`].

use std::path::PathBuf;

use airlock_bundle::oci::Platform;
use clap::{Args, Parser, Subcommand};

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
platform (nothing sent; see inspect --engine), 14 an image this host's policy covers with a
[[verify]] rule carries no upstream signature that verifies with the rule's key (nothing
loaded or pushed; see load --help).";

#[derive(Debug, Parser)]
#[command(name = "airlock-unpack", version, about = "Verify an airlock bundle offline, load its images into the local Docker engine and restore its Ollama models and files.", after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write this host's age identity (host.key, 0600) and recipient (host.pub, 0644, also
    /// printed). Both are created new, never over an existing file or through a symbolic
    /// link.
    Keygen(KeygenArgs),
    /// Check signature, every digest and size. Reads everything, writes nothing. Without an
    /// identity (for an encrypted bundle) or with --outer-only: check the signed sums of
    /// every part instead, which needs no decryption key.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Rebuild the damaged, missing, truncated or swapped files of a part set from its
    /// parity parts (build --split SIZE --parity N), each checked against the signed sums
    /// before it replaces anything; the damaged file is kept as NAME.damaged. No key
    /// needed. More damage than parity: refused, nothing changed.
    Repair(RepairArgs),
    /// Show what a bundle carries (reads only the signed header).
    Inspect(InspectArgs),
    /// Write the verified OCI image layout into DIR (usable by skopeo as oci:DIR:REF), plus
    /// DIR/ollama/models (an Ollama store) and DIR/files/{volume/NAME,path/…} for models
    /// and files; or, with --archive FILE, one image archive for other loaders.
    #[command(after_help = EXTRACT_HELP)]
    Extract(ExtractArgs),
    /// List the blobs this host already has (Docker engine images with their layers' diff
    /// IDs, Ollama stores), for `airlock-pack build --have FILE`: a delta bundle that
    /// leaves them out.
    #[command(after_help = INVENTORY_HELP)]
    Inventory(InventoryArgs),
    /// Verify, then load images into the Docker engine at DOCKER_HOST (or containerd, see
    /// --containerd) and restore models and files into their volumes and directories, all or
    /// nothing.
    #[command(after_help = LOAD_HELP)]
    Load(LoadArgs),
    /// Verify, then push the images and Ollama models into an OCI registry inside the gap
    /// (distribution, Harbor, zot); tags appear only once the whole bundle verified.
    #[cfg(feature = "push")]
    #[command(after_help = PUSH_HELP)]
    Push(PushArgs),
    /// Print the completion script for SHELL on stdout (bash, zsh, fish).
    Completions(CompletionsArgs),
    /// Write a man page per command and subcommand into DIR (for packagers).
    #[command(hide = true)]
    Man(ManArgs),
}

// `completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

// `man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory to write airlock-unpack.1, airlock-unpack-load.1, … into (created if
    /// missing).
    pub(crate) dir: PathBuf,
}

// `keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Directory to write them into. Created with mode 0700 if missing; an existing one
    /// keeps its mode, but is refused if it is a symbolic link or writable by others.
    #[arg(short, long)]
    pub(crate) output: PathBuf,
}

// `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Only check the parts against NAME.sums and its signature (no key needed).
    #[arg(long)]
    pub(crate) outer_only: bool,
    /// This host's policy: its [[verify]] rules are checked against the upstream
    /// signatures the bundle carries (exit 14 if a required one does not verify)
    /// [default: /etc/airlock/policy.toml, if it exists].
    #[arg(long, env = "AIRLOCK_POLICY", value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
}

// `repair`.
#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Remove each damaged file once its rebuilt copy is in place, instead of keeping it
    /// as NAME.damaged.
    #[arg(long)]
    pub(crate) discard_damaged: bool,
}

// `inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also ask the engine (DOCKER_HOST, else Docker's or Podman's socket) what it is, and
    /// show per image whether it can load it, as load's pre-flight would (exit 13 if not).
    #[arg(long)]
    pub(crate) engine: bool,
    /// With --engine: judge the images for this platform instead of the engine's.
    #[arg(long, requires = "engine")]
    pub(crate) platform: Option<Platform>,
    /// Per image, the upstream signatures, attestations, SBOMs and referrers the bundle
    /// carries, and whether this host's [[verify]] rules verify the signatures (header only).
    #[arg(long, conflicts_with_all = ["engine", "sbom"])]
    pub(crate) provenance: bool,
    /// Read the whole bundle (it must verify) and list the packages (name, version, purl) of
    /// every SPDX or CycloneDX SBOM it carries for IMAGE (a reference as the bundle has it;
    /// busybox:1.36 is docker.io/library/busybox:1.36).
    #[arg(long, value_name = "IMAGE", conflicts_with = "engine")]
    pub(crate) sbom: Option<String>,
    /// The policy whose [[verify]] rules --provenance judges the signatures by
    /// [default: /etc/airlock/policy.toml, if it exists].
    #[arg(long, env = "AIRLOCK_POLICY", value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
}

// `extract`.
#[derive(Debug, Args)]
pub(crate) struct ExtractArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Destination directory (must not exist, or be empty).
    #[arg(long, required_unless_present = "archive", conflicts_with = "archive")]
    pub(crate) to: Option<PathBuf>,
    /// Write the images (one per reference, for --platform) as one archive FILE (must
    /// not exist; - for stdout) that docker load -i, podman load -i and ctr images
    /// import read. Models and files are not in it.
    #[arg(long, value_name = "FILE")]
    pub(crate) archive: Option<PathBuf>,
    /// With --archive: the images for this platform (os/arch[/variant]) [default: this
    /// machine's].
    #[arg(long, requires = "archive")]
    pub(crate) platform: Option<Platform>,
}

// `inventory`.
#[derive(Debug, Args)]
pub(crate) struct InventoryArgs {
    /// Write the inventory here (default: stdout).
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// An Ollama models directory to list (repeatable) [default: $OLLAMA_MODELS, else
    /// ~/.ollama/models, if it exists].
    #[arg(long, value_name = "DIR")]
    pub(crate) ollama_models: Vec<PathBuf>,
    /// A Docker volume holding an Ollama store to list (repeatable) [default: ollama-data,
    /// if it exists].
    #[arg(long, value_name = "NAME")]
    pub(crate) ollama_volume: Vec<String>,
    /// Do not list the Docker engine's images (and do not contact the engine unless a
    /// volume is named).
    #[arg(long)]
    pub(crate) no_engine: bool,
}

// `load`. Its flattened groups are boxed to keep `Command` small.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Load images for this platform instead of the engine's (os/arch[/variant]).
    #[arg(long)]
    pub(crate) platform: Option<Platform>,
    /// Load even if pre-flight says the engine cannot; an engine refusal is then rolled
    /// back.
    #[arg(long)]
    pub(crate) no_preflight: bool,
    /// Restore every model into this Ollama models directory instead of the bundle's
    /// targets; without DIR (put it after the bundle): $OLLAMA_MODELS, else
    /// ~/.ollama/models.
    #[arg(long, value_name = "DIR", num_args = 0..=1, conflicts_with = "ollama_volume")]
    pub(crate) ollama_models: Option<Option<PathBuf>>,
    /// Restore every model into this Docker named volume (mounted by Ollama at
    /// /root/.ollama) instead of the bundle's targets.
    #[arg(long, value_name = "NAME")]
    pub(crate) ollama_volume: Option<String>,
    /// Replace existing files whose content differs from the bundle's (refused otherwise,
    /// with exit code 10).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Where content bound for Docker volumes waits until the whole bundle verified
    /// [default: $TMPDIR, else /var/tmp].
    #[arg(long, env = "AIRLOCK_WORK_DIR", value_name = "DIR")]
    pub(crate) work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) guard: Box<GuardArgs>,
    #[command(flatten)]
    pub(crate) containerd: Box<crate::containerd::ContainerdArgs>,
    /// Print the load report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

// `push`.
#[cfg(feature = "push")]
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The registry to push to: HOST or HOST:PORT. The only host push ever contacts.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) registry: String,
    /// Speak plain HTTP to the registry instead of HTTPS.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Put every repository under this path (e.g. mirror/ gives
    /// HOST:PORT/mirror/library/busybox:1.36).
    #[arg(long, value_name = "PATH/")]
    pub(crate) prefix: Option<String>,
    /// The registry's token service, when it is not at the registry's own origin: the
    /// only other place push sends the registry's credentials to.
    #[arg(long, value_name = "URL")]
    pub(crate) token_realm: Option<String>,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    /// This host's policy: its [[verify]] rules are checked against the upstream
    /// signatures the bundle carries before the registry is contacted (exit 14 if a
    /// required one does not verify) [default: /etc/airlock/policy.toml, if it exists].
    #[arg(long, env = "AIRLOCK_POLICY", value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Print the push report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
}

/// TLS trust for the registry, besides the system store (see TLS below).
#[cfg(feature = "push")]
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// Trust this CA certificate (PEM) for the registry too; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(crate) ca_certs: Vec<PathBuf>,
    /// Read CA certificates (*.crt) and a client certificate (*.cert + *.key) from DIR
    /// instead of certs.d/HOST:PORT.
    #[arg(long, value_name = "DIR")]
    pub(crate) cert_dir: Option<PathBuf>,
    /// Present this client certificate (PEM) when the registry asks for one.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
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
registry stays unreachable or refuses. Error answers are read up to 4 KiB, shown escaped.

TLS: the system store, plus the registry's directory as docker and podman keep it (the first
of ~/.config/containers/certs.d/HOST:PORT, /etc/containers/certs.d/HOST:PORT,
/etc/docker/certs.d/HOST:PORT; or --cert-dir DIR): *.crt are CA certificates, *.cert + *.key
a client certificate (docker's client.cert/client.key), presented if the registry asks;
plus --ca-cert and --client-cert/--client-key. The files must be owned by root or this user
and not writable by others. A failed handshake says why (unknown CA, name mismatch, expired,
client certificate required or refused) and exits 9.";

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

Upstream signatures: [[verify]] tables in the policy say which images must carry a cosign
signature by which public key (the operator's copy of the vendor's key, PEM, ECDSA P-256 or
Ed25519; a path relative to the policy file's directory, held to the same ownership rules):
  [[verify]]
  match   = \"docker.io/grafana/*\"        # '*', a prefix ending in '*', or one repository
  key     = \"keys/grafana-cosign.pub\"
  require = true                          # the default; false only reports
The signatures the bundle carries in its signed header (copied from the registry when it
was packed) are checked offline against the image's digest and repository before anything
is loaded; an image a required rule covers without one that verifies is refused (exit 14),
naming the image, digest, key and what was found. A rule allows nothing by itself: the
images category still decides what may load. verify and push apply the same rules, and
inspect --provenance shows them per image.

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
pub(crate) struct Common {
    /// The bundle: its file, its first (or any) part, or its .sums file.
    pub(crate) bundle: PathBuf,
    /// Trust signatures by this minisign public key (repeatable).
    #[arg(long)]
    pub(crate) trust: Vec<PathBuf>,
    /// age identity file to decrypt with (repeatable).
    #[arg(short, long, env = "AIRLOCK_IDENTITY")]
    pub(crate) identity: Vec<PathBuf>,
    /// Do not check the signature. Dangerous: anyone could have made the bundle.
    #[arg(long)]
    pub(crate) insecure_skip_signature: bool,
    /// No progress output.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Progress on stderr: auto (bars on a terminal, else plain lines), bars, plain, or json
    /// (every line one JSON object; README: "Machine-readable progress").
    #[arg(
        long,
        value_enum,
        value_name = "STYLE",
        default_value = "auto",
        conflicts_with = "quiet"
    )]
    pub(crate) progress: airlock_progress::Style,
}

/// What this host allows a load: its policy, `--no-files`, anti-rollback and freshness.
#[derive(Debug, Args)]
pub(crate) struct GuardArgs {
    /// The operator policy bounding what a trusted signer may do on this host (see
    /// below) [default: /etc/airlock/policy.toml, if it exists].
    #[arg(long, env = "AIRLOCK_POLICY", value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Skip every [[files]] record: load only images and models. The skipped files are
    /// listed (and in the report); they are still verified with the rest of the bundle.
    #[arg(long)]
    pub(crate) no_files: bool,
    /// Load a bundle although this host already loaded a newer one of the same name (or
    /// one as old with other content): a deliberate rollback. The newer record is kept.
    #[arg(long)]
    pub(crate) allow_downgrade: bool,
    /// Refuse a bundle whose signed creation time is longer ago than AGE (30d, 12h, 2w);
    /// with the policy's max_age too, the stricter one applies.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub(crate) max_age: Option<std::time::Duration>,
    /// Where this host records, per bundle name, the newest bundle it loaded (state.json;
    /// a directory of its own, 0700, created on the first load)
    /// [default: /var/lib/airlock].
    #[arg(long, env = "AIRLOCK_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

/// Where the audit report of a load or push goes.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Write the JSON report (bundle digests, signer, what went where with digests, times,
    /// version, and the error if refused) to FILE, whether the run succeeds or not.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Sign the report with this minisign secret key (FILE.minisig, checkable with
    /// `minisign -Vm FILE -p KEY.pub`); its password from AIRLOCK_KEY_PASSWORD.
    #[arg(long, value_name = "KEY", requires = "report")]
    pub(crate) report_sign_key: Option<PathBuf>,
}
