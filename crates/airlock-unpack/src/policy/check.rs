//! The parsed [`Policy`] and checking a bundle's header against it: every `[[files]]`
//! target, volume, image repository and model (with its models directory), file mode and
//! age, under the top-level rules and each `[signer.NAME]` section that applies. Each
//! violation is listed, its untrusted names escaped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_bundle::header::{FileRecord, Header, Target};
use airlock_bundle::ollama::ModelName;
use airlock_bundle::text::escape;
use airlock_bundle::{Digest, ImageRef};

use super::file::{bad_policy, read};
use super::rules::{Category, PolicyToml, Rules, SectionToml};
use super::trust::TrustNames;
use super::verify::{resolve, VerifyRule, VerifyToml};
use crate::UnpackError;

/// The operator's policy file, parsed.
#[derive(Debug)]
pub struct Policy {
    pub path: PathBuf,
    /// sha256 of the file's bytes: which policy decided, in reports and refusals.
    pub sha256: Digest,
    top: Rules,
    /// `[signer.NAME]` sections by name.
    pub(super) signers: BTreeMap<String, Rules>,
    /// `[[verify]]`: the upstream signatures images must carry (checked by
    /// [`crate::provenance`], not by [`Policy::check`]).
    pub verify: Vec<VerifyRule>,
    /// `[[verify]]` as written, until [`Policy::load`] reads their keys.
    verify_toml: Vec<VerifyToml>,
}

impl Policy {
    /// Reads and parses the policy at `path`. `signers`: the names of the trusted keys
    /// (`None` when the signature is not checked); a `[signer.NAME]` for another name is an
    /// error, so that a typo cannot leave a key unrestricted.
    pub fn load(path: &Path, signers: Option<&TrustNames>) -> Result<Policy, UnpackError> {
        let bytes = read(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| bad_policy(path, e))?;
        let mut p = Policy::parse(path, Digest::of(&bytes), text, signers.map(|s| &s.names))
            .map_err(|e| bad_policy(path, e))?;
        p.verify = resolve(path, std::mem::take(&mut p.verify_toml))?;
        Ok(p)
    }

    /// Parses policy text (`known`: the trusted keys' names, when known).
    fn parse(
        path: &Path,
        sha256: Digest,
        text: &str,
        known: Option<&BTreeSet<String>>,
    ) -> Result<Policy, String> {
        let t: PolicyToml = toml::from_str(text).map_err(|e| e.to_string())?;
        let top = Rules::parse(
            String::new(),
            SectionToml {
                files: t.files,
                volumes: t.volumes,
                images: t.images,
                models: t.models,
                models_dirs: t.models_dirs,
                max_mode: t.max_mode,
                max_age: t.max_age,
            },
        )?;
        let mut signers = BTreeMap::new();
        for (name, section) in t.signer {
            if let Some(known) = known {
                if !known.contains(&name) {
                    return Err(format!(
                        "[signer.{name}]: no trusted key is named {name} (a section applies to the trust file NAME.pub; trusted: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ));
                }
            }
            let rules = Rules::parse(format!("[signer.{name}] "), section)
                .map_err(|e| format!("[signer.{name}] {e}"))?;
            signers.insert(name, rules);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            sha256,
            top,
            signers,
            verify: Vec::new(),
            verify_toml: t.verify,
        })
    }

    /// How refusals and reports name this policy.
    pub fn describe(&self) -> String {
        format!("policy {}, {}", self.path.display(), self.sha256)
    }

    /// The rule sets that apply to a bundle signed by a key with these trust file names:
    /// the top level, and every matching section (each narrows further).
    fn applicable<'a>(&'a self, signer: &'a [String]) -> impl Iterator<Item = &'a Rules> + 'a {
        std::iter::once(&self.top).chain(signer.iter().filter_map(|n| self.signers.get(n)))
    }

    /// The strictest `max_age` among the rules that apply, with where it was written.
    pub fn max_age(&self, signer: &[String]) -> Option<(Duration, String)> {
        self.applicable(signer)
            .filter_map(|r| {
                r.max_age
                    .map(|a| (a, format!("{}max_age in {}", r.scope, self.path.display())))
            })
            .min_by_key(|(a, _)| *a)
    }

