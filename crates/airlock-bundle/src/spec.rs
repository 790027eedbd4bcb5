//! The bundle spec (`manifests/*.toml`): what a user wants carried across the gap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::oci::Platform;
use crate::reference::ImageRef;
use crate::BundleError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default = "default_platforms")]
    pub platforms: Vec<Platform>,
    #[serde(default, rename = "image")]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// Plain HTTP instead of HTTPS (loopback registries, labs).
    #[serde(default)]
    pub insecure: bool,
}

fn default_platforms() -> Vec<Platform> {
    vec!["linux/amd64".parse().expect("valid platform")]
}

impl Spec {
    pub fn from_toml(text: &str, origin: &Path) -> Result<Spec, BundleError> {
        let spec: Spec = toml::from_str(text)
            .map_err(|e| BundleError::Usage(format!("{}: {e}", origin.display())))?;
        spec.validate(origin)?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Spec, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
        Spec::from_toml(&text, path)
    }

    fn validate(&self, origin: &Path) -> Result<(), BundleError> {
        let bad = |m: String| BundleError::Usage(format!("{}: {m}", origin.display()));
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return Err(bad(format!(
                "name {:?} must be non-empty and use only letters, digits, '-', '_', '.'",
                self.name
            )));
        }
        if self.platforms.is_empty() {
            return Err(bad("platforms must list at least one os/arch".into()));
        }
        let mut seen = BTreeSet::new();
        for img in &self.images {
            let r = ImageRef::parse(&img.reference).map_err(|e| bad(e.to_string()))?;
            if !seen.insert(r.to_string()) {
                return Err(bad(format!("image {r} is listed twice")));
            }
        }
        Ok(())
    }

    /// The images, normalised, in spec order.
    pub fn image_refs(&self) -> Vec<ImageRef> {
        self.images
            .iter()
            .map(|i| ImageRef::parse(&i.reference).expect("validated at load"))
            .collect()
    }

    /// Registries to be spoken to over plain HTTP.
    pub fn insecure_registries(&self) -> BTreeSet<String> {
        self.registries
            .iter()
            .filter(|(_, r)| r.insecure)
            .map(|(host, _)| host.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_spec() {
        let s = Spec::from_toml(
            r#"
name = "demo"
platforms = ["linux/amd64", "linux/arm64"]
[[image]]
ref = "busybox:1.36"
[[image]]
ref = "127.0.0.1:5000/demo/hello:v1"
[registries."127.0.0.1:5000"]
insecure = true
"#,
            Path::new("demo.toml"),
        )
        .unwrap();
        assert_eq!(s.platforms.len(), 2);
        let refs: Vec<String> = s.image_refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/busybox:1.36",
                "127.0.0.1:5000/demo/hello:v1"
            ]
        );
        assert!(s.insecure_registries().contains("127.0.0.1:5000"));
        assert!(!s.insecure_registries().contains("docker.io"));
    }

    #[test]
    fn defaults_and_refusals() {
        let s = Spec::from_toml("name = \"x\"", Path::new("x.toml")).unwrap();
        assert_eq!(s.platforms[0].to_string(), "linux/amd64");
        for bad in [
            "name = \"\"",
            "name = \"a/b\"",
            "name = \"x\"\nplatforms = []",
            "name = \"x\"\n[[image]]\nref = \"Bad\"",
            "name = \"x\"\n[[image]]\nref = \"a\"\n[[image]]\nref = \"docker.io/library/a:latest\"",
            "name = \"x\"\nunknown = 1",
        ] {
            let err = Spec::from_toml(bad, Path::new("bad.toml")).unwrap_err();
            assert!(err.to_string().starts_with("bad.toml: "), "{err}");
        }
    }
}
