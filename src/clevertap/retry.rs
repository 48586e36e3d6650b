//! Whether a failed request is retried, and how long to wait first.
//!
//! CleverTap throttles by concurrency (429 above 15 uploads in flight per account) and
//! documents no `Retry-After`; a 5xx or a broken connection is usually passing. Data errors
//! (other 4xx) fail the same way every time, and bad credentials fail every request, so
//! those end the batch or the run at once instead of storming the API.

use std::time::Duration;

use super::client::Failure;

/// What to do about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the same batch again after a back-off (or the server's `Retry-After`).
    Retry {
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// This batch cannot be delivered; report its records as failed and go on.
    FailBatch,
    /// No request can succeed (bad credentials or region, a host name that does not
    /// exist, a certificate not trusted); stop the whole run now.
    StopRun,
}

/// The one place that decides retry or give up, from the failure alone:
///
/// | failure | verdict |
/// | --- | --- |
/// | timeout, connection refused or broken | retry (a refused connection for [`RetryPolicy::connect_patience`]) |
/// | a name that does not exist, a TLS certificate not trusted | stop the run |
/// | 429 Too Many Requests | retry, honouring `Retry-After` |
/// | 5xx except 501 Not Implemented | retry, honouring `Retry-After` |
/// | 401 Unauthorized, 403 Forbidden | stop the run |
/// | any other status (400, 404, 413, 501…) | fail the batch |
/// | a 2xx whose body is not CleverTap's | fail the batch (it may have been applied) |
pub fn classify(failure: &Failure) -> Verdict {
    match failure {
        Failure::Timeout(_)
        | Failure::Connect { .. }
        | Failure::Interrupted(_)
        | Failure::NotReady(_) => Verdict::Retry { retry_after: None },
        Failure::Spool(_) => Verdict::FailBatch,
        Failure::Unreachable { .. } => Verdict::StopRun,
        Failure::Status {
            status: 401 | 403, ..
        } => Verdict::StopRun,
        Failure::Status { status: 501, .. } => Verdict::FailBatch,
        Failure::Status {
            status,
            retry_after,
            ..
        } if *status == 429 || (500..600).contains(status) => Verdict::Retry {
            retry_after: *retry_after,
        },
        Failure::Status { .. } | Failure::InvalidResponse(_) => Verdict::FailBatch,
    }
}

/// How many times and how long apart a batch is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// The back-off ceiling before the first retry; it doubles each retry.
    pub base_delay: Duration,
    /// The back-off never exceeds this.
    pub max_delay: Duration,
    /// A server's `Retry-After` is honoured up to this.
    pub max_retry_after: Duration,
    /// A connection that cannot be made is retried for this long from its first failure,
    /// then given up: CleverTap unreachable ends a run in seconds, not minutes.
    pub connect_patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            connect_patience: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 = the first retry): the server's
    /// `Retry-After` when given (capped), else capped exponential back-off with full
    /// jitter, `jitter` being uniform in `[0, 1)`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            message: String::new(),
        }
    }

    #[test]
    fn classifies_failures() {
        let retry = Verdict::Retry { retry_after: None };
        let cases = [
            (Failure::Timeout(Duration::from_secs(60)), retry),
            (
                Failure::Connect {
                    host: "in1.api.clevertap.com".into(),
                    cause: "refused".into(),
                },
                retry,
            ),
            (
                Failure::Unreachable {
                    host: "in9.api.clevertap.com".into(),
                    cause: "the name does not exist".into(),
                },
                Verdict::StopRun,
            ),
            (Failure::Interrupted("reset".into()), retry),
            (status(429, None), retry),
            (
                status(429, Some(7)),
                Verdict::Retry {
                    retry_after: Some(Duration::from_secs(7)),
                },
            ),
            (status(500, None), retry),
            (status(502, None), retry),
            (
                status(503, Some(2)),
                Verdict::Retry {
                    retry_after: Some(Duration::from_secs(2)),
                },
            ),
            (status(504, None), retry),
            (status(501, None), Verdict::FailBatch),
            (status(400, None), Verdict::FailBatch),
            (status(404, None), Verdict::FailBatch),
            (status(413, None), Verdict::FailBatch),
            (status(409, None), Verdict::FailBatch),
            (status(401, None), Verdict::StopRun),
            (status(403, None), Verdict::StopRun),
            (
                Failure::InvalidResponse("<html>".into()),
                Verdict::FailBatch,
            ),
        ];
        for (failure, expected) in cases {
            assert_eq!(classify(&failure), expected, "{failure:?}");
        }
    }

    #[test]
    fn backs_off_exponentially_with_a_cap_and_full_jitter() {
        let policy = RetryPolicy::default();
        let ms = Duration::from_millis;
        let cases = [
            (1, None, 1.0, ms(250)),
            (2, None, 1.0, ms(500)),
            (3, None, 1.0, ms(1000)),
            (3, None, 0.5, ms(500)),
            (3, None, 0.0, ms(0)),
            (8, None, 1.0, ms(30_000)),
            (40, None, 1.0, ms(30_000)),
            (1, Some(Duration::from_secs(5)), 0.1, ms(5000)),
            (1, Some(Duration::from_secs(3600)), 1.0, ms(300_000)),
        ];
        for (retry, retry_after, jitter, expected) in cases {
            assert_eq!(
                policy.delay(retry, retry_after, jitter),
                expected,
                "retry {retry}, {retry_after:?}, {jitter}"
            );
        }
    }
}
