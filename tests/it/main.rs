//! The integration tests: one binary, a module per part of tapline, each running the real
//! `tapline` binary (and the sandbox) as a user would.
//!
//! Run one part with `cargo test --test it run::` (or any test name filter).

mod browser;
mod changes;
mod clevertap_node;
mod common;
mod concurrency;
mod console;
mod custom_list;
mod daemon;
mod deploy;
mod docs;
mod documented_rules;
mod exact_delivery;
mod first_hour;
mod mysql;
mod notifications;
mod object_storage;
mod operations;
mod output;
mod parquet;
mod postgres;
mod postgres_tls;
mod printed;
mod reliability;
mod run;
mod sandbox;
mod shared_state;
mod state;
mod validate;
