//! CleverTap's HTTP API: endpoints, headers, request and response bodies, error codes, and
//! which failures are worth a retry. The only module that knows the API's wire format.

mod client;
pub mod records;
pub mod retry;
pub mod rules;
pub mod wire;

pub use client::{Account, Client, ClientError, Failure};
