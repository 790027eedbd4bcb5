//! `[[compose]]` stacks on the pack side: reading a compose file (bounded, see [`yaml`]),
//! interpolating its services' `image:` values the way `docker compose` does (see
//! [`interp`]), and turning them into the spec's images, so that `lock`, the drift check
//! and the plan treat them exactly like `[[image]]`s. The `.env` that travels beside the
//! compose file (so that the gap host's `docker compose` interpolates to the same images)
//! is made here too; carrying it is `plan::files`.
//!
//! Variables, highest precedence first: the spec's `env` for the entry, then the `.env`
//! beside the compose file, then a default written in the file (`${VAR:-default}`). The
//! process environment of `airlock-pack` is not read: a lock must pin the same images on
//! every machine that runs it, and the gap host never sees this machine's shell.

pub(crate) mod interp;
mod yaml;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use airlock_bundle::header::{ComposeService, Target};
use airlock_bundle::spec::{ComposeWant, ImageSpec, Spec};
use airlock_bundle::ImageRef;

use crate::PackError;
use yaml::Node;

/// The largest compose file read.
pub const MAX_COMPOSE_FILE: u64 = 1 << 20;
/// The largest `.env` read.
pub const MAX_DOTENV: u64 = 64 << 10;
/// How many `extends:` a service may follow.
const MAX_EXTENDS: usize = 8;

/// One `[[compose]]` entry, read.
#[derive(Debug, Clone)]
pub struct Stack {
    pub file: PathBuf,
    pub target: Target,
    /// Every service and its image, in file order.
    pub services: Vec<ComposeService>,
    /// The `.env` to place beside the compose file, when there is one to carry.
    pub env: Option<CarriedEnv>,
}

/// The `.env` a stack carries: the one beside the compose file, verbatim, followed by the
/// spec's `env` (later lines win in compose's `.env`, as the spec wins here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedEnv {
    pub bytes: Vec<u8>,
    /// Permission bits: the source `.env`'s, else 0644 (like the compose file).
    pub mode: u32,
    /// The source `.env` when `bytes` is exactly its content.
    pub verbatim: Option<PathBuf>,
}

/// The spec at `spec_path` with the images of its `[[compose]]` stacks added as images
/// (each once, after the `[[image]]`s, with where it came from), and the stacks.
pub fn load_spec(spec_path: &Path) -> Result<(Spec, Vec<Stack>), PackError> {
    let mut spec = Spec::load(spec_path)?;
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let mut stacks = Vec::new();
    for want in spec.compose_wants(spec_dir) {
        stacks.push(read(&want)?);
    }
    let mut have: Vec<ImageRef> = spec.image_refs();
    for s in &stacks {
        for svc in &s.services {
            let r = ImageRef::parse(&svc.image).expect("parsed when read");
            if !have.contains(&r) {
                spec.images.push(ImageSpec {
                    reference: svc.image.clone(),
                    from: Some(format!(
                        "compose file {}, service {}",
                        s.file.display(),
                        airlock_bundle::text::escape(&svc.name)
                    )),
                });
                have.push(r);
            }
        }
    }
    Ok((spec, stacks))
}

/// Reads one stack: its `.env`, its compose file, every service's image.
pub fn read(want: &ComposeWant) -> Result<Stack, PackError> {
    let dir = want.file.parent().unwrap_or(Path::new("."));
    let dotenv_path = dir.join(".env");
    let dotenv = read_bounded(&dotenv_path, MAX_DOTENV, true)?;
    let spec_env = |k: &str| want.env.get(k).cloned();
    let file_vars = match &dotenv {
        Some((text, _)) => {
            interp::parse_dotenv(text, &spec_env).map_err(|e| PackError::Compose {
                file: dotenv_path.clone(),
                service: None,
                problem: format!("line {}: {}", e.line, e.why),
            })?
        }
        None => BTreeMap::new(),
    };
    let vars = |k: &str| want.env.get(k).or_else(|| file_vars.get(k)).cloned();
    let (text, _) = read_bounded(&want.file, MAX_COMPOSE_FILE, false)?.expect("required");
    let doc = yaml::parse(&text).map_err(|e| PackError::Compose {
        file: want.file.clone(),
        service: None,
        problem: e.to_string(),
    })?;
    let services = harvest(&want.file, &doc, &vars)?;
    Ok(Stack {
        file: want.file.clone(),
        target: want.target.clone(),
        services,
        env: carried_env(dotenv, &dotenv_path, &want.env),
    })
}

