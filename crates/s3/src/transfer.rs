//! Uploads (single PUT or parallel multipart, resumable), downloads and tree collection, every
//! transfer verified by size and MD5/ETag.
//!
//! Resume: a multipart upload records its upload id and each completed part (number, ETag,
//! size) in a small JSON state file in [`UploadOptions::state_dir`]. Running the same upload
//! again after an interruption reuses the upload id, asks the server which parts it holds, and
//! sends only the rest. The state file is removed once the object is complete and verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use futures_util::StreamExt as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::client::unquote;
use crate::{Error, Offsite, Result};

/// The smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The most parts one object may have.
pub const MAX_PARTS: u64 = 10_000;
/// Metadata key recording the part size of a multipart upload (to verify the ETag on download).
pub const PART_SIZE_METADATA: &str = "costplus-part-size";

/// A progress report of a transfer; the library never draws, the caller does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// A transfer of `bytes` bytes begins.
    Started {
        /// The object key.
        key: String,
        /// Its size.
        bytes: u64,
    },
    /// `bytes` more bytes went over the wire.
    Transferred {
        /// The object key.
        key: String,
        /// Bytes in this step.
        bytes: u64,
    },
    /// `bytes` bytes were already on the server from an interrupted upload.
    Resumed {
        /// The object key.
        key: String,
        /// Bytes not sent again.
        bytes: u64,
    },
    /// The transfer is complete and verified.
    Finished {
        /// The object key.
        key: String,
    },
}

/// Receiver of [`Progress`] reports (called from several tasks).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of an upload.
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// Directory for resume state files (created 0700 when missing); `None`: no resume.
    pub state_dir: Option<PathBuf>,
    /// Progress receiver.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("state_dir", &self.state_dir)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// An upload that completed and was verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Uploaded {
    /// The object key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// The ETag on the server.
    pub etag: String,
    /// Parts (0: a single PUT).
    pub parts: u32,
    /// Parts that were already on the server from an interrupted upload.
    pub resumed_parts: u32,
    /// Whether the server's ETag matched our MD5 (false only when the service does not use
    /// MD5 ETags; the size always matched).
    pub checksum_verified: bool,
}

/// A download that completed and was verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Downloaded {
    /// The object key.
    pub key: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Whether the content matched the ETag (false when the ETag is not an MD5 we can
    /// recompute, for example a multipart upload by another tool).
    pub checksum_verified: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UploadState {
    version: u32,
    endpoint: String,
    bucket: String,
    key: String,
    source: PathBuf,
    size: u64,
    mtime_ns: i128,
    part_size: u64,
    upload_id: String,
    parts: BTreeMap<i32, PartDone>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PartDone {
    etag: String,
    md5: String,
    size: u64,
}

/// The part size used for a file of `size` bytes: at least `wanted` (and 5 MiB), doubled until
/// the file fits in 10,000 parts.
pub fn part_size_for(size: u64, wanted: u64) -> u64 {
    let mut ps = wanted.max(MIN_PART_SIZE);
    while size.div_ceil(ps) > MAX_PARTS {
        ps *= 2;
    }
    ps
}

/// The ETag S3 gives a multipart object: MD5 of the concatenated part MD5s, `-` part count.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}

/// Computes the ETag S3 would give some bytes: plain MD5, or the multipart form for a given
/// part size.
#[derive(Debug, Clone)]
pub struct EtagHasher {
    part_size: Option<u64>,
    whole: Md5,
    part: Md5,
    in_part: u64,
    parts: Vec<[u8; 16]>,
}

impl EtagHasher {
    /// A plain MD5 ETag (`part_size` `None`) or a multipart one.
    pub fn new(part_size: Option<u64>) -> Self {
        Self {
            part_size,
            whole: Md5::new(),
            part: Md5::new(),
            in_part: 0,
            parts: Vec::new(),
        }
    }
    /// Feed bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        let Some(ps) = self.part_size else {
            self.whole.update(data);
            return;
        };
        while !data.is_empty() {
            let room = (ps - self.in_part) as usize;
            let take = room.min(data.len());
            self.part.update(&data[..take]);
            self.in_part += take as u64;
            data = &data[take..];
            if self.in_part == ps {
                let done = std::mem::replace(&mut self.part, Md5::new());
                self.parts.push(done.finalize().into());
                self.in_part = 0;
            }
        }
    }
    /// The ETag.
    pub fn finish(mut self) -> String {
        match self.part_size {
            None => hex::encode(self.whole.finalize()),
            Some(_) => {
                if self.in_part > 0 || self.parts.is_empty() {
                    self.parts.push(self.part.finalize().into());
                }
                multipart_etag(&self.parts)
            }
        }
    }
}

