//! Reading the packages out of an SBOM a bundle carries: SPDX JSON (`packages[]`: `name`,
//! `versionInfo`, the `externalRefs` of type `purl`), CycloneDX JSON (`components[]`: `name`,
//! `version`, `purl`), either one as the predicate of an in-toto statement (BuildKit's
//! attestation manifests, `cosign attest`), and such a statement inside a DSSE envelope
//! (cosign's `.att` layers). The format is recognised from the document itself, not from a
//! media type someone else chose: what the bytes are decides how they are read.
//!
//! Callers bound what they read ([`MAX_SBOM_SIZE`]); nothing here does I/O.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

/// The largest SBOM document read (per blob).
pub const MAX_SBOM_SIZE: u64 = 64 << 20;

/// How deep envelopes may nest (DSSE → statement → predicate, a predicate written as a JSON
/// string): more is not an SBOM.
const MAX_NESTING: u8 = 4;

/// The SBOM formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Spdx,
    Cyclonedx,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Spdx => "spdx",
            Format::Cyclonedx => "cyclonedx",
        }
    }
}

/// One package an SBOM lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

/// What an SBOM blob holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sbom {
    pub format: Format,
    /// How it was wrapped, outermost first: `dsse`, `in-toto <predicateType>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wrapped_in: Vec<String>,
    pub packages: Vec<Package>,
}

/// Reads an SBOM document: SPDX or CycloneDX JSON, bare or as an in-toto statement's
/// predicate, maybe in a DSSE envelope. An error says what the bytes are instead.
pub fn parse(bytes: &[u8]) -> Result<Sbom, String> {
    if bytes.len() as u64 > MAX_SBOM_SIZE {
        return Err(format!(
            "{} bytes, larger than the {MAX_SBOM_SIZE} an SBOM is read up to",
            bytes.len()
        ));
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let mut wrapped_in = Vec::new();
    let (format, packages) = read(doc, &mut wrapped_in, 0)?;
    Ok(Sbom {
        format,
        wrapped_in,
        packages,
    })
}

fn read(
    doc: Value,
    wrapped_in: &mut Vec<String>,
    depth: u8,
) -> Result<(Format, Vec<Package>), String> {
    if depth > MAX_NESTING {
        return Err("envelopes nested too deep".into());
    }
    // A predicate some tools write as a JSON string.
    if let Value::String(text) = &doc {
        let inner: Value =
            serde_json::from_str(text).map_err(|e| format!("a string that is not JSON: {e}"))?;
        return read(inner, wrapped_in, depth + 1);
    }
    let Value::Object(o) = &doc else {
        return Err("not a JSON object".into());
    };
    if o.contains_key("spdxVersion") {
        return Ok((Format::Spdx, spdx(&doc)));
    }
    if o.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        return Ok((Format::Cyclonedx, cyclonedx(&doc)));
    }
    if let (Some(payload), Some(_)) = (
        o.get("payload").and_then(Value::as_str),
        o.get("payloadType"),
    ) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|e| format!("a DSSE envelope whose payload is not base64: {e}"))?;
        let inner: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("a DSSE envelope whose payload is not JSON: {e}"))?;
        wrapped_in.push("dsse".into());
        return read(inner, wrapped_in, depth + 1);
    }
    if let (Some(kind), Some(predicate)) = (
        o.get("predicateType").and_then(Value::as_str),
        o.get("predicate"),
    ) {
        if !is_sbom_predicate(kind) {
            return Err(format!(
                "an in-toto statement of predicate type {}, not an SBOM",
                airlock_bundle::text::escape(kind)
            ));
        }
        wrapped_in.push(format!("in-toto {kind}"));
        // cosign's older SPDX predicates wrap the document as {"Data": "<text>"}.
        let predicate = match predicate.get("Data") {
            Some(data) if predicate.as_object().is_some_and(|p| p.len() == 1) => data.clone(),
            _ => predicate.clone(),
        };
        return read(predicate, wrapped_in, depth + 1);
    }
    Err("neither SPDX (spdxVersion), CycloneDX (bomFormat), an in-toto statement nor a DSSE envelope".into())
}

/// Whether an in-toto predicate type names an SBOM (SPDX or CycloneDX, any version).
pub fn is_sbom_predicate(kind: &str) -> bool {
    let k = kind.to_ascii_lowercase();
    k.starts_with("https://spdx.dev/document")
        || k.starts_with("https://cyclonedx.org/bom")
        || k.starts_with("http://spdx.dev/document")
}

/// Whether a media type or artifact type names an SBOM document.
pub fn is_sbom_media_type(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    t.contains("spdx") || t.contains("cyclonedx")
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn spdx(doc: &Value) -> Vec<Package> {
    let Some(packages) = doc.get("packages").and_then(Value::as_array) else {
        return Vec::new();
    };
    packages
        .iter()
        .filter_map(|p| {
            let purl = p
                .get("externalRefs")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("referenceType").and_then(Value::as_str) == Some("purl"))
                })
                .and_then(|r| text(r, "referenceLocator"));
            Some(Package {
                name: text(p, "name")?,
                version: text(p, "versionInfo"),
                purl,
            })
        })
        .collect()
}

