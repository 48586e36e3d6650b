//! Files in object storage: `s3://bucket/key` sources on Amazon S3 and S3-compatible stores
//! (MinIO, Ceph, R2), read through arrow-rs's `object_store`.
//!
//! An object is read as a local file is, through the same row readers: front to back in
//! ranges ([`read::ObjectReader`]) for CSV, TSV and JSON Lines (compressed or not), and by
//! ranges where the Parquet reader asks ([`read::ObjectChunks`]), so a projection reads only
//! its columns. Every range comes from the version opened (its ETag): an object replaced
//! while it is read is an error, never a mix of two files. A version is its bucket, key,
//! ETag and size ([`ObjectVersion`]); checkpoints, deliveries and arrivals key on that.
//!
//! Credentials and endpoint come from the standard AWS chain ([`credentials`]); the store's
//! answers become messages that name the bucket and key and the cause ([`ObjectError`]).

pub(crate) mod credentials;
pub(crate) mod read;

pub use crate::config::location::{Location, ObjectUrl};

use std::future::Future;
use std::sync::OnceLock;
use std::time::SystemTime;

use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

/// The key of `url` as the store client names it: as written, never re-encoded (a key may
/// hold `#`, `%`, spaces or brackets, and is asked for exactly so).
pub(crate) fn key_of(url: &ObjectUrl) -> Key {
    stored_as(&url.key)
}

/// A key (or prefix) as the store client names it. [`ObjectUrl::parse`] refused what the
/// client cannot take as it is (control characters, empty parts), so it is taken as written.
fn stored_as(key: &str) -> Key {
    Key::parse(key).unwrap_or_else(|_| Key::from(key))
}

/// One version of an object: what checkpoints, deliveries and arrivals key it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Where it is.
    pub url: ObjectUrl,
    /// Its size in bytes.
    pub size: u64,
    /// The store's tag of this content (S3 gives a new one whenever the object is written).
    pub etag: String,
    /// When it was written.
    pub modified: SystemTime,
}

impl ObjectVersion {
    fn of(url: ObjectUrl, meta: &object_store::ObjectMeta) -> ObjectVersion {
        ObjectVersion {
            url,
            size: meta.size,
            etag: meta.e_tag.clone().unwrap_or_default(),
            modified: SystemTime::from(meta.last_modified),
        }
    }
}

/// Why an object cannot be read: a sentence naming the bucket and key and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ObjectError(pub String);

/// A bucket, with a client that has its credentials.
pub(crate) struct Bucket {
    store: AmazonS3,
    /// Where the credentials came from, for messages.
    chain: credentials::Chain,
}

impl Bucket {
    /// A client for `url`'s bucket from the AWS chain.
    pub(crate) fn of(url: &ObjectUrl) -> Result<Bucket, ObjectError> {
        let chain = credentials::Chain::from_env();
        let store = chain
            .client(&url.bucket)
            .map_err(|why| ObjectError(format!("cannot reach s3://{}/: {why}", url.bucket)))?;
        Ok(Bucket { store, chain })
    }

    /// The version of the object at `url` now.
    pub(crate) fn head(&self, url: &ObjectUrl) -> Result<ObjectVersion, ObjectError> {
        let store = self.store.clone();
        let key = key_of(url);
        let meta = wait(async move { store.head(&key).await })?
            .map_err(|error| self.explain(url, error))?;
        Ok(ObjectVersion::of(url.clone(), &meta))
    }

    /// Hands `found` each object in the folder of `pattern` (not in folders below it). The
    /// listing is read a page (1000 keys) at a time; nothing but the current page is held
    /// here.
    pub(crate) fn in_folder(
        &self,
        pattern: &ObjectUrl,
        found: &mut dyn FnMut(ObjectVersion),
    ) -> Result<(), ObjectError> {
        let store = self.store.clone();
        let folder = pattern.folder().to_string();
        let (sender, pages) = std::sync::mpsc::sync_channel(2);
        io_runtime().spawn(async move {
            let prefix = (!folder.is_empty()).then(|| stored_as(&folder));
            let mut listing = store.list(prefix.as_ref()).chunks(1000);
            while let Some(page) = listing.next().await {
                if sender.send(page).is_err() {
                    return;
                }
            }
        });
        for page in pages {
            for meta in page {
                let meta = meta.map_err(|error| self.explain(pattern, error))?;
                let key = meta.location.as_ref();
                let in_folder = key
                    .strip_prefix(pattern.folder())
                    .map(|rest| rest.trim_start_matches('/'));
                if in_folder.is_some_and(|file| !file.contains('/')) {
                    found(ObjectVersion::of(pattern.with_key(key), &meta));
                }
            }
        }
        Ok(())
    }

