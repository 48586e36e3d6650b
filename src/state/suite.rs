//! One suite of the state store's semantics, run against both stores: the embedded SQLite
//! file and the shared PostgreSQL database. Each test takes a fresh store of each kind.
//!
//! The PostgreSQL half needs a server: `TAPLINE_TEST_POSTGRES` is its URL (default
//! `postgres://postgres@127.0.0.1:5432/tapline_test?sslmode=disable`), and each test works
//! in a schema of its own. Without a server it is skipped with a message, except under
//! `.ci/run`, which starts one and sets `TAPLINE_TEST_POSTGRES_REQUIRED`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::DateTime;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::changes::RecordFingerprint;
use crate::outcome::{Code, Counts, RunStatus, SettledLines};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/tapline_test?sslmode=disable";

/// A fresh store of one kind, and a way to reach under it.
struct Backend {
    name: &'static str,
    location: Location,
    store: Box<dyn StateStore>,
    raw: Raw,
}

enum Raw {
    Sqlite(tempfile::TempDir),
    Postgres(Box<TestSchema>),
}

impl Backend {
    /// Runs SQL straight on the store's tables (what the test must arrange by hand).
    fn execute(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join(DATABASE_FILE))
                    .and_then(|connection| connection.execute_batch(sql))
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
            Raw::Postgres(schema) => schema.execute(sql),
        }
    }

    /// Another store on the same state, as another process would open it.
    fn reopen(&self) -> Box<dyn StateStore> {
        open(&self.location).expect("opens again")
    }
}

/// A schema of its own in the test database, dropped at the end.
pub(super) struct TestSchema {
    url: String,
    schema: String,
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl TestSchema {
    /// A new schema, or `None` (after saying how to run these tests) without a server
    /// outside CI.
    pub(super) fn create() -> Option<Self> {
        let url = std::env::var("TAPLINE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connected = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = match connected {
            Ok(client) => client,
            Err(error) if std::env::var_os("TAPLINE_TEST_POSTGRES_REQUIRED").is_none() => {
                eprintln!(
                    "skipped the PostgreSQL store: no server at {url} ({error}); start one and `createdb tapline_test`, or set TAPLINE_TEST_POSTGRES"
                );
                return None;
            }
            Err(error) => panic!("PostgreSQL at {url} is required here: {error}"),
        };
        let schema = format!("s{:016x}", rand::random::<u64>());
        let test = TestSchema {
            url,
            schema,
            runtime,
            client,
        };
        test.execute("CREATE SCHEMA $schema");
        Some(test)
    }

    pub(super) fn execute(&self, sql: &str) {
        let sql = sql.replace("$schema", &self.schema);
        let sql = format!("SET search_path = {}; {sql}", self.schema);
        self.runtime
            .block_on(self.client.batch_execute(&sql))
            .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }

    /// The store's URL: the test database, with the schema as the search path.
    pub(super) fn location(&self, lease: Duration) -> Location {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        Location::Postgres(SharedSettings {
            url: Secret::new(format!(
                "{}{separator}options=-csearch_path%3D{}",
                self.url, self.schema
            )),
            lease,
        })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        let _ = self.runtime.block_on(self.client.batch_execute(&sql));
    }
}

/// Runs `test` on a fresh embedded store, then on a fresh shared one (when there is a
/// server).
fn on_each_store(test: impl Fn(&mut Backend)) {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Folder(dir.path().to_path_buf());
    let mut sqlite = Backend {
        name: "sqlite",
        store: open(&location).unwrap(),
        location,
        raw: Raw::Sqlite(dir),
    };
    test(&mut sqlite);
    if let Some(schema) = TestSchema::create() {
        let location = schema.location(Duration::from_secs(30));
        let mut postgres = Backend {
            name: "postgres",
            store: open(&location).unwrap(),
            location,
            raw: Raw::Postgres(Box::new(schema)),
        };
        test(&mut postgres);
    }
}

/// No fingerprints accepted.
fn none() -> Accepted<'static> {
    Accepted {
        pipeline: "",
        fingerprints: &[],
    }
}

