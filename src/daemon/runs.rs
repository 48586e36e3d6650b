//! The daemon's runs: the fires that are due (and those missed while it was down), each run
//! started on its own task through the runner, and what is done when one ends.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::clevertap::Client;
use crate::config::Pipeline;
use crate::config::model::{CatchUp, Overlap, TriggerKind};
use crate::console::{Action, Answer, Asked, Refusal};
use crate::engine::{Delivery, RunSummary};
use crate::runner::{DeliveredBefore, RunError, Trigger};
use crate::state::LockWait;
use crate::{runner, scheduler};

use super::{ARRIVAL_RETRY, Cause, Daemon, Finished};

impl Daemon {
    /// Marks the runs that a dead process left `running` as abandoned, for each pipeline
    /// no other process is running now (its lock is free). Their checkpoints stay: the next
    /// run resumes them (an arrived file's run starts again at once, see `scan_arrivals`).
    pub(super) fn abandon_dead_runs(&self) {
        for entry in self.entries.values() {
            let name = &entry.pipeline.name;
            let Ok(_lock) = self
                .store
                .lock(name, LockWait::No, CancellationToken::new())
            else {
                continue;
            };
            match self.store.abandon_running(name) {
                Ok(0) => {}
                Ok(abandoned) => {
                    tracing::warn!(pipeline = %name, abandoned, "runs left unfinished by a process that died; marked abandoned, their checkpoints kept")
                }
                Err(error) => tracing::warn!(pipeline = %name, %error, "cannot mark dead runs"),
            }
        }
    }