    /// The store's error as a sentence about `url`.
    fn explain(&self, url: &ObjectUrl, error: object_store::Error) -> ObjectError {
        use object_store::Error;
        let cause = error.to_string();
        ObjectError(match error {
            Error::NotFound { .. } if self.bucket_missing(url) => format!(
                "no bucket `{}` (for `{url}`): check the name, and the region or endpoint (AWS_REGION, AWS_ENDPOINT_URL)",
                url.bucket
            ),
            Error::NotFound { .. } => format!(
                "no object `{}` in bucket `{}` (`{url}`)",
                url.key, url.bucket
            ),
            Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => format!(
                "access denied to `{url}` for {}: it needs s3:GetObject on the object and s3:ListBucket on the bucket ({})",
                self.chain.describe(),
                last_line(&cause)
            ),
            Error::Precondition { .. } => format!(
                "`{url}` was replaced while tapline read it; the next run reads the new version"
            ),
            _ if self.chain.found_none(&cause) => format!(
                "no credentials found for `{url}`: {}",
                self.chain.looked_at()
            ),
            _ => format!("cannot read `{url}`: {}", last_line(&cause)),
        })
    }

    /// Whether the bucket itself is missing (asked after a "not found").
    fn bucket_missing(&self, url: &ObjectUrl) -> bool {
        let store = self.store.clone();
        let probe = key_of(url);
        let listed = wait(async move { store.list_with_delimiter(Some(&probe)).await });
        matches!(listed, Ok(Err(error)) if error.to_string().contains("NoSuchBucket"))
    }
}

/// The version of the object at `url`.
pub fn head(url: &ObjectUrl) -> Result<ObjectVersion, ObjectError> {
    Bucket::of(url)?.head(url)
}

/// Hands `found` each object in the folder of `pattern` (its key's prefix up to the last
/// `/`), page by page; the caller matches the names.
pub fn in_folder(
    pattern: &ObjectUrl,
    found: &mut dyn FnMut(ObjectVersion),
) -> Result<(), ObjectError> {
    Bucket::of(pattern)?.in_folder(pattern, found)
}

/// The last line of an error chain's text (the store's own words), without credentials:
/// `object_store` never prints a secret, and tapline adds none.
fn last_line(cause: &str) -> &str {
    cause.lines().last().unwrap_or(cause).trim()
}

/// The runtime object requests run on: its own threads, so a reader on any thread (a
/// runtime's worker or a plain thread) can wait for a range without blocking a runtime.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tapline-object-io")
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot start the object reader's threads: {error}"))
    })
}

/// Runs `future` on the object runtime and waits for its answer.
fn wait<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, ObjectError> {
    waiting(future)
        .recv()
        .map_err(|_| ObjectError("the object reader stopped".to_string()))
}

/// Starts `future` on the object runtime; its answer arrives on the receiver.
fn waiting<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let (sender, answer) = std::sync::mpsc::sync_channel(1);
    io_runtime().spawn(async move {
        let _ = sender.send(future.await);
    });
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stores_errors_name_the_object_and_the_cause() {
        let url = ObjectUrl::parse("s3://drops/in/users.csv")
            .unwrap()
            .unwrap();
        // An endpoint nobody answers on: the "is the bucket there?" probe fails, quietly.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("drops")
            .with_endpoint(format!("http://{closed}"))
            .with_allow_http(true)
            .with_access_key_id("AKIA")
            .with_secret_access_key("secret")
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap();
        let bucket = Bucket {
            store,
            chain: credentials::Chain::from_env(),
        };
        let source =
            || -> Box<dyn std::error::Error + Send + Sync> { "403 Forbidden: AccessDenied".into() };
        let denied = bucket.explain(
            &url,
            object_store::Error::PermissionDenied {
                path: url.key.clone(),
                source: source(),
            },
        );
        assert!(
            denied
                .0
                .starts_with("access denied to `s3://drops/in/users.csv` for "),
            "{denied}"
        );
        assert!(denied.0.contains("s3:GetObject"), "{denied}");
        let replaced = bucket.explain(
            &url,
            object_store::Error::Precondition {
                path: url.key.clone(),
                source: source(),
            },
        );
        assert!(
            replaced.0.contains("was replaced while tapline read it"),
            "{replaced}"
        );
        let missing = bucket.explain(
            &url,
            object_store::Error::NotFound {
                path: url.key.clone(),
                source: source(),
            },
        );
        assert_eq!(
            missing.0,
            "no object `in/users.csv` in bucket `drops` (`s3://drops/in/users.csv`)"
        );
    }
}
