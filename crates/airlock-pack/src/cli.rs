//! The `airlock-pack` command line: the clap definitions and nothing else, so that the
//! subcommands under `commands/` depend on it and not the other way round. Parsing and
//! dispatch are `commands::main` (the binary's entry point); the mapping of failures to exit
//! codes is `exit::code`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Typical use, on the connected machine:
  airlock-pack keygen -o ~/.config/airlock           # once: the signing key pair
  airlock-pack lock manifests/llm-stack.toml         # pin every image and model to a digest
  airlock-pack build manifests/llm-stack.toml -o llm-stack.airlock \\
      --sign-key ~/.config/airlock/airlock.key --recipients-file gap-host.pub

The bundle comes with llm-stack.airlock.sums and .sums.minisig: a transfer station checks
it with standard tools, without the decryption key (in the bundle's directory):
  minisign -Vm llm-stack.airlock.sums -p airlock.pub && sha256sum -c llm-stack.airlock.sums
For media: --split fat32 (or 4G, 700M, dvd, bd25) writes llm-stack.airlock.001, .002, …

Models already pulled with `ollama pull`: add --from-local to lock and build (no download;
the store is --ollama-models DIR, else $OLLAMA_MODELS, else ~/.ollama/models).

Exit codes: 0 ok, 2 usage, 3 content failed verification, 7 environment (disk, files),
8 lock out of date (run `lock --update`), 9 registry unreachable or refused,
14 provenance: an image a [[verify]] rule covers is not signed by its key, or its
signature changed since the lock.";

const LOCK_AFTER_HELP: &str = "\
An image that a [[verify]] rule of the spec covers must carry a cosign signature by the
rule's key for the digest it is pinned to (the sha256-<hex>.sig tag that `cosign sign --key`
and `skopeo copy --sign-by-sigstore-private-key` write), else lock refuses (exit 14) and says
what it found; the lock records the signature manifest that verified. A rule:

  [[verify]]
  match = \"docker.io/grafana/*\"   # a repository, a prefix ending in *, or *
  key = \"keys/grafana.pub\"        # cosign public key (PEM), relative to the spec
  require = true                  # false: record a valid one, only warn without