    /// `catch_up: latest`: a pipeline that missed a fire while the daemon was down runs now.
    pub(super) fn catch_up(&mut self, now: DateTime<Utc>) {
        let mut due = Vec::new();
        for (file, entry) in &self.entries {
            let Some(schedule) = &entry.pipeline.schedule else {
                continue;
            };
            if schedule.catch_up != CatchUp::Latest {
                continue;
            }
            let last = match self.store.last_fire(&entry.pipeline.name) {
                Ok(Some(last)) => last,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the last fires");
                    continue;
                }
            };
            if let Some(missed) = scheduler::missed_fire(schedule, last, now) {
                let shown = scheduler::in_zone(schedule, missed);
                tracing::info!(pipeline = %entry.pipeline.name, missed = shown, "catching up a fire missed while the daemon was down");
                due.push((file.clone(), missed));
            }
        }
        for (file, missed) in due {
            self.fire(&file, missed);
        }
    }

    /// Fires every pipeline whose time has come and moves its next fire on.
    pub(super) fn fire_due(&mut self, now: DateTime<Utc>) {
        let due: Vec<(PathBuf, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(file, entry)| {
                entry
                    .next_fire
                    .filter(|fire| *fire <= now)
                    .map(|fire| (file.clone(), fire))
            })
            .collect();
        for (file, fire) in due {
            if let Some(entry) = self.entries.get_mut(&file) {
                // From now, not from the fire: fires that passed while the machine slept
                // are not made up in a burst.
                entry.next_fire = entry
                    .pipeline
                    .schedule
                    .as_ref()
                    .and_then(|schedule| scheduler::next_fire(schedule, now));
            }
            self.fire(&file, fire);
        }
        self.publish();
    }

    /// Claims the fire due `at` (another daemon sharing the state store may have claimed
    /// it: then it is that daemon's), and starts its run, or skips or queues it when the
    /// pipeline is still running.
    pub(super) fn fire(&mut self, file: &Path, at: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(file) else {
            return;
        };
        let name = entry.pipeline.name.clone();
        match self.store.claim_fire(&name, at) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(pipeline = %name, fire = %at, "fire claimed by another process sharing the state store");
                return;
            }
            Err(error) => {
                // Unclaimed, it could run twice; the next fire tries again.
                tracing::error!(pipeline = %name, %error, "cannot claim the fire in the state store; it does not run");
                return;
            }
        }
        if entry.running {
            match overlap(&entry.pipeline) {
                Overlap::Skip => {
                    tracing::warn!(pipeline = %name, fire_ms = at.timestamp_millis(), "fire skipped: the previous run is still going")
                }
                Overlap::Queue => {
                    tracing::info!(pipeline = %name, "fire queued: the previous run is still going");
                    entry.queued = Some(Cause::Fire(at));
                }
            }
            return;
        }
        let pipeline = entry.pipeline.clone();
        self.start(file, pipeline, Cause::Fire(at), None);
    }

    /// Does what the console asks: starts the run (and answers with its ID once it has
    /// begun), queues it, or says why not. A run the console asks for follows the rules of
    /// a fire: the pipeline's overlap rule, its lock, the account budgets.
    pub(super) fn act(&mut self, Asked { action, reply }: Asked) {
        let refuse = |reply: oneshot::Sender<Answer>, refusal| {
            let _ = reply.send(Answer::Refused(refusal));
        };
        if self.stopping {
            return refuse(reply, Refusal::Stopping);
        }
        let (name, cause) = match action {
            Action::RunNow { pipeline } => (pipeline, Cause::RunNow),
            Action::Replay {
                pipeline,
                rejects_file,
            } => (pipeline, Cause::Replay(rejects_file)),
        };
        let Some((file, entry)) = self
            .entries
            .iter_mut()
            .find(|(_, entry)| entry.pipeline.name == name)
        else {
            return refuse(reply, Refusal::UnknownPipeline(name));
        };
        if matches!(cause, Cause::RunNow) && entry.pipeline.trigger == TriggerKind::FileArrival {
            return refuse(
                reply,
                Refusal::NotRunnable(format!(
                    "`{name}` runs when a file arrives (trigger: file_arrival): put the file where its source.path matches, or send one with `tapline run`"
                )),
            );
        }
        if entry.running {
            return match overlap(&entry.pipeline) {
                Overlap::Queue => {
                    tracing::info!(pipeline = %name, "the console's run queued: the previous run is still going");
                    entry.queued = Some(cause);
                    let _ = reply.send(Answer::Queued);
                }
                Overlap::Skip => refuse(
                    reply,
                    Refusal::Busy(format!(
                        "`{name}` is running; with `overlap: skip` nothing else starts until it ends"
                    )),
                ),
            };
        }
        let (file, pipeline) = (file.clone(), entry.pipeline.clone());
        self.start(&file, pipeline, cause, Some(reply));
    }

    /// Starts a run of the pipeline of `file` (as given: an arrival has its own source);
    /// `reply` hears its run ID once it has begun, or why it did not start.
    pub(super) fn start(
        &mut self,
        file: &Path,
        pipeline: Pipeline,
        cause: Cause,
        reply: Option<oneshot::Sender<Answer>>,
    ) {
        let name = pipeline.name.clone();
        let client = match self.client(&pipeline) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(pipeline = %name, %error, "cannot run");
                if let Some(reply) = reply {
                    let _ = reply.send(Answer::Refused(Refusal::NotStarted(error.to_string())));
                }
                return;
            }
        };
        let Some(entry) = self.entries.get_mut(file) else {
            return;
        };
        entry.running = true;
        let trigger = match cause {
            Cause::Fire(_) => Trigger::Schedule,
            Cause::Arrival(_) => Trigger::FileArrival,
            Cause::RunNow => Trigger::Api,
            Cause::Replay(_) => Trigger::Replay,
        };
        let mut request = runner::Request::scheduled(
            trigger,
            Delivery::Send(client),
            self.options.state.clone(),
            self.options.history_days,
            self.budgets.clone(),
        );
        request.to_sandbox = self.options.sandbox.is_some();
        match cause {
            Cause::Fire(at) => request.scheduled_for = Some(at),
            Cause::Arrival(arrival) => request.arrival = Some(arrival),
            Cause::RunNow => {}
            Cause::Replay(rejects_file) => {
                request.replay = Some(rejects_file);
                request.delivered_before = DeliveredBefore::SendAgain;
            }
        }
        let cancel = self.interrupt_runs.child_token();
        let file = file.to_path_buf();
        let fire = request.scheduled_for;
        tracing::info!(pipeline = %name, fire_ms = fire.map(|at| at.timestamp_millis()), "run starting");
        let task_file = file.clone();
        let mut tracker = self.link.track(reply);
        let task = self.runs.spawn(async move {
            let result = runner::run(&pipeline, &request, &mut tracker, cancel).await;
            tracker.ended(match &result {
                Ok(summary) => Ok(&summary.run_id),
                Err(error) => Err(error.to_string()),
            });
            (task_file, fire, result)
        });
        self.run_files.insert(task.id(), file);
        self.publish();
    }

    /// The HTTP client of a pipeline's connection, made once per connection and reload
    /// (making one loads the system's root certificates) and shared by its runs.
    pub(super) fn client(
        &mut self,
        pipeline: &Pipeline,
    ) -> Result<Client, crate::clevertap::ClientError> {
        let key = format!(
            "{}/{}",
            pipeline.connection.name,
            runner::destination(pipeline)
        );
        if let Some(client) = self.clients.get(&key) {
            return Ok(client.clone());
        }
        let client = Client::new(&pipeline.connection.account())?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// Logs a finished run, and starts a queued one.
    pub(super) fn run_ended(
        &mut self,
        finished: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let (file, fire, result) = match finished {
            Ok((id, finished)) => {
                self.run_files.remove(&id);
                finished
            }
            Err(error) => {
                // A panic in a run is a bug; the daemon and the other pipelines go on.
                tracing::error!(%error, "a run ended abnormally");
                if let Some(file) = self.run_files.remove(&error.id())
                    && let Some(entry) = self.entries.get_mut(&file)
                {
                    entry.running = false;
                }
                self.publish();
                return;
            }
        };
        let handled_elsewhere = matches!(result, Err(RunError::ArrivalHandled { .. }));
        match &result {
            Ok(summary) => {
                self.metrics.run_finished(summary);
                log_summary(summary);
            }
            Err(error @ RunError::ArrivalHandled { .. }) => {
                tracing::info!(file = %file.display(), "{error}")
            }
            Err(error @ RunError::State(crate::state::StateError::Leased { .. })) => {
                let fire_ms = fire.map(|at| at.timestamp_millis());
                tracing::warn!(file = %file.display(), fire_ms, %error, "run skipped: another process is running the pipeline")
            }
            Err(error) => tracing::error!(file = %file.display(), %error, "run not started"),
        }
        let (queued, arrivals) = match self.entries.get_mut(&file) {
            Some(entry) => {
                entry.running = false;
                if result.is_ok() {
                    // More objects may wait in the bucket: list it at once.
                    entry.next_poll = None;
                }
                (
                    std::mem::take(&mut entry.queued),
                    entry.pipeline.trigger == TriggerKind::FileArrival,
                )
            }
            None => (None, false),
        };
        if self.stopping {
            self.publish();
            return;
        }
        if result.is_err() && arrivals && !handled_elsewhere {
            // The run could not start (the state store, another process running it): try
            // the file again later, not in a loop.
            let later = tokio::time::Instant::now() + ARRIVAL_RETRY;
            self.rescan_at = Some(self.rescan_at.map_or(later, |at| at.min(later)));
            self.publish();
            return;
        }
        if let Some(cause) = queued
            && let Some(entry) = self.entries.get(&file)
        {
            // A fire was claimed when it came.
            match cause {
                Cause::Fire(_) => {
                    tracing::info!(pipeline = %entry.pipeline.name, "starting the queued fire")
                }
                _ => tracing::info!(pipeline = %entry.pipeline.name, "starting the queued run"),
            }
            let pipeline = entry.pipeline.clone();
            self.start(&file, pipeline, cause, None);
        }
        if arrivals {
            // More files may have arrived while it ran.
            self.scan_arrivals();
        }
        self.publish();
    }
}

