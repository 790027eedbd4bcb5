//! containerd before anything is written: the connection under the load's lease ([`Ctd`]),
//! and the plan of which blobs it lacks ([`plan`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use airlock_bundle::header::{Header, ImageRecord};
use airlock_bundle::text::escape;
use airlock_bundle::Digest;
use tonic::Status;

use super::api::{self, path, Client};
use super::{ctd_err, Options};
use crate::UnpackError;

/// How long the lease holds content if we die before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// containerd as this load uses it: the connection, under the load's lease.
pub(super) struct Ctd {
    /// Every request made under the lease.
    pub(super) leased: Client,
    pub(super) lease: String,
    pub(super) description: String,
}

impl Ctd {
    pub(super) async fn drop_lease(&self) -> Result<(), Status> {
        self.leased
            .unary::<_, api::Empty>(
                path::LEASE_DELETE,
                api::LeaseDeleteRequest {
                    id: self.lease.clone(),
                    sync: false,
                },
            )
            .await
            .map(drop)
    }
}

/// Connects, says which containerd this is, and takes the load's lease.
pub(super) async fn connect(opts: &Options) -> Result<Ctd, UnpackError> {
    let at = opts.socket.display().to_string();
    let client = Client::connect(&opts.socket, &opts.namespace)
        .await
        .map_err(|said| UnpackError::ContainerdConnect {
            socket: at.clone(),
            said,
        })?;
    let version: api::VersionResponse = client
        .unary(path::VERSION, api::Empty {})
        .await
        .map_err(|s| ctd_err("report its version at", &at, &s))?;
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let lease = format!("airlock-load-{}-{nanos}", std::process::id());
    let expire = humantime::format_rfc3339_seconds(now + LEASE_EXPIRY).to_string();
    client
        .unary::<_, api::Empty>(
            path::LEASE_CREATE,
            api::LeaseCreateRequest {
                id: lease.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
            },
        )
        .await
        .map_err(|s| ctd_err("create lease", &lease, &s))?;
    Ok(Ctd {
        leased: client.with_lease(&lease),
        description: format!(
            "containerd {} at {at}, namespace {}, {}",
            escape(&version.version),
            opts.namespace,
            if opts.unpack {
                format!("unpacked into {}", opts.snapshotter)
            } else {
                "not unpacked".to_string()
            }
        ),
        lease,
    })
}

pub(super) struct Plan {
    pub(super) write: HashSet<Digest>,
    pub(super) already: HashSet<String>,
    pub(super) missing: Vec<String>,
}

/// Which blobs of `selected` containerd lacks (those present join the lease, so the garbage
/// collector cannot take them mid-load), and which a delta bundle left out that it lacks too.
pub(super) async fn plan(
    c: &Ctd,
    h: &Header,
    selected: &[ImageRecord],
) -> Result<Plan, UnpackError> {
    let mut p = Plan {
        write: HashSet::new(),
        already: HashSet::new(),
        missing: Vec::new(),
    };
    let mut seen = HashSet::new();
    for i in selected {
        let blobs = [i.manifest, i.config]
            .into_iter()
            .chain(i.layers.iter().copied());
        for d in blobs {
            if !seen.insert(d) {
                continue;
            }
            if present(&c.leased, &d).await? {
                c.leased
                    .unary::<_, api::Empty>(
                        path::LEASE_ADD_RESOURCE,
                        api::AddResourceRequest {
                            id: c.lease.clone(),
                            resource: Some(api::LeaseResource {
                                id: d.to_string(),
                                r#type: "content".into(),
                            }),
                        },
                    )
                    .await
                    .map_err(|s| ctd_err("add to the load's lease", &d.to_string(), &s))?;
            } else if h.entry(&d.blob_path()).is_some() {
                p.write.insert(d);
            } else {
                let size = h
                    .expected_present
                    .iter()
                    .find(|e| e.digest == d)
                    .map(|e| format!("{} bytes, ", e.size))
                    .unwrap_or_default();
                p.missing.push(format!(
                    "blob {d} ({size}of {}), in containerd's content store (namespace {})",
                    i.reference, c.leased.namespace
                ));
            }
        }
        let existing = image(&c.leased, &i.reference).await?;
        if existing.and_then(|e| e.target).map(|t| t.digest) == Some(i.manifest.to_string()) {
            p.already.insert(i.reference.clone());
        }
    }
    Ok(p)
}

/// Whether the content store has the blob `d`.
async fn present(c: &Client, d: &Digest) -> Result<bool, UnpackError> {
    match c
        .unary::<_, api::InfoResponse>(
            path::CONTENT_INFO,
            api::InfoRequest {
                digest: d.to_string(),
            },
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if api::not_found(&s) => Ok(false),
        Err(s) => Err(ctd_err("look up", &d.to_string(), &s)),
    }
}

/// The image named `name`, if there is one.
pub(super) async fn image(c: &Client, name: &str) -> Result<Option<api::Image>, UnpackError> {
    match c
        .unary::<_, api::ImageResponse>(path::IMAGE_GET, api::ImageName { name: name.into() })
        .await
    {
        Ok(r) => Ok(r.image),
        Err(s) if api::not_found(&s) => Ok(None),
        Err(s) => Err(ctd_err("look up image", &escape(name), &s)),
    }
}