    /// Every violation of this policy by header `h`, signed by a key with the trust file
    /// names `signer`, with models going to `models_to` when the command line overrides
    /// their targets. `[[files]]` are not looked at with `no_files` (they are skipped).
    pub fn check(
        &self,
        h: &Header,
        signer: &[String],
        models_to: Option<&Target>,
        no_files: bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let file = self.path.display();
        for r in self.applicable(signer) {
            let refuse = |what: String, cat: &Category| {
                format!("{what}: not allowed by {}{} in {file}", r.scope, cat.rule())
            };
            if !no_files {
                for f in &h.files {
                    let what = describe_file(f);
                    match &f.target {
                        Target::Path(root) => {
                            let host = host_path(root, &f.path);
                            if !r.files.allows(|p| p.matches(&host)) {
                                out.push(format!(
                                    "{what}: not under any allowed prefix: {}{} in {file}",
                                    r.scope,
                                    r.files.rule()
                                ));
                            }
                        }
                        Target::Volume(v) => {
                            if !r.volumes.allows(|p| p.matches(v)) {
                                out.push(refuse(what.clone(), &r.volumes));
                            }
                        }
                    }
                    if let (Some(max), Ok(mode)) = (r.max_mode, f.mode_bits()) {
                        if mode & !max != 0 {
                            out.push(format!(
                                "{what}: mode {:04o} has bits beyond {}max_mode = \"{max:04o}\" in {file}",
                                mode, r.scope
                            ));
                        }
                    }
                }
            }
            for m in &h.models {
                let shown = escape(&m.name);
                match ModelName::parse(&m.name) {
                    Ok(name) if r.models.allows(|p| p.matches_model(&name)) => {}
                    Ok(name) => {
                        let full = name.to_string();
                        let what = if full == m.name {
                            format!("model {shown}")
                        } else {
                            format!("model {shown} (normalised {})", escape(&full))
                        };
                        out.push(refuse(what, &r.models));
                    }
                    Err(e) => out.push(format!("model {shown}: {e}")),
                }
                let (target, how) = match models_to {
                    Some(t) => (t, "the command line's target"),
                    None => (&m.target, "the bundle's target"),
                };
                let what = format!("model {shown} into {} ({how})", show_target(target));
                match target {
                    Target::Path(dir) => {
                        if !r.models_dirs.allows(|p| p.matches(dir)) {
                            out.push(refuse(what, &r.models_dirs));
                        }
                    }
                    Target::Volume(v) => {
                        if !r.volumes.allows(|p| p.matches(v)) {
                            out.push(refuse(what, &r.volumes));
                        }
                    }
                }
            }
            let mut seen = BTreeSet::new();
            for i in &h.images {
                if !seen.insert(i.reference.as_str()) {
                    continue;
                }
                // The header's references parsed when the bundle was built; one that does
                // not now cannot be matched, so it is refused.
                let repo = ImageRef::parse(&i.reference).map(|r| r.name());
                let allowed = repo
                    .as_ref()
                    .is_ok_and(|repo| r.images.allows(|p| p.matches(repo)));
                if !allowed {
                    out.push(refuse(
                        format!(
                            "image {} (repository {})",
                            escape(&i.reference),
                            repo.as_deref()
                                .map(escape)
                                .unwrap_or_else(|e| e.to_string())
                        ),
                        &r.images,
                    ));
                }
            }
        }
        out
    }
}

/// A file record as refusals show it: the host path it would be, and where that came from.
fn describe_file(f: &FileRecord) -> String {
    let kind = if f.is_dir() { "directory" } else { "file" };
    match &f.target {
        Target::Path(root) => format!(
            "{kind} {} (bundle target {}, path {})",
            escape(&host_path(root, &f.path)),
            escape(root),
            escape(&f.path)
        ),
        Target::Volume(v) => format!("{kind} {} in volume {}", escape(&f.path), escape(v)),
    }
}

