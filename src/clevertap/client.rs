//! An HTTP client for one CleverTap account: sends a body, returns the answer or a [`Failure`].

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::wire::{
    ACCOUNT_HEADER, CUSTOM_LIST_COMPLETED_PATH, CustomListAnswer, CustomListCompleted, Endpoint,
    ErrorBody, PASSCODE_HEADER, PresignedUrl, UploadResponse,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies are quoted in messages up to this many characters.
const MAX_QUOTED_BODY: usize = 300;

/// The account a client sends to, as a connection names it.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    /// The connection's name, for messages.
    pub connection: &'a str,
    /// The Project ID.
    pub account_id: &'a str,
    /// The passcode, sent in one header marked sensitive and nowhere else.
    pub passcode: &'a str,
    /// The API base URL without a trailing slash.
    pub base_url: &'a str,
    /// How long one request may take.
    pub request_timeout: Duration,
}

/// Why a client could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A credential holds characters an HTTP header cannot carry.
    #[error("the {what} of connection `{connection}` has characters a header cannot carry")]
    Unsendable {
        /// The connection.
        connection: String,
        /// Which credential.
        what: &'static str,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// Why a request did not get a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (refused, or no answer to it): retried for a
    /// while, since a host may come back.
    #[error("cannot connect to {host}: {cause}")]
    Connect {
        /// The host it was made to.
        host: String,
        /// Why it failed, as the operating system or TLS says.
        cause: String,
    },
    /// No request to this host can succeed as things are: its name does not exist, or
    /// its TLS certificate cannot be trusted. Not retried.
    #[error("cannot reach {host}: {cause}")]
    Unreachable {
        /// The host.
        host: String,
        /// What is wrong, and where to fix it.
        cause: String,
    },
    /// The connection broke before the whole answer arrived.
    #[error("the connection broke: {0}")]
    Interrupted(String),
    /// CleverTap answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header, when present.
        retry_after: Option<Duration>,
        /// CleverTap's `error` text, or the start of the body.
        message: String,
    },
    /// A success status with a body that is not what CleverTap sends.
    #[error("unexpected answer: {0}")]
    InvalidResponse(String),
    /// CleverTap cannot do it now and says to come back later (a custom list's URL).
    #[error("CleverTap is not ready: {0}")]
    NotReady(String),
    /// The custom list's spool file could not be read back.
    #[error("the spooled list cannot be read: {0}")]
    Spool(String),
}

/// A file as a streamed body, read on a blocking thread in large pieces (tokio's own file
/// reads hop to a thread for every 4 KiB, which made a 100 MB list take seconds).
fn file_body(file: std::fs::File) -> reqwest::Body {
    const PIECE: usize = 256 * 1024;
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        loop {
            let mut piece = vec![0; PIECE];
            let read = match file.read(&mut piece) {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            };
            piece.truncate(read);
            if sender.blocking_send(Ok(Bytes::from(piece))).is_err() {
                return;
            }
        }
    });
    reqwest::Body::wrap_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|piece| (piece, receiver)) },
    ))
}

/// CleverTap's plain-text answer when it has no pre-signed URL to give now.
fn is_url_not_generated(text: &str) -> bool {
    text.to_ascii_lowercase().contains("url not generated")
}