fn carried_env(
    dotenv: Option<(String, u32)>,
    path: &Path,
    spec_env: &BTreeMap<String, String>,
) -> Option<CarriedEnv> {
    let (mut text, mode, verbatim) = match dotenv {
        Some((t, mode)) => (t, mode, Some(path.to_path_buf())),
        None if spec_env.is_empty() => return None,
        None => (String::new(), 0o644, None),
    };
    if !spec_env.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# Added by airlock-pack from the spec's [compose.env]; they win over the lines above.\n");
        for (k, v) in spec_env {
            // Single quotes: compose reads the value literally (the spec refuses values
            // holding a quote or a line break).
            text.push_str(&format!("{k}='{v}'\n"));
        }
        return Some(CarriedEnv {
            bytes: text.into_bytes(),
            mode,
            verbatim: None,
        });
    }
    Some(CarriedEnv {
        bytes: text.into_bytes(),
        mode,
        verbatim,
    })
}

/// A UTF-8 file of at most `max` bytes with its permission bits; `None` when `optional`
/// and absent. Symbolic links and special files are refused, as for `[[files]]`.
fn read_bounded(path: &Path, max: u64, optional: bool) -> Result<Option<(String, u32)>, PackError> {
    use std::os::unix::fs::PermissionsExt as _;
    let input = |source| PackError::Input {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(input)?,
    };
    if meta.file_type().is_symlink() {
        return Err(PackError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(PackError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(input)?;
    let fail = |problem: String| PackError::Compose {
        file: path.to_path_buf(),
        service: None,
        problem,
    };
    if bytes.len() as u64 > max {
        return Err(fail(format!("larger than {max} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    Ok(Some((text, meta.permissions().mode() & 0o777)))
}

/// Every service's image, interpolated and parsed; refusals for what the gap host could not
/// run from images alone, or what this reader does not follow.
fn harvest(
    file: &Path,
    doc: &Node,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ComposeService>, PackError> {
    let fail = |service: Option<&str>, problem: String| PackError::Compose {
        file: file.to_path_buf(),
        service: service.map(str::to_string),
        problem,
    };
    if !matches!(doc, Node::Map(_)) {
        return Err(fail(
            None,
            "is not a compose file (no top-level mapping)".into(),
        ));
    }
    if doc.get("include").is_some() {
        return Err(fail(
            None,
            "`include:` pulls in other compose files, which airlock does not follow: merge \
             them into this file, or give each its own [[compose]] entry"
                .into(),
        ));
    }
    let Some(Node::Map(services)) = doc.get("services") else {
        return Err(fail(None, "has no `services:` mapping".into()));
    };
    let mut out = Vec::new();
    for (name, _) in services.iter().filter(|(k, _)| k != "<<") {
        let raw = image_of(services, name, 0).map_err(|p| fail(Some(name), p))?;
        let image = interp::interpolate(&raw, vars)
            .map_err(|e| fail(Some(name), format!("image {raw:?}: {e}")))?;
        let r = ImageRef::parse(&image).map_err(|e| {
            fail(
                Some(name),
                format!("image {image:?} (from {raw:?}) is not an image reference: {e}"),
            )
        })?;
        out.push(ComposeService {
            name: name.clone(),
            image: r.to_string(),
        });
    }
    Ok(out)
}

/// The raw (not yet interpolated) `image:` of service `name`, following `extends:` within
/// the same file.
fn image_of(services: &[(String, Node)], name: &str, depth: usize) -> Result<String, String> {
    let svc = services
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("extends service {name:?}, which the file does not define"))?;
    if !matches!(svc, Node::Map(_)) {
        return Err("is not a mapping".into());
    }
    if let Some(image) = svc.get("image") {
        return image
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "`image:` is not a string".into());
    }
    if let Some(ext) = svc.get("extends") {
        let base = match ext {
            Node::Str(s) => s.as_str(),
            Node::Map(_) => {
                if let Some(f) = ext.get("file") {
                    return Err(format!(
                        "extends a service of another file ({}), which airlock does not \
                         follow: write `image:` in this service",
                        f.as_str().unwrap_or("?")
                    ));
                }
                ext.get("service")
                    .and_then(Node::as_str)
                    .ok_or("`extends:` names no service")?
            }
            _ => return Err("`extends:` is neither a service name nor a mapping".into()),
        };
        if depth >= MAX_EXTENDS {
            return Err(format!(
                "`extends:` chains deeper than {MAX_EXTENDS} services"
            ));
        }
        return image_of(services, base, depth + 1);
    }
    if svc.get("build").is_some() {
        return Err(
            "has `build:` and no `image:`: the gap host cannot build it. Build and push the \
             image to a registry and name it in `image:` (compose then uses it rather than \
             building), or carry it with an [[image]] and point `image:` at that"
                .into(),
        );
    }
    Err("has no `image:`".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harvest_text(text: &str, vars: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let doc = yaml::parse(text).map_err(|e| e.to_string())?;
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        harvest(Path::new("c.yml"), &doc, &lookup)
            .map(|v| v.into_iter().map(|s| (s.name, s.image)).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn images_are_harvested_interpolated_and_followed_through_extends() {
        let got = harvest_text(
            "services:\n  web:\n    image: nginx:${TAG:-1.25}\n  api:\n    image: ${REG}/api:$V\n    build: .\n  \
             worker:\n    extends: api\n  other:\n    extends:\n      service: web\n",
            &[("REG", "127.0.0.1:5000"), ("V", "2")],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("web", "docker.io/library/nginx:1.25"),
                ("api", "127.0.0.1:5000/api:2"),
                ("worker", "127.0.0.1:5000/api:2"),
                ("other", "docker.io/library/nginx:1.25"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn refusals_name_the_file_the_service_and_the_variable() {
        let cases = [
            (
                "services:\n  web:\n    image: nginx:${TAG}\n",
                "service web: image \"nginx:${TAG}\": variable TAG is not set",
            ),
            (
                "services:\n  app:\n    build: ./app\n",
                "service app: has `build:` and no `image:`",
            ),
            (
                "services:\n  app:\n    extends:\n      file: base.yml\n      service: x\n",
                "another file (base.yml)",
            ),
            ("include:\n  - other.yml\nservices: {}\n", "`include:`"),
            (
                "services:\n  w:\n    image: Not/Valid\n",
                "service w: image \"Not/Valid\"",
            ),
            (
                "services:\n  w:\n    extends: nope\n",
                "\"nope\", which the file does not define",
            ),
            (
                "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
                "deeper than 8",
            ),
            ("version: '3'\n", "no `services:`"),
            (
                "services:\n  w:\n    image: ${T:?pick a tag}\n",
                "required variable T is missing a value: pick a tag",
            ),
        ];
        for (text, want) in cases {
            let e = harvest_text(text, &[]).unwrap_err();
            assert!(e.starts_with("c.yml: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_spec_env_wins_over_the_dotenv_and_is_carried_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(
            &file,
            "services:\n  a:\n    image: a:${A}\n  b:\n    image: b:${B}\n  c:\n    image: c:${C:-def}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".env"), "A=from-dotenv\nB=from-dotenv").unwrap();
        let want = |env: &[(&str, &str)]| ComposeWant {
            file: file.clone(),
            target: Target::Path("/opt/s".into()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let s = read(&want(&[("B", "from-spec")])).unwrap();
        let images: Vec<&str> = s.services.iter().map(|s| s.image.as_str()).collect();
        assert_eq!(
            images,
            [
                "docker.io/library/a:from-dotenv",
                "docker.io/library/b:from-spec",
                "docker.io/library/c:def"
            ]
        );
        let env = s.env.unwrap();
        assert_eq!(env.verbatim, None);
        let text = String::from_utf8(env.bytes).unwrap();
        assert!(
            text.starts_with("A=from-dotenv\nB=from-dotenv\n# Added"),
            "{text}"
        );
        assert!(text.ends_with("\nB='from-spec'\n"), "{text}");
        // What compose will read back from the carried file is what was harvested.
        let back = interp::parse_dotenv(&text, &|_| None).unwrap();
        assert_eq!(back["B"], "from-spec");
        // Without a spec env the .env travels as it is.
        let plain = read(&want(&[])).unwrap().env.unwrap();
        assert_eq!(plain.verbatim, Some(dir.path().join(".env")));
        // No .env and no spec env: nothing to carry; a missing variable is refused.
        std::fs::remove_file(dir.path().join(".env")).unwrap();
        let e = read(&want(&[])).unwrap_err().to_string();
        assert!(e.contains("service a") && e.contains("variable A"), "{e}");
        let ok = read(&want(&[("A", "1"), ("B", "2")])).unwrap();
        assert!(ok.env.unwrap().bytes.starts_with(b"# Added"));
    }
}