fn is_plain_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Io {
        path: PathBuf::from("<worker>"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Read `len` bytes at `offset` and hash them (on a blocking thread).
async fn read_part(path: &Path, offset: u64, len: u64) -> Result<(bytes::Bytes, [u8; 16])> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(io_err(&path))?;
        let md5: [u8; 16] = Md5::digest(&buf).into();
        Ok((bytes::Bytes::from(buf), md5))
    })
    .await
    .map_err(join_err)?
}

fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt as _;
    i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
}

/// Files to upload for `sources`: a file maps to `prefix` + its name, a directory to `prefix`
/// + its name + the relative paths below it (`/` separated), sorted by key.
pub fn collect_files(sources: &[PathBuf], prefix: &str) -> Result<Vec<(PathBuf, String)>> {
    fn walk(dir: &Path, key: &str, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().map_err(io_err(&path))?;
            if ft.is_dir() {
                walk(&path, &format!("{key}{name}/"), out)?;
            } else if std::fs::metadata(&path).map_err(io_err(&path))?.is_file() {
                out.push((path, format!("{key}{name}")));
            }
        }
        Ok(())
    }
    let prefix = crate::config::key_prefix(prefix);
    let mut out = Vec::new();
    for src in sources {
        let md = std::fs::metadata(src).map_err(io_err(src))?;
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if md.is_dir() {
            let key = if name.is_empty() {
                prefix.clone()
            } else {
                format!("{prefix}{name}/")
            };
            walk(src, &key, &mut out)?;
        } else {
            out.push((src.clone(), format!("{prefix}{name}")));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

impl Offsite {
    fn report(opts: &UploadOptions, p: Progress) {
        if let Some(f) = &opts.progress {
            f(&p);
        }
    }

    /// Upload one file to `key`, verify size and checksum on the server, and return what is
    /// there. Large files go in parallel parts and resume after an interruption when
    /// [`UploadOptions::state_dir`] is set.
    pub async fn upload_file(
        &self,
        path: &Path,
        key: &str,
        opts: &UploadOptions,
    ) -> Result<Uploaded> {
        let md = tokio::fs::metadata(path).await.map_err(io_err(path))?;
        if !md.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        let size = md.len();
        Self::report(
            opts,
            Progress::Started {
                key: key.into(),
                bytes: size,
            },
        );
        let done = if size < self.opts.multipart_threshold.max(MIN_PART_SIZE) {
            self.upload_single(path, key, size, opts).await?
        } else {
            self.upload_multipart(path, key, &md, opts).await?
        };
        Self::report(opts, Progress::Finished { key: key.into() });
        Ok(done)
    }

    /// Upload many files with the client's concurrency; one result per file, in input order.
    pub async fn upload_many(
        &self,
        files: &[(PathBuf, String)],
        opts: &UploadOptions,
    ) -> Vec<(String, Result<Uploaded>)> {
        let mut results: Vec<(usize, String, Result<Uploaded>)> =
            futures_util::stream::iter(files.iter().enumerate())
                .map(|(i, (path, key))| async move {
                    (i, key.clone(), self.upload_file(path, key, opts).await)
                })
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;
        results.sort_by_key(|r| r.0);
        results.into_iter().map(|(_, k, r)| (k, r)).collect()
    }

    async fn upload_single(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        opts: &UploadOptions,
    ) -> Result<Uploaded> {
        let _permit = self.permits.acquire().await.map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (body, md5) = read_part(path, 0, size).await?;
        let md5_hex = hex::encode(md5);
        let out = self
            .put_object_md5(key, size, md5, ByteStream::from(body))
            .await?;
        Self::report(
            opts,
            Progress::Transferred {
                key: key.into(),
                bytes: size,
            },
        );
        let put_etag = out.e_tag().map(unquote).unwrap_or_default();
        self.verify_uploaded(key, size, &md5_hex, &put_etag, 0, 0)
            .await
    }

    async fn verify_uploaded(
        &self,
        key: &str,
        size: u64,
        expected_etag: &str,
        answered_etag: &str,
        parts: u32,
        resumed_parts: u32,
    ) -> Result<Uploaded> {
        let integrity = |message: String| Error::Integrity {
            key: key.into(),
            message,
        };
        let head = self
            .head(key)
            .await?
            .ok_or_else(|| integrity("the object is not there after the upload".into()))?;
        if head.size != size {
            return Err(integrity(format!(
                "{} bytes on the server, {size} sent",
                head.size
            )));
        }
        let etag = head.etag.clone().unwrap_or_default();
        let md5_like = if parts == 0 {
            is_plain_md5(&etag)
        } else {
            etag.contains('-')
        };
        let checksum_verified = if md5_like {
            if etag != expected_etag || (!answered_etag.is_empty() && answered_etag != etag) {
                return Err(integrity(format!(
                    "ETag {etag} on the server, {expected_etag} computed from the file"
                )));
            }
            true
        } else {
            tracing::warn!(
                key,
                etag,
                "the service's ETag is not an MD5: size checked only"
            );
            false
        };
        Ok(Uploaded {
            key: key.into(),
            size,
            etag,
            parts,
            resumed_parts,
            checksum_verified,
        })
    }

    fn state_path(&self, dir: &Path, path: &Path, key: &str) -> PathBuf {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut h = Sha256::new();
        for part in [
            self.endpoint.as_bytes(),
            self.bucket.as_bytes(),
            key.as_bytes(),
            abs.as_os_str().as_encoded_bytes(),
        ] {
            h.update(part);
            h.update([0]);
        }
        dir.join(format!("{}.json", &hex::encode(h.finalize())[..32]))
    }

    async fn load_state(&self, file: &Path, fresh: &UploadState) -> Option<UploadState> {
        let text = tokio::fs::read(file).await.ok()?;
        let old: UploadState = serde_json::from_slice(&text).ok()?;
        let same = old.version == 1
            && old.endpoint == fresh.endpoint
            && old.bucket == fresh.bucket
            && old.key == fresh.key
            && old.size == fresh.size
            && old.mtime_ns == fresh.mtime_ns
            && old.part_size == fresh.part_size;
        if !same {
            tracing::info!(state = %file.display(), "the file changed since the interrupted upload: starting over");
            return None;
        }
        // Which parts does the server really hold?
        let listed = self
            .sdk
            .list_parts()
            .bucket(&self.bucket)
            .key(&old.key)
            .upload_id(&old.upload_id)
            .send()
            .await;
        match listed {
            Ok(l) => {
                let on_server: BTreeMap<i32, u64> = l
                    .parts()
                    .iter()
                    .filter_map(|p| Some((p.part_number()?, p.size()?.max(0) as u64)))
                    .collect();
                let mut kept = old.clone();
                kept.parts
                    .retain(|n, p| on_server.get(n).is_some_and(|s| *s == p.size));
                Some(kept)
            }
            Err(e) => {
                tracing::info!(
                    "the interrupted upload {} is gone ({}): starting over",
                    old.upload_id,
                    Error::from_sdk("ListParts", &self.ctx(Some(&old.key)), e)
                );
                None
            }
        }
    }

    async fn save_state(file: &Path, state: &UploadState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::Parse {
            what: file.display().to_string(),
            message: e.to_string(),
        })?;
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            costplus_fs::write_atomic(&file, &bytes, &costplus_fs::WriteOptions::private())
        })
        .await
        .map_err(join_err)??;
        Ok(())
    }

    async fn upload_multipart(
        &self,
        path: &Path,
        key: &str,
        md: &std::fs::Metadata,
        opts: &UploadOptions,
    ) -> Result<Uploaded> {
        let size = md.len();
        let part_size = part_size_for(size, self.opts.part_size);
        let nparts = size.div_ceil(part_size) as i32;
        let mut state = UploadState {
            version: 1,
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: key.into(),
            source: path.to_path_buf(),
            size,
            mtime_ns: mtime_ns(md),
            part_size,
            upload_id: String::new(),
            parts: BTreeMap::new(),
        };
        let state_file = match &opts.state_dir {
            Some(dir) => {
                if !dir.exists() {
                    costplus_fs::create_dir_with_mode(dir, 0o700)?;
                }
                Some(self.state_path(dir, path, key))
            }
            None => None,
        };
        let resumed = match &state_file {
            Some(f) => self.load_state(f, &state).await,
            None => None,
        };
        let resumed_parts;
        match resumed {
            Some(old) => {
                resumed_parts = old.parts.len() as u32;
                state = old;
                let bytes: u64 = state.parts.values().map(|p| p.size).sum();
                tracing::info!(
                    key,
                    parts = resumed_parts,
                    bytes,
                    "resuming an interrupted upload"
                );
                Self::report(
                    opts,
                    Progress::Resumed {
                        key: key.into(),
                        bytes,
                    },
                );
            }
            None => {
                resumed_parts = 0;
                let created = self
                    .sdk
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .metadata(PART_SIZE_METADATA, part_size.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        Error::from_sdk("CreateMultipartUpload", &self.ctx(Some(key)), e)
                    })?;
                state.upload_id = created.upload_id().unwrap_or_default().to_string();
                if let Some(f) = &state_file {
                    Self::save_state(f, &state).await?;
                }
            }
        }
        let todo: Vec<i32> = (1..=nparts)
            .filter(|n| !state.parts.contains_key(n))
            .collect();
        let upload_id = state.upload_id.clone();
        let shared = tokio::sync::Mutex::new(state);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let concurrency = self.opts.concurrency.max(1);
        let mut stream = futures_util::stream::iter(todo)
            .map(|n| {
                let upload_id = &upload_id;
                let shared = &shared;
                let state_file = &state_file;
                let failed = &failed;
                async move {
                    let _permit = self.permits.acquire().await.map_err(|e| Error::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                    if failed.load(std::sync::atomic::Ordering::SeqCst) {
                        return Ok(());
                    }
                    let offset = (n as u64 - 1) * part_size;
                    let len = part_size.min(size - offset);
                    let (body, md5) = read_part(path, offset, len).await?;
                    let md5_hex = hex::encode(md5);
                    let out = self
                        .sdk
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(n)
                        .content_length(len as i64)
                        .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
                        .body(ByteStream::from(body))
                        // Over HTTPS with Content-MD5 the payload need not be hashed into the signature too
                        // (UNSIGNED-PAYLOAD): one SHA-256 pass less on both ends.
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| Error::from_sdk("UploadPart", &self.ctx(Some(key)), e))?;
                    let etag = out.e_tag().map(unquote).unwrap_or_default();
                    if is_plain_md5(&etag) && etag != md5_hex {
                        return Err(Error::Integrity {
                            key: key.into(),
                            message: format!("part {n}: ETag {etag}, MD5 sent {md5_hex}"),
                        });
                    }
                    {
                        // Recorded durably before it is reported: a resume never resends it.
                        let mut st = shared.lock().await;
                        st.parts.insert(
                            n,
                            PartDone {
                                etag,
                                md5: md5_hex,
                                size: len,
                            },
                        );
                        if let Some(f) = state_file {
                            Self::save_state(f, &st).await?;
                        }
                    }
                    Self::report(
                        opts,
                        Progress::Transferred {
                            key: key.into(),
                            bytes: len,
                        },
                    );
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(concurrency);
        // On the first error, start no new part but let the parts in flight finish and be
        // recorded, so that a resume sends as little as possible.
        let mut first_error = None;
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
                first_error.get_or_insert(e);
            }
        }
        drop(stream);
        if let Some(e) = first_error {
            return Err(e);
        }
        let state = shared.into_inner();
        let mut completed = Vec::with_capacity(state.parts.len());
        let mut md5s = Vec::with_capacity(state.parts.len());
        for (n, p) in &state.parts {
            completed.push(
                CompletedPart::builder()
                    .part_number(*n)
                    .e_tag(format!("\"{}\"", p.etag))
                    .build(),
            );
            let mut m = [0u8; 16];
            hex::decode_to_slice(&p.md5, &mut m).map_err(|e| Error::Parse {
                what: "upload state".into(),
                message: e.to_string(),
            })?;
            md5s.push(m);
        }
        let out = self
            .sdk
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&state.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Error::from_sdk("CompleteMultipartUpload", &self.ctx(Some(key)), e))?;
        let answered = out.e_tag().map(unquote).unwrap_or_default();
        let done = self
            .verify_uploaded(
                key,
                size,
                &multipart_etag(&md5s),
                &answered,
                nparts as u32,
                resumed_parts,
            )
            .await?;
        if let Some(f) = &state_file {
            let _ = tokio::fs::remove_file(f).await;
        }
        Ok(done)
    }

    /// Download `key` to `dest` (written to a temporary file beside it, then renamed), checking
    /// the size and, when possible, the ETag.
    pub async fn download_file(
        &self,
        key: &str,
        dest: &Path,
        progress: Option<&ProgressFn>,
    ) -> Result<Downloaded> {
        use tokio::io::AsyncWriteExt as _;
        let report = |p: Progress| {
            if let Some(f) = progress {
                f(&p);
            }
        };
        let out = self
            .sdk
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("GetObject", &self.ctx(Some(key)), e))?;
        let expected = out.content_length().unwrap_or(-1);
        let etag = out.e_tag().map(unquote).unwrap_or_default();
        let part_size = out
            .metadata()
            .and_then(|m| m.get(PART_SIZE_METADATA))
            .and_then(|v| v.parse::<u64>().ok());
        report(Progress::Started {
            key: key.into(),
            bytes: expected.max(0) as u64,
        });
        let mut hasher = if is_plain_md5(&etag) {
            Some(EtagHasher::new(None))
        } else if etag.contains('-') && part_size.is_some() {
            Some(EtagHasher::new(part_size))
        } else {
            None
        };
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.part",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?,
        );
        let mut body = out.body;
        let mut size = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: format!("reading {key}: {e}"),
                })?;
                if let Some(h) = &mut hasher {
                    h.update(&chunk);
                }
                file.write_all(&chunk).await.map_err(io_err(&tmp))?;
                size += chunk.len() as u64;
                report(Progress::Transferred {
                    key: key.into(),
                    bytes: chunk.len() as u64,
                });
            }
            file.flush().await.map_err(io_err(&tmp))?;
            file.get_ref().sync_all().await.map_err(io_err(&tmp))?;
            if expected >= 0 && size != expected as u64 {
                return Err(Error::Integrity {
                    key: key.into(),
                    message: format!("received {size} bytes, the server announced {expected}"),
                });
            }
            if let Some(h) = hasher.take() {
                let got = h.finish();
                if got != etag {
                    return Err(Error::Integrity {
                        key: key.into(),
                        message: format!("content hashes to ETag {got}, the server has {etag}"),
                    });
                }
                hasher = Some(EtagHasher::new(None)); // marks "verified"
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest).await.map_err(io_err(dest))?;
        report(Progress::Finished { key: key.into() });
        Ok(Downloaded {
            key: key.into(),
            path: dest.to_path_buf(),
            size,
            checksum_verified: hasher.is_some(),
        })
    }

    /// One PutObject with Content-MD5. Over HTTPS with Content-MD5 the payload need not be
    /// hashed into the signature too (UNSIGNED-PAYLOAD): one SHA-256 pass less on both ends.
    async fn put_object_md5(
        &self,
        key: &str,
        size: u64,
        md5: [u8; 16],
        body: ByteStream,
    ) -> Result<aws_sdk_s3::operation::put_object::PutObjectOutput> {
        self.sdk
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| Error::from_sdk("PutObject", &self.ctx(Some(key)), e))
    }

    /// Put bytes from memory (small artefacts), verified like [`Offsite::upload_file`].
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<Uploaded> {
        let size = data.len() as u64;
        let md5: [u8; 16] = Md5::digest(&data).into();
        let out = self
            .put_object_md5(key, size, md5, ByteStream::from(data))
            .await?;
        let answered = out.e_tag().map(unquote).unwrap_or_default();
        self.verify_uploaded(key, size, &hex::encode(md5), &answered, 0, 0)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        // 1 GiB at 16 MiB: 64 parts, the wanted size is kept.
        assert_eq!(part_size_for(1 << 30, 16 << 20), 16 << 20);
        // Below the S3 minimum: raised to 5 MiB.
        assert_eq!(part_size_for(100 << 20, 1 << 20), 5 << 20);
        // 1 TiB at 16 MiB would be 65,536 parts; 128 MiB gives 8,192 <= 10,000.
        assert_eq!(part_size_for(1 << 40, 16 << 20), 128 << 20);
    }

    #[test]
    fn etags() {
        // MD5("") and MD5("abc"), well-known values.
        let mut h = EtagHasher::new(None);
        h.update(b"");
        assert_eq!(h.finish(), "d41d8cd98f00b204e9800998ecf8427e");
        let mut h = EtagHasher::new(None);
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), "900150983cd24fb0d6963f7d28e17f72");
        // Multipart of "abcdef" in parts of 4: md5(md5("abcd") ++ md5("ef"))-2, fed unevenly.
        let mut h = EtagHasher::new(Some(4));
        h.update(b"a");
        h.update(b"bcde");
        h.update(b"f");
        let expect = multipart_etag(&[Md5::digest(b"abcd").into(), Md5::digest(b"ef").into()]);
        assert_eq!(h.finish(), expect);
        assert!(expect.ends_with("-2"));
        // Exactly one full part still counts as one part.
        let mut h = EtagHasher::new(Some(3));
        h.update(b"abc");
        assert_eq!(h.finish(), multipart_etag(&[Md5::digest(b"abc").into()]));
    }

    #[test]
    fn collects_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x"), b"1").unwrap();
        std::fs::write(root.join("y"), b"2").unwrap();
        std::fs::write(dir.path().join("single"), b"3").unwrap();
        let got = collect_files(&[root.clone(), dir.path().join("single")], "/offsite/").unwrap();
        let keys: Vec<&str> = got.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["offsite/single", "offsite/tree/a/b/x", "offsite/tree/y"]
        );
        assert!(collect_files(&[dir.path().join("missing")], "").is_err());
    }
}
