//! Request paths and response bodies of CleverTap's REST API (docs/clevertap-api.md §2).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One of CleverTap's write APIs, with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// A short name for logs and the sandbox: `upload`, `demerge`, ...
    pub name: &'static str,
    /// The path under the region's host.
    pub path: &'static str,
    /// How the body holds its records.
    pub envelope: Envelope,
    /// Records in one request at most.
    pub max_records: usize,
    /// Requests in flight per account at most; CleverTap answers 429 above it.
    pub max_in_flight: usize,
}

impl Endpoint {
    /// Profiles and events (docs §2): 1000 per request, 15 in flight.
    pub const UPLOAD: Endpoint = Endpoint {
        name: "upload",
        path: "/1/upload",
        envelope: Envelope::List("d"),
        max_records: 1000,
        max_in_flight: 15,
    };
    /// Device tokens go to `/1/upload` too, but at most 100 per request (docs §3).
    pub const UPLOAD_TOKENS: Endpoint = Endpoint {
        max_records: 100,
        ..Endpoint::UPLOAD
    };
    /// Demerge (docs §4): at most 100 identities, 3 in flight.
    pub const DEMERGE: Endpoint = Endpoint {
        name: "demerge",
        path: "/1/demerge/profiles.json",
        envelope: Envelope::List("identities"),
        max_records: 100,
        max_in_flight: 3,
    };
    /// Email / phone subscriptions (docs §5): 1000 per request. CleverTap does not list this
    /// API's concurrency; tapline keeps to 3, like the other non-upload APIs.
    pub const SUBSCRIBE: Endpoint = Endpoint {
        name: "subscribe",
        path: "/1/subscribe",
        envelope: Envelope::List("d"),
        max_records: 1000,
        max_in_flight: 3,
    };
    /// Custom-list segments (docs §7): one CSV per run through a pre-signed URL, 3 in flight.
    /// `path` is the first step; the flow's other paths are [`CUSTOM_LIST_COMPLETED_PATH`].
    pub const CUSTOM_LIST: Endpoint = Endpoint {
        name: "custom_list",
        path: "/get_custom_list_segment_url",
        envelope: Envelope::List(""),
        max_records: usize::MAX,
        max_in_flight: 3,
    };
    /// Profile deletion (docs Corrections 6, [DOC] delete-user-profile-api): at most 100
    /// `identity` or 100 `guid` values per request, never both kinds in one; 3 in flight, as
    /// for the other non-upload APIs.
    pub const DELETE_PROFILES: Endpoint = Endpoint {
        name: "delete_profiles",
        path: "/1/delete/profiles.json",
        envelope: Envelope::ByKey(&DELETE_KEYS),
        max_records: 100,
        max_in_flight: 3,
    };
    /// Phone disassociation (docs §6): 1000 per request, 3 in flight (as for subscribe).
    pub const DISASSOCIATE: Endpoint = Endpoint {
        name: "disassociate",
        path: "/1/disassociate",
        envelope: Envelope::List("d"),
        max_records: 1000,
        max_in_flight: 3,
    };
}
/// How a request body holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Every record as it is, in one list: `{"d": [record, ...]}`.
    List(&'static str),
    /// Each record is `{key: value}` with one of these keys, and a body holds the values of
    /// one key only: `{"identity": ["u1", "u2"]}` or `{"guid": ["g1"]}`.
    ByKey(&'static [&'static str]),
}

/// The two ways to name a profile to delete: its identity, or its CleverTap ID.
pub const DELETE_KEYS: [&str; 2] = ["identity", "guid"];

/// The last step of a custom-list upload, at the host's root like the first.
pub const CUSTOM_LIST_COMPLETED_PATH: &str = "/upload_custom_list_segment_completed";

/// The answer to `/get_custom_list_segment_url`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PresignedUrl {
    /// Where to `PUT` the CSV, without CleverTap's headers.
    #[serde(rename = "presignedS3URL")]
    pub url: String,
    /// When the URL stops working, as CleverTap words it.
    #[serde(default)]
    pub expiry: Option<String>,
}

/// The body of `/upload_custom_list_segment_completed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomListCompleted {
    /// The segment's name.
    pub name: String,
    /// A CleverTap admin's email.
    pub email: String,
    /// The uploaded file's name.
    pub filename: String,
    /// Who made it (`tapline`).
    pub creator: String,
    /// The pre-signed URL the CSV went to.
    pub url: String,
    /// `true` replaces an existing segment; `false` creates one.
    pub replace: bool,
}

/// What an answer's `status` says of the request as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStatus {
    /// Everything was taken (but see [`UploadResponse`] on `unprocessed`).
    Success,
    /// Some records were taken.
    Partial,
    /// Nothing was taken.
    Fail,
    /// Missing, or a word CleverTap does not document.
    #[default]
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for AnswerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnswerStatus::Success => "success",
            AnswerStatus::Partial => "partial",
            AnswerStatus::Fail => "fail",
            AnswerStatus::Unknown => "unknown",
        })
    }
}

