//! tapline moves customer data from files into CleverTap, driven by YAML pipeline files.
//!
//! Data flows one way: file → rows ([`source`]) → records ([`mapping`]) → batches and
//! requests ([`engine`], over [`clevertap`]) → outcomes and the summary ([`cli`]).
//!
//! - [`config`]: pipeline YAML → a checked [`config::Pipeline`], every error with its line.
//! - [`preflight`]: offline checks of a pipeline's source file.
//! - [`source`]: streaming CSV / TSV / JSONL readers, gzip or not.
//! - [`mapping`]: rows → CleverTap records, with CleverTap's rules checked client-side.
//! - [`clevertap`]: the HTTP API: wire types, the client, retry decisions, record rules.
//! - [`changes`]: record fingerprints for `send: changes` (pure).
//! - [`engine`]: batching, bounded concurrency, retries, per-record outcomes.
//! - [`daemon`]: the scheduler process: cron fires, folder watch, reloads, systemd.
//! - [`runner`]: one run of a pipeline with its lock, checkpoint, history and notifications.
//! - [`notifications`]: emails and signed webhooks about finished runs.
//! - [`sandbox`]: a local CleverTap with its rules and limits, for tests and `--sandbox`.
//! - [`scheduler`]: cron fire times in a time zone, DST-safe (pure).
//! - [`state`]: run history, checkpoints and delivered files, in embedded SQLite or a
//!   PostgreSQL database that many processes share.
//! - [`file_stem`]: file names made from pipeline names, bounded for every file system.
//! - [`pg`]: PostgreSQL connections (query sources, the shared state store).
//! - [`template`]: String Builder templates for computed columns.
//! - [`cli`]: commands, printing and exit codes.
//!
//! The library's public surface is what the binary, the tests and the benchmarks use: the
//! command line, the sandbox, the JSON Schemas and YAML reader of `config`, and the webhook
//! signature; everything else is the crate's own.

pub(crate) mod changes;
pub(crate) mod clevertap;
pub mod cli;
pub mod config;
pub(crate) mod console;
pub(crate) mod daemon;
pub(crate) mod engine;
pub(crate) mod file_stem;
pub(crate) mod listener;
pub(crate) mod mapping;
pub(crate) mod mysql;
pub mod notifications;
pub(crate) mod outcome;
pub(crate) mod pg;
pub(crate) mod preflight;
pub(crate) mod runner;
pub mod sandbox;
pub(crate) mod scheduler;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod template;
