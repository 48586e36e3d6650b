//! What the state says a run should do: go on from the checkpoint of an unfinished run (in
//! the mode that run was started with), start from the first row, or send nothing because
//! the last delivery to the destination was this very content.

use std::path::Path;

use super::{Changes, DeliveredBefore, Request};
use crate::config::Pipeline;
use crate::config::model::{Rerun, Send};
use crate::outcome::SettledLines;
use crate::state::{
    Checkpoint, CheckpointKey, Fingerprint, SettingsDigest, StateError, StateStore,
};

/// What the state says this run should do.
#[derive(Default)]
pub(super) struct Plan {
    /// The source's fingerprint, when it could be read (no checkpoint without it).
    pub(super) fingerprint: Option<Fingerprint>,
    /// The run whose checkpoint this one goes on from, and its settled lines.
    pub(super) resume: Option<(String, SettledLines)>,
    /// The run that already delivered this file: nothing to send.
    pub(super) up_to_date: Option<String>,
    /// What the run does with records CleverTap has: as asked, or as the run it resumes did.
    pub(super) changes: Changes,
    /// Why the checkpoint was dropped, and such.
    pub(super) warnings: Vec<String>,
}

/// How the checkpoint of an unfinished run applies to this one.
pub(super) enum Fit {
    /// Go on from it, leaving out or sending all as the run that left it did.
    Resume {
        /// That run's way.
        changes: Changes,
    },
    /// It does not apply: why, in a sentence that goes on "so this run starts from the
    /// first row".
    StartOver(String),
}

/// What a checkpoint records of the settings: the settings' digest, and for a `send:
/// changes` run that sends every record (`--full`) that it does, so that the run that
/// resumes it does too.
pub(super) fn checkpoint_settings(
    pipeline: &Pipeline,
    settings: &SettingsDigest,
    changes: Changes,
) -> SettingsDigest {
    match (pipeline.send, changes) {
        (Send::Changes { .. }, Changes::SendAll) => {
            SettingsDigest::of(&format!("{}; send every record", settings.0))
        }
        _ => settings.clone(),
    }
}

/// Whether the checkpoint `checkpoint` applies to a run with these settings, asked to do
/// `changes` with records CleverTap has.
pub(super) fn fit(
    checkpoint: &Checkpoint,
    pipeline: &Pipeline,
    settings: &SettingsDigest,
    changes: Changes,
) -> Fit {
    let recorded = &checkpoint.settings;
    let run = &checkpoint.run_id;
    if *recorded == checkpoint_settings(pipeline, settings, changes) {
        return Fit::Resume { changes };
    }
    let all = checkpoint_settings(pipeline, settings, Changes::SendAll);
    match changes {
        Changes::LeaveOut if *recorded == all => Fit::Resume {
            changes: Changes::SendAll,
        },
        Changes::SendAll if recorded == settings => Fit::StartOver(format!(
            "run {run} stopped sending only what changed, and `--full` sends every record"
        )),
        _ if recorded.is_unknown() => Fit::StartOver(format!(
            "run {run} stopped by an older tapline that did not record the pipeline's settings, so its checkpoint does not apply"
        )),
        _ => Fit::StartOver(format!(
            "run {run} stopped under other settings (target, operation, output mapping, custom list, source format, or the query and its database), so its checkpoint does not apply"
        )),
    }
}

/// Decides between resuming `checkpoint`, starting fresh, and sending nothing; takes the
/// checkpoint.
pub(super) fn plan(
    store: &mut dyn StateStore,
    (pipeline, source, checkpoint): (&Pipeline, &Path, Option<Checkpoint>),
    request: &Request,
    (key, settings): (CheckpointKey<'_>, &SettingsDigest),
    run_id: &str,
) -> Result<Plan, StateError> {
    let mut plan = Plan {
        changes: request.changes,
        ..Plan::default()
    };
    // An unreadable source is the engine's to report; without a fingerprint nothing is kept.
    let Ok(fingerprint) = Fingerprint::of(source) else {
        return Ok(plan);
    };
    // The settings first: an edited query also reads other rows, and the edit is the cause.
    let resumable = match checkpoint {
        Some(checkpoint) => match fit(&checkpoint, pipeline, settings, request.changes) {
            Fit::Resume { .. } if !checkpoint.fingerprint.same_content(&fingerprint) => {
                plan.warnings.push(format!(
                    "the source changed since run {} stopped ({}), so this run starts from the first row",
                    checkpoint.run_id,
                    fingerprint.difference(&checkpoint.fingerprint)
                ));
                None
            }
            Fit::Resume { changes } => {
                if changes != request.changes {
                    plan.warnings.push(format!(
                        "run {} was started with `--full`, so this run goes on from its checkpoint sending every record, as that run did",
                        checkpoint.run_id
                    ));
                }
                plan.changes = changes;
                Some(checkpoint)
            }
            Fit::StartOver(why) => {
                plan.warnings
                    .push(format!("{why}, so this run starts from the first row"));
                None
            }
        },
        None => None,
    };
    if resumable.is_none()
        && request.delivered_before == DeliveredBefore::Skip
        && pipeline.rerun == Rerun::Changed
        && let Some(delivered) = store.delivered(key, (&fingerprint, settings))?
    {
        plan.up_to_date = Some(delivered.run_id);
        return Ok(plan);
    }
    let settled = match resumable {
        Some(checkpoint) => {
            let settled = checkpoint.settled;
            plan.resume = Some((checkpoint.run_id, settled.clone()));
            settled
        }
        None => SettledLines::default(),
    };
    store.begin_checkpoint(
        key,
        run_id,
        (
            &fingerprint,
            &checkpoint_settings(pipeline, settings, plan.changes),
        ),
        &settled,
    )?;
    plan.fingerprint = Some(fingerprint);
    Ok(plan)
}
