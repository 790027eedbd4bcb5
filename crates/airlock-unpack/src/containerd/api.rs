//! The slice of containerd's gRPC API that `load --containerd` speaks, and the client that
//! speaks it over containerd's unix socket.
//!
//! The messages are declared here with prost's derive from containerd's published `.proto`
//! definitions (field numbers are the wire contract; fields we never send or read are left
//! out, which protobuf decoding tolerates). That keeps protoc out of the build, and the
//! client out of any TLS or internet-facing HTTP stack: tonic's plain HTTP/2 channel over a
//! unix stream, nothing else.

use std::collections::HashMap;
use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

/// `containerd.types.Descriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// `containerd.types.Mount`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub source: String,
    #[prost(string, tag = "3")]
    pub target: String,
    #[prost(string, repeated, tag = "4")]
    pub options: Vec<String>,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// `google.protobuf.FieldMask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub revision: String,
}

// --- leases.v1 ---

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseCreateRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(map = "string, string", tag = "3")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseDeleteRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(bool, tag = "2")]
    pub sync: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseResource {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddResourceRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<LeaseResource>,
}

// --- content.v1 ---

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContentInfo {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub size: i64,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InfoRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InfoResponse {
    #[prost(message, optional, tag = "1")]
    pub info: Option<ContentInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContentUpdateRequest {
    #[prost(message, optional, tag = "1")]
    pub info: Option<ContentInfo>,
    #[prost(message, optional, tag = "2")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// `WriteAction`: STAT = 0, WRITE = 1, COMMIT = 2.
pub const WRITE: i32 = 1;
pub const COMMIT: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteContentRequest {
    #[prost(int32, tag = "1")]
    pub action: i32,
    #[prost(string, tag = "2")]
    pub r#ref: String,
    #[prost(int64, tag = "3")]
    pub total: i64,
    #[prost(string, tag = "4")]
    pub expected: String,
    #[prost(int64, tag = "5")]
    pub offset: i64,
    #[prost(bytes = "bytes", tag = "6")]
    pub data: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteContentResponse {
    #[prost(int32, tag = "1")]
    pub action: i32,
    #[prost(int64, tag = "4")]
    pub offset: i64,
    #[prost(string, tag = "6")]
    pub digest: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AbortRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
}

// --- images.v1 ---

#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, string", tag = "2")]
    pub labels: HashMap<String, String>,
    #[prost(message, optional, tag = "3")]
    pub target: Option<Descriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageName {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `GetImageResponse`, `CreateImageResponse` and `UpdateImageResponse` alike.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
    #[prost(message, optional, tag = "2")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteImageRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bool, tag = "2")]
    pub sync: bool,
}

// --- snapshots.v1 ---

/// `PrepareSnapshotRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PrepareRequest {
    #[prost(string, tag = "1")]
    pub snapshotter: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub parent: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MountsResponse {
    #[prost(message, repeated, tag = "1")]
    pub mounts: Vec<Mount>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitSnapshotRequest {
    #[prost(string, tag = "1")]
    pub snapshotter: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub key: String,
}

/// `StatSnapshotRequest` and `RemoveSnapshotRequest` alike.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotKey {
    #[prost(string, tag = "1")]
    pub snapshotter: String,
    #[prost(string, tag = "2")]
    pub key: String,
}

// --- diff.v1 ---

#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyRequest {
    #[prost(message, optional, tag = "1")]
    pub diff: Option<Descriptor>,
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyResponse {
    #[prost(message, optional, tag = "1")]
    pub applied: Option<Descriptor>,
}

/// A connection to one containerd, in one namespace, optionally under a lease.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    pub namespace: String,
    lease: Option<String>,
}

impl Client {
    /// Connects to the socket now, so that a wrong path fails before anything else.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Client, String> {
        let path = socket.to_path_buf();
        // The URI is never resolved: every connection goes to the unix socket.
        let channel = Endpoint::from_static("http://containerd.sock")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(|e| match std::error::Error::source(&e) {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            })?;
        Ok(Client {
            channel,
            namespace: namespace.to_string(),
            lease: None,
        })
    }

    /// The same connection, with every request made under `lease` (so content and
    /// snapshots it creates are held by the lease until it is deleted).
    pub fn with_lease(&self, lease: &str) -> Client {
        Client {
            lease: Some(lease.to_string()),
            ..self.clone()
        }
    }

    /// The lease requests are made under, if any.
    pub fn lease_id(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// A request carrying the namespace and lease headers containerd reads.
    fn request<T>(&self, msg: T) -> Result<Request<T>, Status> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        let ns = MetadataValue::try_from(self.namespace.as_str())
            .map_err(|_| Status::invalid_argument("namespace is not a valid header value"))?;
        md.insert("containerd-namespace", ns);
        if let Some(l) = &self.lease {
            let l = MetadataValue::try_from(l.as_str())
                .map_err(|_| Status::invalid_argument("lease is not a valid header value"))?;
            md.insert("containerd-lease", l);
        }
        Ok(r)
    }

    /// One unary call to `path` (`/package.Service/Method`).
    pub async fn unary<Q, R>(&self, path: &'static str, msg: Q) -> Result<R, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let r = grpc
            .unary(self.request(msg)?, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(r.into_inner())
    }

    /// A streaming call: `input` goes up, the answers come back as a stream.
    pub async fn streaming<Q, R, S>(
        &self,
        path: &'static str,
        input: S,
    ) -> Result<tonic::Streaming<R>, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
        S: futures::Stream<Item = Q> + Send + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let r = grpc
            .streaming(self.request(input)?, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(r.into_inner())
    }

    /// A server-streaming call (one request, many answers).
    pub async fn server_streaming<Q, R>(
        &self,
        path: &'static str,
        msg: Q,
    ) -> Result<tonic::Streaming<R>, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let r = grpc
            .server_streaming(self.request(msg)?, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(r.into_inner())
    }
}

/// Whether a status means "there is no such thing" (content, image, snapshot).
pub fn not_found(s: &Status) -> bool {
    s.code() == Code::NotFound
}

/// Whether a status means "it is already there".
pub fn already_exists(s: &Status) -> bool {
    s.code() == Code::AlreadyExists
}

pub mod path {
    pub const VERSION: &str = "/containerd.services.version.v1.Version/Version";
    pub const LEASE_CREATE: &str = "/containerd.services.leases.v1.Leases/Create";
    pub const LEASE_DELETE: &str = "/containerd.services.leases.v1.Leases/Delete";
    pub const LEASE_ADD_RESOURCE: &str = "/containerd.services.leases.v1.Leases/AddResource";
    pub const CONTENT_INFO: &str = "/containerd.services.content.v1.Content/Info";
    pub const CONTENT_UPDATE: &str = "/containerd.services.content.v1.Content/Update";
    pub const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";
    pub const CONTENT_WRITE: &str = "/containerd.services.content.v1.Content/Write";
    pub const CONTENT_ABORT: &str = "/containerd.services.content.v1.Content/Abort";
    pub const IMAGE_GET: &str = "/containerd.services.images.v1.Images/Get";
    pub const IMAGE_CREATE: &str = "/containerd.services.images.v1.Images/Create";
    pub const IMAGE_UPDATE: &str = "/containerd.services.images.v1.Images/Update";
    pub const IMAGE_DELETE: &str = "/containerd.services.images.v1.Images/Delete";
    pub const SNAPSHOT_PREPARE: &str = "/containerd.services.snapshots.v1.Snapshots/Prepare";
    pub const SNAPSHOT_COMMIT: &str = "/containerd.services.snapshots.v1.Snapshots/Commit";
    pub const SNAPSHOT_STAT: &str = "/containerd.services.snapshots.v1.Snapshots/Stat";
    pub const SNAPSHOT_REMOVE: &str = "/containerd.services.snapshots.v1.Snapshots/Remove";
    pub const DIFF_APPLY: &str = "/containerd.services.diff.v1.Diff/Apply";
}