/// A client for one account. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For pre-signed URLs: no CleverTap headers (the passcode must not go to the storage
    /// host) and no total timeout (a custom list may be gigabytes).
    plain: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl Client {
    /// A client for an account. The passcode goes into a header marked sensitive.
    pub fn new(account: &Account<'_>) -> Result<Self, ClientError> {
        // reqwest is built without a bundled crypto provider; install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        let unsendable = |what: &'static str| ClientError::Unsendable {
            connection: account.connection.to_string(),
            what,
        };
        headers.insert(
            ACCOUNT_HEADER,
            HeaderValue::from_str(account.account_id).map_err(|_| unsendable("account ID"))?,
        );
        let mut passcode =
            HeaderValue::from_str(account.passcode).map_err(|_| unsendable("passcode"))?;
        passcode.set_sensitive(true);
        headers.insert(PASSCODE_HEADER, passcode);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("tapline/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(account.request_timeout)
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|error| ClientError::Setup(error.to_string()))?;
        let plain = reqwest::Client::builder()
            .user_agent(concat!("tapline/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| ClientError::Setup(error.to_string()))?;
        Ok(Client {
            http,
            plain,
            base_url: account.base_url.to_string(),
            timeout: account.request_timeout,
        })
    }

    /// Sends one body to a write API and reads CleverTap's answer.
    pub async fn send(&self, endpoint: &Endpoint, body: Bytes) -> Result<UploadResponse, Failure> {
        let bytes = self.post(endpoint.path, body).await?;
        serde_json::from_slice(&bytes).map_err(|_| Failure::InvalidResponse(quote(&bytes)))
    }

    /// Asks for a pre-signed URL to upload a custom list to (step 1 of 3). CleverTap's
    /// documented failure of this step is a plain-text body ("URL not generated, Please come
    /// back later"), whatever its status: [`Failure::NotReady`], which is retried.
    pub async fn presigned_url(&self) -> Result<PresignedUrl, Failure> {
        let bytes = match self
            .post(Endpoint::CUSTOM_LIST.path, Bytes::from_static(b"{}"))
            .await
        {
            Ok(bytes) => bytes,
            Err(Failure::Status { message, .. }) if is_url_not_generated(&message) => {
                return Err(Failure::NotReady(message));
            }
            Err(failure) => return Err(failure),
        };
        serde_json::from_slice(&bytes).map_err(|_| {
            let text = quote(&bytes);
            if is_url_not_generated(&text) {
                Failure::NotReady(text)
            } else {
                Failure::InvalidResponse(text)
            }
        })
    }

    /// Uploads a custom list's spooled CSV to its pre-signed URL (step 2 of 3), as S3 takes
    /// it: the exact `Content-Length` (never chunked), streamed from the file, with no
    /// `Content-Type` (the URL is signed without one) and no CleverTap headers. A file whose
    /// size is not `length` is not sent: a body of the wrong length would be cut or refused.
    pub async fn put_presigned(&self, url: &str, spool: &Path, length: u64) -> Result<(), Failure> {
        let file = tokio::fs::File::open(spool)
            .await
            .map_err(|error| Failure::Spool(error.to_string()))?;
        let size = file
            .metadata()
            .await
            .map_err(|error| Failure::Spool(error.to_string()))?
            .len();
        if size != length {
            return Err(Failure::Spool(format!(
                "the spooled list has {size} bytes, not the {length} written; it was changed on disk"
            )));
        }
        let response = self
            .plain
            .put(url)
            .header(CONTENT_LENGTH, length)
            .body(file_body(file.into_std().await))
            .send()
            .await
            .map_err(|error| self.transport(&error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport(&error))?;
        if status.is_success() {
            return Ok(());
        }
        Err(Failure::Status {
            status: status.as_u16(),
            retry_after: None,
            message: quote(&bytes),
        })
    }

    /// Registers an uploaded custom list as a segment (step 3 of 3). CleverTap's refusals
    /// (an existing name, a non-admin email) come back as [`Failure::Status`] with its message.
    pub async fn complete_custom_list(
        &self,
        request: &CustomListCompleted,
    ) -> Result<CustomListAnswer, Failure> {
        let body = Bytes::from(
            serde_json::to_vec(request)
                .map_err(|error| Failure::InvalidResponse(error.to_string()))?,
        );
        let bytes = self.post(CUSTOM_LIST_COMPLETED_PATH, body).await?;
        serde_json::from_slice(&bytes).map_err(|_| Failure::InvalidResponse(quote(&bytes)))
    }

    /// POSTs a JSON body to a path and returns the body of a 2xx answer.
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Bytes, Failure> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .post(url)
            .body(body)
            .send()
            .await
            .map_err(|error| self.transport(&error))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport(&error))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if !body.error.is_empty() => body.error,
            _ => quote(&bytes),
        };
        Err(Failure::Status {
            status: status.as_u16(),
            retry_after,
            message,
        })
    }

    fn transport(&self, error: &reqwest::Error) -> Failure {
        let host = error
            .url()
            .and_then(|url| url.host_str())
            .unwrap_or("CleverTap")
            .to_string();
        if error.is_connect() {
            connect_failure(host, error)
        } else if error.is_timeout() {
            Failure::Timeout(self.timeout)
        } else {
            Failure::Interrupted(root_cause(error))
        }
    }
}

/// Why a connection could not be made: a name that does not exist or a certificate that
/// cannot be trusted ([`Failure::Unreachable`]: every request would fail the same way), or
/// anything else, such as a refused connection or a resolver that did not answer
/// ([`Failure::Connect`], which may pass).
fn connect_failure(host: String, error: &reqwest::Error) -> Failure {
    let cause = root_cause(error);
    if let Some(tls) = tls_error(error) {
        return Failure::Unreachable {
            host,
            cause: format!(
                "the TLS handshake failed ({tls}); check the connection's endpoint (an `http://` server given as `https://`?) or the machine's certificate store"
            ),
        };
    }
    if name_does_not_exist(&cause) {
        return Failure::Unreachable {
            cause: format!(
                "the name `{host}` does not exist ({cause}); check the connection's region or endpoint"
            ),
            host,
        };
    }
    if error.is_timeout() {
        return Failure::Connect {
            host,
            cause: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        };
    }
    Failure::Connect { host, cause }
}

/// The TLS error somewhere in `error`'s causes, if the handshake is what failed.
fn tls_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls.to_string());
    }
    // An I/O error holding another error (hyper's holds tokio-rustls's, which holds
    // rustls's) gives as its source the held error's source, skipping the held error.
    if let Some(held) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = tls_error(held)
    {
        return Some(tls);
    }
    tls_error(error.source()?)
}

/// Whether the resolver said the name does not exist (glibc's and macOS's words for
/// `EAI_NONAME` and `EAI_NODATA`), as opposed to not answering (`EAI_AGAIN`), which may
/// pass.
fn name_does_not_exist(cause: &str) -> bool {
    [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
    ]
    .iter()
    .any(|words| cause.contains(words))
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
    if text.chars().count() > MAX_QUOTED_BODY {
        quoted.push('…');
    }
    quoted
}