/// The answer to `/upload_custom_list_segment_completed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomListAnswer {
    /// `success` or `fail`.
    #[serde(default)]
    pub status: AnswerStatus,
    /// The segment's ID.
    #[serde(rename = "Segment ID", default)]
    pub segment_id: Option<i64>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

/// A CleverTap data centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Europe: `https://api.clevertap.com`.
    Eu1,
    /// India: `https://in1.api.clevertap.com`.
    In1,
    /// Singapore: `https://sg1.api.clevertap.com`.
    Sg1,
    /// United States: `https://us1.api.clevertap.com`.
    Us1,
    /// Indonesia: `https://aps3.api.clevertap.com`.
    Aps3,
    /// Middle East (UAE): `https://mec1.api.clevertap.com`.
    Mec1,
}

/// The API host of a CleverTap region. Europe has the bare `api.clevertap.com`.
pub fn region_base_url(region: Region) -> &'static str {
    match region {
        Region::Eu1 => "https://api.clevertap.com",
        Region::In1 => "https://in1.api.clevertap.com",
        Region::Sg1 => "https://sg1.api.clevertap.com",
        Region::Us1 => "https://us1.api.clevertap.com",
        Region::Aps3 => "https://aps3.api.clevertap.com",
        Region::Mec1 => "https://mec1.api.clevertap.com",
    }
}

/// The header that carries the account (Project) ID.
pub const ACCOUNT_HEADER: &str = "X-CleverTap-Account-Id";
/// The header that carries the passcode.
pub const PASSCODE_HEADER: &str = "X-CleverTap-Passcode";

/// The body of a 200 answer to `/1/upload`.
///
/// `status` may say `success` while `unprocessed` is not empty (older accounts), so callers
/// count `unprocessed` and never trust `status` alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UploadResponse {
    /// `success`, `partial` or `fail`.
    #[serde(default)]
    pub status: AnswerStatus,
    /// How many records CleverTap took; some APIs' answers do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<u64>,
    /// The records it refused, each with a code and a message.
    #[serde(default)]
    pub unprocessed: Vec<Unprocessed>,
    /// A message for the whole request, when `status` is `fail` without per-record detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One refused record in an upload answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unprocessed {
    /// `fail`.
    #[serde(default)]
    pub status: String,
    /// CleverTap's per-record error code (509–555).
    #[serde(default)]
    pub code: Option<i64>,
    /// CleverTap's message; `/1/upload`'s ends with "Skipped record number : N" (1-based in
    /// the request); the other APIs' say no number (they echo the record).
    #[serde(default)]
    pub error: Option<String>,
    /// The record as CleverTap read it (sometimes a JSON string on old accounts).
    #[serde(default)]
    pub record: Option<Value>,
}

impl Unprocessed {
    /// The 0-based index of the refused record in the request's `d` array, from the
    /// "Skipped record number : N" suffix of the message.
    pub fn record_index(&self) -> Option<usize> {
        let message = self.error.as_deref()?;
        let (_, number) = message.rsplit_once("record number")?;
        let digits: String = number
            .trim_start_matches([' ', ':'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().ok()?.checked_sub(1)
    }
}

/// The body of an error answer: `{"status":"fail","error":"...","code":401}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// `fail`.
    #[serde(default)]
    pub status: String,
    /// What went wrong.
    #[serde(default)]
    pub error: String,
    /// Usually the HTTP status again.
    #[serde(default)]
    pub code: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_hosts() {
        assert_eq!(region_base_url(Region::Eu1), "https://api.clevertap.com");
        assert_eq!(
            region_base_url(Region::In1),
            "https://in1.api.clevertap.com"
        );
        assert_eq!(
            region_base_url(Region::Mec1),
            "https://mec1.api.clevertap.com"
        );
    }

    #[test]
    fn reads_the_record_number() {
        let entry = |error: &str| Unprocessed {
            status: "fail".into(),
            code: Some(515),
            error: Some(error.into()),
            record: None,
        };
        assert_eq!(
            entry("Profile data is incorrect. Email is not valid.Skipped record number : 2")
                .record_index(),
            Some(1)
        );
        assert_eq!(
            entry("Event name is mandatory. Skipped record number : 1").record_index(),
            Some(0)
        );
        assert_eq!(entry("Skipped record number:17").record_index(), Some(16));
        assert_eq!(entry("no number here").record_index(), None);
        assert_eq!(entry("Skipped record number : 0").record_index(), None);
    }

    #[test]
    fn headers_are_the_ones_clevertap_documents() {
        // docs/clevertap-api.md §1: a renamed constant here would lock every user out.
        assert_eq!(ACCOUNT_HEADER, "X-CleverTap-Account-Id");
        assert_eq!(PASSCODE_HEADER, "X-CleverTap-Passcode");
    }
}
