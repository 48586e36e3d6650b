//! `tapline replay`: sends a rejects file's records again through the pipeline that wrote it.

use super::error::{Error, Outcome, report};
use super::run::{delivery, execute};
use super::{
    Exit, ReplayArgs, folder_of, from_working_dir, history, load_all, runtime, spawn_signal_handler,
};
use crate::config::Credentials;
use crate::runner;
use tokio_util::sync::CancellationToken;

/// Loads the pipeline a rejects file belongs to and sends the file's records through it.
pub(super) fn replay(args: &ReplayArgs) -> Outcome {
    if !args.rejects_file.is_file() {
        return Err(Error::usage(format!(
            "`{}` is not a file; give the path of a rejects file (`tapline history --run ID` shows it)",
            args.rejects_file.display()
        )));
    }
    let store = &args.state.store;
    let found = match &args.pipeline {
        // A path to a pipeline file, or a pipeline's name as `history` shows it.
        Some(given) if given.exists() || given.components().count() > 1 || is_yaml(given) => {
            Ok(given.clone())
        }
        Some(name) => history::pipeline_named(&name.to_string_lossy(), &args.rejects_file, store),
        None => history::pipeline_of_rejects(&args.rejects_file, store),
    };
    let pipeline_file = from_working_dir(&found.map_err(Error::usage)?);
    let credentials = if args.sandbox {
        Credentials::Ignore
    } else {
        Credentials::Resolve
    };
    let pipelines = match load_all(std::slice::from_ref(&pipeline_file), credentials) {
        Ok(pipelines) => pipelines,
        // Its diagnostics are printed.
        Err((exit, _)) => return Ok(exit),
    };
    let Some(pipeline) = pipelines.into_iter().next() else {
        return Ok(Exit::Usage);
    };
    if args.sandbox {
        return runtime().block_on(replay_to_sandbox(pipeline, args));
    }
    let delivery = delivery(&pipeline, false)?;
    let places = store
        .places(folder_of(&pipeline.file))
        .map_err(Error::usage)?;
    let request = runner::Request::replay(
        args.rejects_file.clone(),
        delivery,
        places,
        args.state.history_days,
    );
    Ok(runtime().block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        execute(&pipeline, &request, args.json, None, &cancel).await
    }))
}

/// `--sandbox`: the rejects file's records to a throwaway sandbox, as `tapline run
/// --sandbox` sends a pipeline: nothing is recorded.
async fn replay_to_sandbox(mut pipeline: crate::config::Pipeline, args: &ReplayArgs) -> Outcome {
    let places = args
        .state
        .store
        .places(folder_of(&pipeline.file))
        .map_err(Error::usage)?;
    let sandbox = super::run::start_sandbox().await?;
    super::run::send_to_sandbox(&mut pipeline, &sandbox);
    let exit = match delivery(&pipeline, false) {
        Ok(delivery) => {
            let mut request = runner::Request::replay(
                args.rejects_file.clone(),
                delivery,
                places,
                args.state.history_days,
            );
            // A throwaway sandbox: only the history entry, sent to `sandbox`.
            request.bookkeeping = runner::Bookkeeping::HistoryOnly;
            request.to_sandbox = true;
            let cancel = CancellationToken::new();
            spawn_signal_handler(cancel.clone());
            execute(&pipeline, &request, args.json, Some(&sandbox), &cancel).await
        }
        Err(error) => report(&error),
    };
    if !args.json {
        let _ = super::summary::print_sandbox(&mut super::terminal::stdout(), &sandbox);
    }
    sandbox.stop().await;
    Ok(exit)
}

fn is_yaml(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