fn show_target(t: &Target) -> String {
    match t {
        Target::Path(p) => escape(p),
        Target::Volume(v) => format!("volume {}", escape(v)),
    }
}

/// The host path a file record writes.
fn host_path(root: &str, rel: &str) -> String {
    format!("{}/{rel}", root.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::path_under;
    use airlock_bundle::header::{ImageRecord, ModelRecord};

    fn policy(text: &str) -> Policy {
        Policy::parse(
            Path::new("/etc/airlock/policy.toml"),
            Digest::of(text.as_bytes()),
            text,
            Some(&["pack".to_string(), "ops".to_string()].into()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(text: &str) -> String {
        Policy::parse(
            Path::new("p.toml"),
            Digest::of(b""),
            text,
            Some(&["pack".to_string()].into()),
        )
        .map(|_| ())
        .expect_err("must be refused")
    }

    fn header(files: &[(&str, &str, &str)], models: &[&str], images: &[&str]) -> Header {
        let d = Digest::of(b"x");
        Header {
            format: "airlock-bundle".into(),
            version: 3,
            provenance: Vec::new(),
            tool: "t".into(),
            name: "t".into(),
            created: "2026-01-01T00:00:00Z".into(),
            entries: vec![],
            images: images
                .iter()
                .map(|r| ImageRecord {
                    reference: (*r).into(),
                    platform: "linux/amd64".parse().unwrap(),
                    manifest: d,
                    config: d,
                    layers: vec![],
                    index: None,
                })
                .collect(),
            models: models
                .iter()
                .map(|n| ModelRecord {
                    name: (*n).into(),
                    manifest: d,
                    config: d,
                    layers: vec![],
                    target: Target::Volume("ollama-data".into()),
                    info: None,
                })
                .collect(),
            files: files
                .iter()
                .map(|(root, path, mode)| FileRecord {
                    target: if root.starts_with('/') {
                        Target::Path((*root).into())
                    } else {
                        Target::Volume((*root).into())
                    },
                    path: (*path).into(),
                    mode: (*mode).into(),
                    digest: Some(d),
                })
                .collect(),
            expected_present: vec![],
            compose: Vec::new(),
        }
    }

    #[test]
    fn path_prefixes_are_component_wise() {
        assert!(path_under("/opt/llm", "/opt/llm"));
        assert!(path_under("/opt/llm/a/b", "/opt/llm"));
        assert!(!path_under("/opt/llm-stack/a", "/opt/llm"));
        assert!(!path_under("/opt/llmx", "/opt/llm"));
        assert!(!path_under("/opt", "/opt/llm"));
        assert!(path_under("/etc/shadow", "/"));
        let p = policy("files = [\"/opt/llm\"]\n");
        let h = header(
            &[
                ("/opt/llm", "a.yml", "0644"),
                ("/opt/llm-stack", "b.yml", "0644"),
                ("/opt", "llm-stack/c.yml", "0644"),
                ("/opt", "llm/d.yml", "0644"),
            ],
            &[],
            &[],
        );
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(v[0].starts_with("file /opt/llm-stack/b.yml (bundle target /opt/llm-stack, path b.yml): not under any allowed prefix: files = [\"/opt/llm\"] in /etc/airlock/policy.toml"), "{v:#?}");
        assert!(v[1].starts_with("file /opt/llm-stack/c.yml"), "{v:#?}");
    }

    #[test]
    fn policy_paths_must_be_absolute_and_normalised() {
        for bad in [
            "opt/llm",
            "/opt/../etc",
            "/opt/./llm",
            "/opt//llm",
            "/opt/llm/",
            "",
            "/opt/l*m",
        ] {
            let e = refused(&format!("files = [{bad:?}]\n"));
            assert!(e.contains("files:"), "{bad}: {e}");
        }
        assert!(refused("models_dirs = [\"/\"]\n").contains("models_dirs"));
        assert!(refused("models_dirs = [\"/srv/m/\"]\n").contains("models_dirs"));
        // "/" and "*" allow every path.
        for any in ["/", "*"] {
            let p = policy(&format!("files = [{any:?}]\n"));
            let h = header(&[("/etc/cron.d", "x", "0644")], &[], &[]);
            assert!(p.check(&h, &[], None, false).is_empty());
        }
    }

    #[test]
    fn globs_end_in_a_star_or_are_exact() {
        let p = policy(
            "volumes = [\"ollama-data\", \"open-webui-*\"]\n\
             images = [\"ollama/ollama\", \"ghcr.io/open-webui/*\", \"busybox\"]\n\
             models = [\"registry.ollama.ai/library/*\", \"hf.co/bartowski/Tiny:Q4\"]\n\
             files = [\"*\"]\n",
        );
        let ok = header(
            &[("open-webui-data", "a", "0644"), ("ollama-data", "b", "0600")],
            &[
                "llama3:8b",
                "registry.ollama.ai/library/Llama3",
                "hf.co/bartowski/tiny:q4",
            ],
            &[
                "docker.io/ollama/ollama:0.5",
                "ollama/ollama@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "ghcr.io/open-webui/open-webui:main",
                "busybox:1.36",
            ],
        );
        let v = p.check(&ok, &[], None, false);
        assert!(v.is_empty(), "{v:#?}");
        let bad = header(
            &[("open-webui", "a", "0644"), ("ollama-data-2", "b", "0644")],
            &["other/llama3", "hf.co/bartowski/tiny:q8"],
            &[
                "ollama/ollama-x",
                "ghcr.io/open-webuix/x",
                "docker.io/library/busybox2",
            ],
        );
        let v = p.check(&bad, &[], None, false);
        assert_eq!(v.len(), 7, "{v:#?}");
        assert!(v.iter().any(|l| l.starts_with("file a in volume open-webui: not allowed by volumes = [\"ollama-data\", \"open-webui-*\"]")), "{v:#?}");
        assert!(
            v.iter().any(|l| l.starts_with(
                "model other/llama3 (normalised registry.ollama.ai/other/llama3:latest)"
            )),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|l| l
                    .starts_with("image ghcr.io/open-webuix/x (repository ghcr.io/open-webuix/x)")),
            "{v:#?}"
        );
        // The models went to the bundle's volume, which the policy allows.
        assert!(!v.iter().any(|l| l.contains("into volume")), "{v:#?}");

        for (bad, why) in [
            ("volumes = [\"a*b\"]", "may only end"),
            ("volumes = [\"-x\"]", "invalid volume name"),
            ("images = [\"busybox:1.36\"]", "leave out the tag"),
            ("images = [\"busybox@sha256:00\"]", "leave out the tag"),
            ("images = [\"Busybox\"]", "lowercase"),
            ("models = [\"a/b/c/d\"]", "invalid model name"),
            ("models = [\"*x*\"]", "may only end"),
        ] {
            let e = refused(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unlisted_category_allows_nothing() {
        let p = policy("files = [\"/opt\"]\n");
        let h = header(&[], &["tiny"], &["busybox"]);
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 3, "{v:#?}");
        for l in &v {
            assert!(
                l.contains("is not listed (a category a policy does not list allows nothing)"),
                "{l}"
            );
        }
        // An empty list is the same, and says what it is.
        let p = policy("images = []\n");
        let v = p.check(&header(&[], &[], &["busybox"]), &[], None, false);
        assert!(v[0].contains("images = []"), "{v:#?}");
    }

    #[test]
    fn signer_sections_narrow_the_top_level() {
        let text = "files = [\"/opt\", \"/etc/grafana\"]\nimages = [\"*\"]\nmax_mode = \"0755\"\n\
                    [signer.pack]\nfiles = [\"/opt/llm-stack\"]\nimages = [\"*\"]\nmax_mode = \"0750\"\n\
                    [signer.ops]\nfiles = [\"/etc\"]\n";
        let p = policy(text);
        let h = header(
            &[
                ("/opt/llm-stack", "a", "0755"),
                ("/etc/grafana", "b", "0644"),
                ("/etc/ssh", "c", "0644"),
            ],
            &[],
            &["busybox"],
        );
        // No section: the top level alone.
        let v = p.check(&h, &[], None, false);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].starts_with("file /etc/ssh/c"), "{v:#?}");
        // pack: only /opt/llm-stack, and 0750 at most (0644 has the others' read bit).
        let v = p.check(&h, &["pack".into()], None, false);
        assert_eq!(v.len(), 6, "{v:#?}");
        assert!(v.iter().any(|l| l.starts_with("file /etc/grafana/b (bundle target /etc/grafana, path b): not under any allowed prefix: [signer.pack] files = [\"/opt/llm-stack\"]")), "{v:#?}");
        assert!(
            v.iter()
                .any(|l| l.contains("mode 0755 has bits beyond [signer.pack] max_mode = \"0750\"")),
            "{v:#?}"
        );
        // ops: /etc narrowed by the top level's /etc/grafana; images not listed = none.
        let v = p.check(&h, &["ops".into()], None, false);
        assert!(v.iter().any(|l| l.starts_with("file /opt/llm-stack/a") && l.contains("[signer.ops] files")), "{v:#?}");
        assert!(
            v.iter()
                .any(|l| l.starts_with("file /etc/ssh/c") && !l.contains("[signer")),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|l| l.contains("[signer.ops] images is not listed")),
            "{v:#?}"
        );
        // --no-files: files are neither written nor checked.
        assert!(p.check(&h, &["pack".into()], None, true).is_empty());
        // The strictest max_age applies.
        let p = policy("max_age = \"30d\"\n[signer.pack]\nmax_age = \"1d\"\n");
        assert_eq!(p.max_age(&[]).unwrap().0, Duration::from_secs(30 * 86400));
        let (age, from) = p.max_age(&["pack".into()]).unwrap();
        assert_eq!(age, Duration::from_secs(86400));
        assert!(from.starts_with("[signer.pack] max_age"), "{from}");
    }

    #[test]
    fn typos_are_errors_not_silent_permissions() {
        assert!(refused("file = [\"/opt\"]\n").contains("unknown field `file`"));
        assert!(refused("[signer.pack]\nvolume = []\n").contains("unknown field `volume`"));
        let e = refused("[signer.pakc]\nfiles = []\n");
        assert!(
            e.contains("no trusted key is named pakc") && e.contains("pack"),
            "{e}"
        );
        assert!(refused("max_mode = \"0855\"\n").contains("max_mode"));
        assert!(refused("max_mode = 755\n").contains("max_mode"));
        assert!(refused("max_age = \"a month\"\n").contains("max_age"));
        assert_eq!(policy("max_mode = 0o750\n").top.max_mode, Some(0o750));
    }

    #[test]
    fn model_targets_and_overrides_are_checked() {
        let p = policy(
            "models = [\"*\"]\nmodels_dirs = [\"/usr/share/ollama/.ollama/models\"]\nvolumes = [\"ollama-data\"]\n",
        );
        let h = header(&[], &["tiny"], &[]);
        assert!(p.check(&h, &[], None, false).is_empty());
        let ok = Target::Path("/usr/share/ollama/.ollama/models".into());
        assert!(p.check(&h, &[], Some(&ok), false).is_empty());
        // models_dirs are exact: not a directory below one.
        let below = Target::Path("/usr/share/ollama/.ollama/models/blobs".into());
        let v = p.check(&h, &[], Some(&below), false);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].starts_with("model tiny into /usr/share/ollama/.ollama/models/blobs (the command line's target): not allowed by models_dirs"), "{v:#?}");
        let v = p.check(&h, &[], Some(&Target::Volume("other".into())), false);
        assert!(
            v[0].contains("into volume other (the command line's target): not allowed by volumes"),
            "{v:#?}"
        );
    }

    #[test]
    fn untrusted_names_are_escaped() {
        let p = policy("files = [\"/opt\"]\n");
        let h = header(&[("/srv", "a\u{1b}]0;x\u{7}", "0644")], &[], &[]);
        let v = p.check(&h, &[], None, false);
        assert!(v[0].contains("a\\u{1b}]0;x\\u{7}"), "{v:#?}");
        assert!(!v[0].chars().any(airlock_bundle::text::needs_escape));
    }
}