fn cyclonedx(doc: &Value) -> Vec<Package> {
    let mut out = Vec::new();
    if let Some(components) = doc.get("components").and_then(Value::as_array) {
        components_into(components, &mut out, 0);
    }
    out
}

/// Components and their nested `components` (CycloneDX nests sub-components), depth-bound.
fn components_into(components: &[Value], out: &mut Vec<Package>, depth: u8) {
    if depth > 8 {
        return;
    }
    for c in components {
        if let Some(name) = text(c, "name") {
            out.push(Package {
                name,
                version: text(c, "version"),
                purl: text(c, "purl"),
            });
        }
        if let Some(inner) = c.get("components").and_then(Value::as_array) {
            components_into(inner, out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPDX: &str = r#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"img",
      "packages":[
        {"name":"busybox","versionInfo":"1.36.1-r2","SPDXID":"SPDXRef-a",
         "externalRefs":[{"referenceCategory":"SECURITY","referenceType":"cpe23Type","referenceLocator":"cpe:2.3:a"},
                         {"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:apk/alpine/busybox@1.36.1-r2"}]},
        {"name":"musl","SPDXID":"SPDXRef-b"}]}"#;

    const CDX: &str = r#"{"bomFormat":"CycloneDX","specVersion":"1.5",
      "components":[{"type":"library","name":"openssl","version":"3.1.4","purl":"pkg:apk/alpine/openssl@3.1.4",
        "components":[{"name":"libcrypto3","version":"3.1.4"}]}]}"#;

    fn spdx_packages() -> Vec<Package> {
        vec![
            Package {
                name: "busybox".into(),
                version: Some("1.36.1-r2".into()),
                purl: Some("pkg:apk/alpine/busybox@1.36.1-r2".into()),
            },
            Package {
                name: "musl".into(),
                version: None,
                purl: None,
            },
        ]
    }

    #[test]
    fn spdx_and_cyclonedx_documents() {
        let s = parse(SPDX.as_bytes()).unwrap();
        assert_eq!(s.format, Format::Spdx);
        assert!(s.wrapped_in.is_empty());
        assert_eq!(s.packages, spdx_packages());
        let c = parse(CDX.as_bytes()).unwrap();
        assert_eq!(c.format, Format::Cyclonedx);
        let names: Vec<_> = c.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openssl", "libcrypto3"]);
        assert_eq!(
            c.packages[0].purl.as_deref(),
            Some("pkg:apk/alpine/openssl@3.1.4")
        );
    }

    fn statement(kind: &str, predicate: &str) -> String {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"{kind}","subject":[{{"name":"x","digest":{{"sha256":"ab"}}}}],"predicate":{predicate}}}"#
        )
    }

    #[test]
    fn in_toto_and_dsse_wrappers() {
        let st = statement("https://spdx.dev/Document", SPDX);
        let s = parse(st.as_bytes()).unwrap();
        assert_eq!(s.packages, spdx_packages());
        assert_eq!(s.wrapped_in, ["in-toto https://spdx.dev/Document"]);
        let env = format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[]}}"#,
            base64::engine::general_purpose::STANDARD.encode(&st)
        );
        let s = parse(env.as_bytes()).unwrap();
        assert_eq!(s.packages, spdx_packages());
        assert_eq!(s.wrapped_in[0], "dsse");
        // cosign's {"Data": "<document text>"} predicate.
        let data = statement(
            "https://cyclonedx.org/bom",
            &serde_json::json!({ "Data": CDX }).to_string(),
        );
        assert_eq!(parse(data.as_bytes()).unwrap().format, Format::Cyclonedx);
    }

    #[test]
    fn other_documents_say_what_they_are() {
        let slsa = statement("https://slsa.dev/provenance/v0.2", "{}");
        let e = parse(slsa.as_bytes()).unwrap_err();
        assert!(e.contains("slsa.dev/provenance"), "{e}");
        assert!(parse(b"not json").unwrap_err().starts_with("not JSON"));
        assert!(parse(b"{}").unwrap_err().contains("neither SPDX"));
        assert!(parse(b"[1]").unwrap_err().contains("not a JSON object"));
        let mut deep = String::from("\"{}\"");
        for _ in 0..6 {
            deep = serde_json::to_string(&deep).unwrap();
        }
        assert!(parse(deep.as_bytes()).is_err());
        let bad = r#"{"payloadType":"x","payload":"!!!"}"#;
        assert!(parse(bad.as_bytes()).unwrap_err().contains("not base64"));
    }

    #[test]
    fn sbom_types_are_recognised() {
        assert!(is_sbom_predicate("https://spdx.dev/Document/v2.3"));
        assert!(is_sbom_predicate("https://cyclonedx.org/bom/v1.5"));
        assert!(!is_sbom_predicate("https://slsa.dev/provenance/v1"));
        assert!(is_sbom_media_type("application/spdx+json"));
        assert!(is_sbom_media_type("application/vnd.cyclonedx+json"));
        assert!(!is_sbom_media_type(
            "application/vnd.oci.image.config.v1+json"
        ));
    }
}