/// What comes while a pipeline runs: its schedule's `overlap`; `skip` without a schedule.
fn overlap(pipeline: &Pipeline) -> Overlap {
    pipeline
        .schedule
        .as_ref()
        .map_or(Overlap::Skip, |schedule| schedule.overlap)
}

fn log_summary(summary: &RunSummary) {
    let counts = summary.counts;
    let status = summary.status().as_str();
    let stop = summary.stop.as_ref().map(ToString::to_string);
    if summary.succeeded() {
        tracing::info!(
            pipeline = %summary.pipeline,
            run_id = %summary.run_id,
            status,
            read = counts.read,
            accepted = counts.accepted,
            skipped = counts.skipped,
            rows_resumed = summary.rows_resumed,
            up_to_date = summary.up_to_date.as_deref(),
            duration_ms = summary.duration.as_millis() as u64,
            "run finished"
        );
    } else {
        tracing::warn!(
            pipeline = %summary.pipeline,
            run_id = %summary.run_id,
            status,
            read = counts.read,
            accepted = counts.accepted,
            skipped = counts.skipped,
            rejected = counts.rejected,
            failed = counts.failed,
            stop = stop.as_deref(),
            rejects_file = summary.rejects_file.as_ref().map(|path| path.display().to_string()),
            "run failed"
        );
    }
    for warning in &summary.warnings {
        tracing::warn!(pipeline = %summary.pipeline, run_id = %summary.run_id, "{warning}");
    }
}