fn fingerprint(sha256: &str) -> Fingerprint {
    Fingerprint {
        size: 10,
        modified_ns: 1,
        content: sha256.into(),
    }
}

#[test]
fn a_checkpoint_keeps_its_lines_until_the_file_is_delivered() {
    on_each_store(|backend| {
        let name = backend.name;
        let store = &mut backend.store;
        let settings = SettingsDigest::of("profiles");
        let file = fingerprint("aa");
        assert_eq!(
            store
                .checkpoint(CheckpointKey::new("vip", "acct@url"))
                .unwrap(),
            None,
            "{name}"
        );
        store
            .begin_checkpoint(
                CheckpointKey::new("vip", "acct@url"),
                "run-1",
                (&file, &settings),
                &SettledLines::default(),
            )
            .unwrap();
        let accepted = RecordFingerprint {
            key: 7,
            content: u64::MAX,
            expires_at: Some(100),
        };
        let counts = Counts::default();
        store
            .settle_lines(
                CheckpointKey::new("vip", "acct@url"),
                &[(2, 1001)],
                Accepted {
                    pipeline: "vip",
                    fingerprints: &[accepted],
                },
                ("run-1", &counts),
            )
            .unwrap();
        store
            .settle_lines(
                CheckpointKey::new("vip", "acct@url"),
                &[(1003, 1003)],
                none(),
                ("run-1", &counts),
            )
            .unwrap();
        // The fingerprint came with its lines, into the journal; merged, lookups see it. It
        // is the destination's and the pipeline's.
        assert!(
            !store
                .known_fingerprints(CheckpointKey::new("vip", "acct@url"))
                .unwrap()
                .holds(7, u64::MAX)
                .unwrap()
        );
        assert_eq!(
            store
                .merge_fingerprints(CheckpointKey::new("vip", "acct@url"))
                .unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store
                .merge_fingerprints(CheckpointKey::new("vip", "acct@url"))
                .unwrap(),
            0,
            "{name}"
        );
        let mut known = store
            .known_fingerprints(CheckpointKey::new("vip", "acct@url"))
            .unwrap();
        assert!(known.holds(7, u64::MAX).unwrap(), "{name}");
        assert!(!known.holds(7, 0).unwrap());
        assert!(!known.holds(8, u64::MAX).unwrap());
        let mut elsewhere = store
            .known_fingerprints(CheckpointKey::new("vip", "other@url"))
            .unwrap();
        assert!(!elsewhere.holds(7, u64::MAX).unwrap());
        // Expired events are pruned; `state forget` drops the rest.
        assert_eq!(
            store
                .prune_fingerprints(CheckpointKey::new("vip", "acct@url"), 99)
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .prune_fingerprints(CheckpointKey::new("vip", "acct@url"), 101)
                .unwrap(),
            1
        );
        // A reader keeps the snapshot of its first lookup; a new one sees the prune.
        assert!(known.holds(7, u64::MAX).unwrap());
        let mut known = store
            .known_fingerprints(CheckpointKey::new("vip", "acct@url"))
            .unwrap();
        assert!(!known.holds(7, u64::MAX).unwrap());
        assert_eq!(store.forget_fingerprints("vip").unwrap(), 0);
        // Another destination has its own.
        assert_eq!(
            store
                .checkpoint(CheckpointKey::new("vip", "other@url"))
                .unwrap(),
            None
        );

        // Another process sees the checkpoint.
        let mut other = backend.reopen();
        let checkpoint = other
            .checkpoint(CheckpointKey::new("vip", "acct@url"))
            .unwrap()
            .unwrap();
        assert_eq!(checkpoint.run_id, "run-1");
        assert_eq!(checkpoint.fingerprint, file);
        assert_eq!(checkpoint.settings, settings);
        assert_eq!(
            checkpoint.settled.ranges(),
            &[(2, 1001), (1003, 1003)],
            "{name}"
        );

        other
            .begin_checkpoint(
                CheckpointKey::new("vip", "acct@url"),
                "run-2",
                (&file, &settings),
                &checkpoint.settled,
            )
            .unwrap();
        let resumed = other
            .checkpoint(CheckpointKey::new("vip", "acct@url"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (resumed.run_id.as_str(), resumed.settled.len()),
            ("run-2", 1001)
        );
        // The run whose checkpoint was taken over writes nothing more.
        let refused = backend
            .store
            .settle_lines(
                CheckpointKey::new("vip", "acct@url"),
                &[(1004, 1004)],
                none(),
                ("run-1", &counts),
            )
            .unwrap_err();
        assert!(
            matches!(refused, StateError::TakenOver { .. }),
            "{name}: {refused}"
        );
        assert_eq!(
            other
                .checkpoint(CheckpointKey::new("vip", "acct@url"))
                .unwrap()
                .unwrap()
                .settled
                .len(),
            1001
        );

        let delivered = |store: &dyn StateStore, file: &Fingerprint, settings: &SettingsDigest| {
            store
                .delivered(CheckpointKey::new("vip", "acct@url"), (file, settings))
                .unwrap()
                .map(|delivered| delivered.run_id)
        };
        assert_eq!(delivered(&*other, &file, &settings), None);
        other
            .finish_delivery(
                CheckpointKey::new("vip", "acct@url"),
                "run-2",
                (&file, &settings),
            )
            .unwrap();
        // Recording it twice (a retried write) changes nothing.
        other
            .finish_delivery(
                CheckpointKey::new("vip", "acct@url"),
                "run-2",
                (&file, &settings),
            )
            .unwrap();
        assert_eq!(
            other
                .checkpoint(CheckpointKey::new("vip", "acct@url"))
                .unwrap(),
            None
        );
        assert_eq!(
            delivered(&*other, &file, &settings).as_deref(),
            Some("run-2")
        );
        assert_eq!(delivered(&*other, &fingerprint("bb"), &settings), None);
        // The same file sent as something else is another delivery.
        let events = SettingsDigest::of("events");
        assert_eq!(delivered(&*other, &file, &events), None);
        // One recorded before settings were counts for any.
        backend.execute("UPDATE deliveries SET settings = ''");
        assert_eq!(
            delivered(&*other, &file, &events).as_deref(),
            Some("run-2"),
            "{name}"
        );
    });
}

#[test]
fn a_later_fingerprint_of_a_key_wins_and_a_large_journal_merges_in_order() {
    on_each_store(|backend| {
        let store = &mut backend.store;
        let file = fingerprint("cc");
        let settings = SettingsDigest::of("profiles");
        store
            .begin_checkpoint(
                CheckpointKey::new("big", "acct@url"),
                "run-1",
                (&file, &settings),
                &SettledLines::default(),
            )
            .unwrap();
        let counts = Counts::default();
        for round in 0..3_u64 {
            let fingerprints: Vec<RecordFingerprint> = (0..20_000)
                .map(|key| RecordFingerprint {
                    key,
                    content: key * 10 + round,
                    expires_at: None,
                })
                .collect();
            store
                .settle_lines(
                    CheckpointKey::new("big", "acct@url"),
                    &[(round, round)],
                    Accepted {
                        pipeline: "big",
                        fingerprints: &fingerprints,
                    },
                    ("run-1", &counts),
                )
                .unwrap();
        }
        assert_eq!(
            store
                .merge_fingerprints(CheckpointKey::new("big", "acct@url"))
                .unwrap(),
            60_000
        );
        let mut known = store
            .known_fingerprints(CheckpointKey::new("big", "acct@url"))
            .unwrap();
        for key in [0, 1, 19_999] {
            assert!(
                known.holds(key, key * 10 + 2).unwrap(),
                "{}: key {key}",
                backend.name
            );
            assert!(!known.holds(key, key * 10).unwrap());
        }
        assert_eq!(store.forget_fingerprints("big").unwrap(), 20_000);
    });
}

#[test]
fn runs_are_listed_newest_first_and_pruned_by_age() {
    on_each_store(|backend| {
        let name = backend.name;
        let store = &backend.store;
        let fire = DateTime::from_timestamp_millis(1_764_300_000_000).unwrap();
        for (run_id, pipeline) in [("r1", "vip"), ("r2", "events"), ("r3", "vip")] {
            store
                .start_run(&RunStart {
                    run_id,
                    pipeline,
                    pipeline_file: Path::new("pipelines/x.yaml"),
                    trigger: crate::outcome::Trigger::Schedule,
                    scheduled_for: Some(fire),
                    destination: if pipeline == "vip" {
                        "sandbox"
                    } else {
                        "ACC@https://in1.api.clevertap.com"
                    },
                })
                .unwrap();
        }
        store
            .finish_run(
                "r1",
                &RunFinish {
                    status: RunStatus::Failed,
                    records: Counts {
                        read: 3,
                        accepted: 2,
                        rejected: 1,
                        ..Counts::default()
                    },
                    requests: 2,
                    retries: 1,
                    resumed_from: None,
                    rows_resumed: 0,
                    rejects_file: Some(PathBuf::from("rejects/r1.jsonl")),
                    stop_reason: Some("stopped: a batch was not delivered".into()),
                    stop_kind: Some(crate::outcome::StopKind::GaveUp),
                    first_errors: vec![FirstError {
                        line: 3,
                        code: Code::CleverTap(515),
                        reason: "bad email".into(),
                    }],
                    warnings: vec!["a warning".into()],
                    concurrency: Some(crate::outcome::Concurrency {
                        adaptive: true,
                        min: 3,
                        max: 15,
                        last: 12,
                    }),
                },
            )
            .unwrap();
        let vip: Vec<String> = store
            .runs(&RunFilter::newest(Some("vip"), 10))
            .unwrap()
            .into_iter()
            .map(|run| run.run_id)
            .collect();
        assert_eq!(vip, ["r3", "r1"], "{name}");
        assert_eq!(store.runs(&RunFilter::newest(None, 10)).unwrap().len(), 3);
        assert_eq!(store.pipeline_names().unwrap(), ["events", "vip"], "{name}");
        assert_eq!(store.runs(&RunFilter::newest(None, 1)).unwrap().len(), 1);
        // A console's filters and pages: by status, and the page after a run.
        let ids = |filter: RunFilter| -> Vec<String> {
            let runs = store.runs(&filter).unwrap();
            runs.into_iter().map(|run| run.run_id).collect()
        };
        let failed = RunFilter {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..RunFilter::default()
        };
        assert_eq!(ids(failed), ["r1"], "{name}");
        let all = ids(RunFilter::newest(None, 10));
        let page_two = RunFilter {
            before: Some(all[0].clone()),
            limit: 10,
            ..RunFilter::default()
        };
        assert_eq!(ids(page_two), all[1..], "{name}");
        let unknown = RunFilter {
            before: Some("no-such-run".into()),
            limit: 10,
            ..RunFilter::default()
        };
        assert!(ids(unknown).is_empty(), "{name}");
        let r1 = store.run("r1").unwrap().unwrap();
        assert_eq!(r1.end.status, RunStatus::Failed);
        assert_eq!(r1.end.records.rejected, 1);
        assert_eq!(r1.end.first_errors[0].code, "515");
        assert_eq!(r1.end.warnings, ["a warning"]);
        assert_eq!(r1.end.stop_kind, Some(crate::outcome::StopKind::GaveUp));
        assert_eq!(r1.end.concurrency.map(|seen| seen.max), Some(15), "{name}");
        assert_eq!(
            store.run("r2").unwrap().unwrap().end.stop_kind,
            None,
            "{name}: a run still going has none"
        );
        assert_eq!(r1.scheduled_for_ms, Some(fire.timestamp_millis()));
        assert_eq!(r1.runner, Some(this_process()), "{name}");
        assert_eq!(r1.destination.as_deref(), Some("sandbox"), "{name}");
        assert_eq!(
            store.run("r2").unwrap().unwrap().destination.as_deref(),
            Some("ACC@https://in1.api.clevertap.com"),
            "{name}"
        );
        assert!(r1.finished_at_ms.is_some());
        assert_eq!(store.run("nope").unwrap(), None);

        // r3 was killed: the next holder of the lock marks it abandoned.
        assert_eq!(store.abandon_running("vip").unwrap(), 1);
        assert_eq!(
            store.run("r3").unwrap().unwrap().end.status,
            RunStatus::Abandoned
        );

        backend.execute("UPDATE runs SET started_at = 0 WHERE run_id = 'r1'");
        let store = &backend.store;
        assert_eq!(
            store.prune(90).unwrap(),
            [PathBuf::from("rejects/r1.jsonl")],
            "{name}"
        );
        assert_eq!(store.run("r1").unwrap(), None);
        assert_eq!(store.runs(&RunFilter::newest(None, 10)).unwrap().len(), 2);

        // A rejects file a run left in the history still names is kept (a replay's, say);
        // a run still running is never pruned, however old.
        backend.execute(
            "UPDATE runs SET rejects_file = 'rejects/shared.jsonl';
             UPDATE runs SET started_at = 0, status = 'succeeded' WHERE run_id = 'r2'",
        );
        let store = &backend.store;
        assert_eq!(store.prune(90).unwrap(), Vec::<PathBuf>::new(), "{name}");
        assert_eq!(store.run("r2").unwrap(), None, "{name}");
        backend.execute("UPDATE runs SET started_at = 0, status = 'running'");
        assert_eq!(backend.store.prune(90).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(
            backend
                .store
                .runs(&RunFilter::newest(None, 10))
                .unwrap()
                .len(),
            1,
            "{name}"
        );
    });
}

#[test]
fn only_the_last_delivery_counts_and_a_run_that_starts_sending_ends_it() {
    on_each_store(|backend| {
        let name = backend.name;
        let store = &mut backend.store;
        let settings = SettingsDigest::of("profiles");
        let (gold, silver) = (fingerprint("90"), fingerprint("51"));
        let deliver = |store: &mut Box<dyn StateStore>, file: &Fingerprint, run_id: &str| {
            store
                .begin_checkpoint(
                    CheckpointKey::new("vip", "acct@url"),
                    run_id,
                    (file, &settings),
                    &SettledLines::default(),
                )
                .unwrap();
            store
                .finish_delivery(
                    CheckpointKey::new("vip", "acct@url"),
                    run_id,
                    (file, &settings),
                )
                .unwrap();
        };
        let delivered = |store: &dyn StateStore, file: &Fingerprint| {
            store
                .delivered(CheckpointKey::new("vip", "acct@url"), (file, &settings))
                .unwrap()
                .map(|delivered| delivered.run_id)
        };
        deliver(store, &gold, "run-1");
        assert_eq!(
            delivered(&**store, &gold).as_deref(),
            Some("run-1"),
            "{name}"
        );
        deliver(store, &silver, "run-2");
        assert_eq!(
            delivered(&**store, &gold),
            None,
            "{name}: gold was not the last"
        );
        assert_eq!(delivered(&**store, &silver).as_deref(), Some("run-2"));
        // A run of gold begins and stops: silver is no longer what CleverTap holds.
        store
            .begin_checkpoint(
                CheckpointKey::new("vip", "acct@url"),
                "run-3",
                (&gold, &settings),
                &SettledLines::default(),
            )
            .unwrap();
        assert_eq!(delivered(&**store, &silver), None, "{name}");
        // Another destination's deliveries are its own.
        assert_eq!(
            store
                .delivered(CheckpointKey::new("vip", "other@url"), (&silver, &settings))
                .unwrap(),
            None
        );
    });
}

#[test]
fn forgetting_a_pipeline_forgets_the_per_file_scopes_an_older_tapline_kept() {
    on_each_store(|backend| {
        let store = &mut backend.store;
        let settings = SettingsDigest::of("events");
        for (key, run_id) in [("views", "run-1"), ("views/events_1.csv", "run-2")] {
            store
                .begin_checkpoint(
                    CheckpointKey::new(key, "acct@url"),
                    run_id,
                    (&fingerprint("ee"), &settings),
                    &SettledLines::default(),
                )
                .unwrap();
            let prints = [RecordFingerprint {
                key: 1,
                content: 2,
                expires_at: None,
            }];
            store
                .settle_lines(
                    CheckpointKey::new(key, "acct@url"),
                    &[(1, 1)],
                    Accepted {
                        pipeline: key,
                        fingerprints: &prints,
                    },
                    (run_id, &Counts::default()),
                )
                .unwrap();
            store
                .merge_fingerprints(CheckpointKey::new(key, "acct@url"))
                .unwrap();
        }
        // Not another pipeline whose name starts alike.
        store
            .begin_checkpoint(
                CheckpointKey::new("viewsx", "acct@url"),
                "run-3",
                (&fingerprint("ee"), &settings),
                &SettledLines::default(),
            )
            .unwrap();
        let prints = [RecordFingerprint {
            key: 1,
            content: 2,
            expires_at: None,
        }];
        let accepted = Accepted {
            pipeline: "viewsx",
            fingerprints: &prints,
        };
        store
            .settle_lines(
                CheckpointKey::new("viewsx", "acct@url"),
                &[(1, 1)],
                accepted,
                ("run-3", &Counts::default()),
            )
            .unwrap();
        store
            .merge_fingerprints(CheckpointKey::new("viewsx", "acct@url"))
            .unwrap();
        assert_eq!(
            store.forget_fingerprints("views").unwrap(),
            2,
            "{}",
            backend.name
        );
        assert!(
            store
                .known_fingerprints(CheckpointKey::new("viewsx", "acct@url"))
                .unwrap()
                .holds(1, 2)
                .unwrap()
        );
    });
}

#[test]
fn each_fire_is_claimed_once_and_each_version_of_a_file_arrives_once() {
    on_each_store(|backend| {
        let store = &backend.store;
        let other = backend.reopen();
        assert_eq!(store.last_fire("vip").unwrap(), None);
        let first = DateTime::from_timestamp_millis(1_764_300_000_000).unwrap();
        let second = DateTime::from_timestamp_millis(1_764_300_060_000).unwrap();
        assert!(store.claim_fire("vip", first).unwrap(), "{}", backend.name);
        // Another process (or daemon) claiming the same fire does not get it.
        assert!(!other.claim_fire("vip", first).unwrap());
        assert!(other.claim_fire("vip", second).unwrap());
        assert!(!store.claim_fire("vip", second).unwrap());
        assert!(!store.claim_fire("vip", first).unwrap());
        assert!(store.claim_fire("events", first).unwrap());
        assert_eq!(store.last_fire("vip").unwrap(), Some(second));

        let arrival = Arrival {
            path: "exports/vip_1.csv".into(),
            size: 10,
            modified: std::time::UNIX_EPOCH + Duration::from_secs(1_764_300_000),
            version: String::new(),
        };
        assert!(!store.has_arrived("vip", &arrival).unwrap());
        store.record_arrival("vip", &arrival).unwrap();
        other.record_arrival("vip", &arrival).unwrap();
        assert!(other.has_arrived("vip", &arrival).unwrap());
        assert!(!store.has_arrived("other", &arrival).unwrap());
        // The same name written again is a new arrival.
        let rewritten = Arrival {
            size: 12,
            ..arrival.clone()
        };
        assert!(!store.has_arrived("vip", &rewritten).unwrap());
        // An object replaced under the same key, size and second has another ETag: new.
        let object = Arrival {
            path: "s3://drops/in/vip_1.csv".into(),
            version: "\"etag-1\"".into(),
            ..arrival.clone()
        };
        store.record_arrival("vip", &object).unwrap();
        assert!(other.has_arrived("vip", &object).unwrap());
        let replaced = Arrival {
            version: "\"etag-2\"".into(),
            ..object.clone()
        };
        assert!(!other.has_arrived("vip", &replaced).unwrap());
        store.record_arrival("vip", &replaced).unwrap();
        assert!(other.has_arrived("vip", &replaced).unwrap());
        // Every recorded arrival of a pipeline, as it was recorded.
        let mut recorded = Vec::new();
        other
            .arrivals("vip", &mut |arrival| recorded.push(arrival))
            .unwrap();
        recorded.sort_by(|a, b| (&a.path, &a.version).cmp(&(&b.path, &b.version)));
        assert_eq!(recorded, [arrival.clone(), object, replaced]);
        let mut none = 0;
        store.arrivals("absent", &mut |_| none += 1).unwrap();
        assert_eq!(none, 0);
    });
}

#[test]
fn watermarks_move_with_full_deliveries_and_are_forgotten() {
    on_each_store(|backend| {
        let store = &backend.store;
        assert_eq!(
            store
                .watermark(CheckpointKey::new("warehouse", "acct@url"))
                .unwrap(),
            None
        );
        store
            .set_watermark(CheckpointKey::new("warehouse", "acct@url"), ("41", "run-1"))
            .unwrap();
        store
            .set_watermark(CheckpointKey::new("warehouse", "acct@url"), ("42", "run-2"))
            .unwrap();
        store
            .set_watermark(CheckpointKey::new("warehouse", "other@url"), ("7", "run-2"))
            .unwrap();
        assert_eq!(
            backend
                .reopen()
                .watermark(CheckpointKey::new("warehouse", "acct@url"))
                .unwrap()
                .as_deref(),
            Some("42"),
            "{}",
            backend.name
        );
        assert_eq!(store.forget_watermarks("warehouse").unwrap(), 2);
        assert_eq!(
            store
                .watermark(CheckpointKey::new("warehouse", "other@url"))
                .unwrap(),
            None
        );
    });
}

#[test]
fn one_process_at_a_time_holds_a_pipeline() {
    on_each_store(|backend| {
        let name = backend.name;
        let held = backend
            .store
            .lock("vip", LockWait::ForADeadHolder, CancellationToken::new())
            .unwrap();
        let other = backend.reopen();
        for wait in [LockWait::No, LockWait::ForADeadHolder] {
            let refused = other
                .lock("vip", wait, CancellationToken::new())
                .unwrap_err();
            assert!(
                refused.to_string().contains("already running"),
                "{name}: {refused}"
            );
        }
        // Another pipeline is not affected.
        drop(
            other
                .lock("events", LockWait::No, CancellationToken::new())
                .unwrap(),
        );
        drop(held);
        drop(
            other
                .lock("vip", LockWait::No, CancellationToken::new())
                .unwrap(),
        );
    });
}

/// The shared store's own: what processes on several machines agree on.
mod shared {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::engine::SharedSlots;

    fn shared(lease: Duration) -> Option<(TestSchema, Location, Box<dyn StateStore>)> {
        let schema = TestSchema::create()?;
        let location = schema.location(lease);
        let store = open(&location).unwrap();
        Some((schema, location, store))
    }

    #[test]
    fn processes_starting_at_once_migrate_once() {
        let Some(schema) = TestSchema::create() else {
            return;
        };
        let location = schema.location(Duration::from_secs(30));
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let location = location.clone();
                std::thread::spawn(move || open(&location).map(drop))
            })
            .collect();
        for thread in opened {
            thread.join().unwrap().unwrap();
        }
        schema.execute(&format!("DO $$ BEGIN IF (SELECT count(*) FROM tapline_schema) <> 1 OR (SELECT version FROM tapline_schema) <> {} THEN RAISE 'migrated more than once'; END IF; END $$", super::super::postgres::MIGRATION_COUNT));
        // A newer schema is refused.
        schema.execute("UPDATE tapline_schema SET version = 99");
        let refused = open(&location).err().expect("refused");
        assert!(refused.to_string().contains("upgrade tapline"), "{refused}");
    }

    #[test]
    fn a_lease_nobody_renews_is_taken_over_when_it_expires_and_a_renewed_one_is_not() {
        let Some((schema, _, store)) = shared(Duration::from_secs(30)) else {
            return;
        };
        // A dead process's lease, expiring in a second: the next run waits for it, and
        // takes it only once it expired.
        schema.execute(
            "CREATE TABLE ghost AS SELECT now() + interval '1 second' AS expiry;
             INSERT INTO leases SELECT 'vip', 'gone:1:0000', now(), now(), expiry FROM ghost",
        );
        let lease = store
            .lock("vip", LockWait::ForADeadHolder, CancellationToken::new())
            .unwrap();
        schema.execute(
            "DO $$ BEGIN
                IF (SELECT acquired_at FROM leases WHERE pipeline = 'vip')
                   < (SELECT expiry FROM ghost) THEN
                    RAISE 'the lease was taken before it expired';
                END IF;
             END $$",
        );
        drop(lease);
        // A live process's lease: renewed (as its heartbeat would, every 100 ms) while the
        // next run looks, so it is refused.
        schema.execute(
            "INSERT INTO leases VALUES ('events', 'alive:2:0000', now(), now(), now() + interval '30 seconds')",
        );
        let looked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&looked);
        let renewing = std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                schema.execute("UPDATE leases SET renewed_at = now() WHERE pipeline = 'events'");
                std::thread::sleep(Duration::from_millis(100));
            }
            schema
        });
        let refused = store
            .lock("events", LockWait::ForADeadHolder, CancellationToken::new())
            .unwrap_err();
        looked.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            matches!(&refused, StateError::Leased { holder, .. } if holder == "alive:2"),
            "{refused}"
        );
        drop(renewing.join().unwrap());
    }

    #[test]
    fn a_run_whose_lease_is_taken_over_is_told_to_stop() {
        let Some((schema, _, store)) = shared(Duration::from_secs(2)) else {
            return;
        };
        let lost = CancellationToken::new();
        let _lease = store
            .lock("vip", LockWait::ForADeadHolder, lost.clone())
            .unwrap();
        // Another process took it over while this one was paused.
        schema.execute("UPDATE leases SET holder = 'thief:3:0000' WHERE pipeline = 'vip'");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lost.is_cancelled() {
            assert!(
                Instant::now() < deadline,
                "the heartbeat noticed the takeover"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn an_account_has_its_requests_in_flight_and_a_dead_process_keeps_none() {
        let Some((schema, _, store)) = shared(Duration::from_secs(30)) else {
            return;
        };
        let slots = store.shared_slots().expect("the shared store shares slots");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let take = |slots: &Arc<dyn SharedSlots>| {
                let slots = Arc::clone(slots);
                async move { slots.take("acct@host", "/1/upload", 3).await }
            };
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(take(&slots).await);
            }
            let full = tokio::time::timeout(Duration::from_millis(300), take(&slots)).await;
            assert!(full.is_err(), "a fourth request waits");
            // Another account is not affected.
            drop(slots.take("other@host", "/1/upload", 3).await);
            held.pop();
            held.push(
                tokio::time::timeout(Duration::from_secs(10), take(&slots))
                    .await
                    .unwrap(),
            );
            drop(held);
        });
        // A slot a dead process held frees itself when its lease expires.
        schema.execute(
            "UPDATE request_slots SET holder = 'gone:1:0000#0', expires_at = now() + interval '30 seconds' WHERE slot < 2;
             UPDATE request_slots SET holder = 'gone:1:0000#1', expires_at = now() - interval '1 second' WHERE slot = 2",
        );
        runtime.block_on(async {
            let taken = tokio::time::timeout(
                Duration::from_secs(10),
                slots.take("acct@host", "/1/upload", 3),
            )
            .await;
            assert!(taken.is_ok(), "the expired slot is taken");
        });
    }
}