A [[compose]] entry (file = \"stack/docker-compose.yml\", path = \"/opt/stack\") adds every
service's image: to the lock, interpolated as docker compose does from the entry's env, then
the .env beside the file; an unset variable without a default, a service with build: and no
image:, and include: are refused (exit 2), naming the file and service.";

const BUILD_AFTER_HELP: &str = "\
Each image's signature manifest must still be the one the lock recorded and the spec's
[[verify]] rules must still hold, else build refuses (exit 14). The images' cosign
signatures, attestations and SBOMs, their OCI 1.1 referrers and BuildKit attestations are
carried in the bundle (unless --no-provenance), each signature with the fingerprint of the
key that verified it, for the gap host to check against its own rules.";

#[derive(Debug, Parser)]
#[command(name = "airlock-pack", version, about = "Pin, pull and pack container images, Ollama models and files into one signed, encrypted bundle for an air-gapped host.", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a minisign key pair (airlock.key 0600, airlock.pub 0644) for signing bundles.
    /// Both are created new, never over an existing file or through a symbolic link.
    Keygen(KeygenArgs),
    /// Pin every image, model and [[files]] source of SPEC to a digest in SPEC.lock beside it.
    #[command(after_help = LOCK_AFTER_HELP)]
    Lock(LockArgs),
    /// Pull the locked images and models, read the spec's files, and write one signed (and
    /// encrypted) bundle.
    #[command(after_help = BUILD_AFTER_HELP)]
    Build(BuildArgs),
    /// Show what the blob cache holds (`ls`) or trim it (`prune`).
    Cache(CacheArgs),
    /// Print the completion script for SHELL on stdout (bash, zsh, fish).
    Completions(CompletionsArgs),
    /// Write a man page per command and subcommand into DIR (for packagers).
    #[command(hide = true)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    pub(crate) command: CacheCommand,
    /// Blob cache directory [default: $XDG_CACHE_HOME/airlock or ~/.cache/airlock].
    #[arg(long, env = "AIRLOCK_CACHE", global = true)]
    pub(crate) cache: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Its size, its blobs and the bundles serving as stores; per LOCK (or SPEC.toml), how
    /// many of the blobs it needs are in the cache, in stores, or missing.
    Ls {
        locks: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remove every blob the --keep locks do not need (and forget stores serving none), then
    /// the least recently used beyond --max-size. Waits for running builds.
    Prune {
        #[arg(long, value_name = "LOCK", num_args = 1..)]
        keep: Vec<PathBuf>,
        #[arg(long, value_name = "SIZE", value_parser = crate::cache::usage::parse_max_size)]
        max_size: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Directory to write the key pair into. Created with mode 0700 if missing; an
    /// existing one keeps its mode, but is refused if it is a symbolic link or writable
    /// by others.
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// Protect the secret key with a password (from AIRLOCK_KEY_PASSWORD, else a prompt).
    #[arg(long)]
    pub(crate) password: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The bundle spec (manifests/NAME.toml).
    pub(crate) spec: PathBuf,
    /// Resolve every tag again (and read the [[files]] again), not only what the lock
    /// lacks.
    #[arg(long)]
    pub(crate) update: bool,
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// TLS trust for the spec's registries, besides the system store and each registry's
/// certs.d directory (~/.config/containers/certs.d/HOST:PORT, /etc/containers/certs.d/…,
/// /etc/docker/certs.d/…: *.crt CAs, *.cert + *.key a client certificate). One client
/// serves all of them: the CAs found for one registry are trusted for all.
#[derive(Debug, Clone, Args)]
pub(crate) struct TlsArgs {
    /// Trust this CA certificate (PEM) too, besides the system store and each registry's
    /// certs.d directory (the first of ~/.config/containers/certs.d/HOST:PORT,
    /// /etc/containers/certs.d/HOST:PORT, /etc/docker/certs.d/HOST:PORT); repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(crate) ca_certs: Vec<PathBuf>,
    /// Read CA certificates (*.crt) and a client certificate (*.cert + *.key) from DIR
    /// instead of the certs.d lookup.
    #[arg(long, value_name = "DIR")]
    pub(crate) cert_dir: Option<PathBuf>,
    /// Present this client certificate (PEM) to Ollama registries that ask for one (image
    /// registries: not supported by oci-client 0.18).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Blob cache directory [default: $XDG_CACHE_HOME/airlock or ~/.cache/airlock].
    #[arg(long, env = "AIRLOCK_CACHE")]
    pub(crate) cache: Option<PathBuf>,
    /// Local Ollama store for models with source = "local" (or all, with --from-local)
    /// [default: $OLLAMA_MODELS, else ~/.ollama/models].
    #[arg(long, value_name = "DIR")]
    pub(crate) ollama_models: Option<PathBuf>,
    /// Take every model from the local Ollama store instead of its registry (no network
    /// for models).
    #[arg(long)]
    pub(crate) from_local: bool,
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

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The bundle spec; its lock (SPEC.lock) must be up to date.
    pub(crate) spec: PathBuf,
    /// The bundle file to write.
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// minisign secret key to sign with (its password from AIRLOCK_KEY_PASSWORD, else a prompt).
    #[arg(long, env = "AIRLOCK_SIGN_KEY")]
    pub(crate) sign_key: PathBuf,
    /// Encrypt to this recipient: age1… or "ssh-ed25519 AAAA…". Repeatable.
    #[arg(short, long = "recipient")]
    pub(crate) recipients: Vec<String>,
    /// Encrypt to every recipient listed in this file (one per line). Repeatable.
    #[arg(short = 'R', long = "recipients-file")]
    pub(crate) recipients_files: Vec<PathBuf>,
    /// Encrypt with a passphrase instead (from AIRLOCK_PASSPHRASE, else a prompt).
    #[arg(long, conflicts_with_all = ["recipients", "recipients_files"])]
    pub(crate) passphrase: bool,
    /// Cut the bundle into parts of at most SIZE for media: NAME.001, NAME.002, … Sizes like
    /// 4G, 4GiB, 700M (powers of 1024), 4GB (powers of 1000), or fat32 (4 GiB − 1 byte),
    /// dvd (4.7 GB), bd25 (25 GB). Split or not, NAME.sums and NAME.sums.minisig are written.
    #[arg(long, value_name = "SIZE", value_parser = airlock_bundle::parts::parse_size)]
    pub(crate) split: Option<u64>,
    /// With --split: after the parts, write N parity parts NAME.p01, … (a Reed–Solomon code
    /// over the encrypted bytes, listed in the signed sums), so that any N lost or damaged
    /// files of the set can be rebuilt without the key. N, or P% of the parts rounded up
    /// to whole parts (10%).
    #[arg(long, value_name = "N|P%", requires = "split", value_parser = parse_parity)]
    pub(crate) parity: Option<ParityCount>,
    /// Build a delta bundle for the host this inventory describes (written there by
    /// `airlock-unpack inventory`): image layers and model blobs it already has are left
    /// out, recorded in the signed header as expected present, and checked by `load`.
    #[arg(long, value_name = "INVENTORY")]
    pub(crate) have: Option<PathBuf>,
    /// Leave out the images' upstream provenance: their cosign signatures (`.sig`),
    /// attestations (`.att`), SBOMs (`.sbom`), OCI 1.1 referrers and BuildKit attestation
    /// manifests, which are carried by default. The spec's [[verify]] rules are checked
    /// either way.
    #[arg(long)]
    pub(crate) no_provenance: bool,
    /// Concurrent blob downloads (and Range parts per large model blob).
    #[arg(short, long, default_value_t = 4)]
    pub(crate) jobs: usize,
    /// Put a static airlock-unpack beside the bundle, listed in its signed sums, for a gap
    /// host that has none yet [default PATH: dist/airlock-unpack of `cargo xtask dist`,
    /// else /usr/lib/airlock/airlock-unpack from the .deb].
    #[arg(long, value_name = "PATH")]
    pub(crate) with_unpacker: Option<Option<PathBuf>>,
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory to write airlock-pack.1, airlock-pack-build.1, … into (created if missing).
    pub(crate) dir: PathBuf,
}

/// `build --parity`: a number of parity parts, or a share of the data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParityCount {
    Parts(usize),
    Percent(usize),
}

impl ParityCount {
    /// How many parity parts for `data` data parts: a share rounds up, and is at least one.
    pub(crate) fn of(self, data: usize) -> usize {
        match self {
            ParityCount::Parts(n) => n,
            ParityCount::Percent(p) => (data * p).div_ceil(100).max(1),
        }
    }
}

fn parse_parity(s: &str) -> Result<ParityCount, String> {
    let bad =
        || format!("{s}: expected a number of parity parts (2) or a share of the parts (10%)");
    match s.strip_suffix('%') {
        Some(p) => match p.parse::<usize>() {
            Ok(p @ 1..=100) => Ok(ParityCount::Percent(p)),
            _ => Err(bad()),
        },
        None => match s.parse::<usize>() {
            Ok(n @ 1..=airlock_bundle::parts::MAX_PARTS) => Ok(ParityCount::Parts(n)),
            _ => Err(bad()),
        },
    }
}

#[cfg(test)]
mod parity_tests {
    use super::*;

    #[test]
    fn parity_is_a_count_or_a_share_rounded_up() {
        assert_eq!(parse_parity("2"), Ok(ParityCount::Parts(2)));
        assert_eq!(parse_parity("10%").map(|p| p.of(12)), Ok(2));
        assert_eq!(parse_parity("10%").map(|p| p.of(3)), Ok(1));
        assert_eq!(parse_parity("100%").map(|p| p.of(7)), Ok(7));
        for bad in ["0", "0%", "101%", "-1", "x", "%", "2.5"] {
            assert!(parse_parity(bad).is_err(), "{bad}");
        }
    }
}
