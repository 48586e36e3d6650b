//! `tapline replay`: sends a rejects file's records again through the pipeline that wrote it.

use super::run::{delivery, execute};
use super::terminal::errln;
use super::{
    Exit, ReplayArgs, folder_of, from_working_dir, history, load_all, runtime, spawn_signal_handler,
};
use crate::config::Credentials;
use crate::runner;
use tokio_util::sync::CancellationToken;

/// Loads the pipeline a rejects file belongs to and sends the file's records through it.
pub(super) fn replay(args: &ReplayArgs) -> Exit {
    if !args.rejects_file.is_file() {
        errln!(
            "error: `{}` is not a file; give the path of a rejects file (`tapline history --run ID` shows it)",
            args.rejects_file.display()
        );
        return Exit::Usage;
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
    let pipeline_file = match found {
        Ok(file) => from_working_dir(&file),
        Err(message) => {
            errln!("error: {message}");
            return Exit::Usage;
        }
    };
    let credentials = if args.sandbox {
        Credentials::Ignore
    } else {
        Credentials::Resolve
    };
    let pipelines = match load_all(std::slice::from_ref(&pipeline_file), credentials) {
        Ok(pipelines) => pipelines,
        Err((exit, _)) => return exit,
    };
    let Some(pipeline) = pipelines.into_iter().next() else {
        return Exit::Usage;
    };
    if args.sandbox {
        return runtime().block_on(replay_to_sandbox(pipeline, args));
    }
    let delivery = match delivery(&pipeline, false) {
        Ok(delivery) => delivery,
        Err(exit) => return exit,
    };
    let places = match store.places(folder_of(&pipeline.file)) {
        Ok(places) => places,
        Err(message) => {
            errln!("error: {message}");
            return Exit::Usage;
        }
    };
    let request = runner::Request::replay(
        args.rejects_file.clone(),
        delivery,
        places,
        args.state.history_days,
    );
    runtime().block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        execute(&pipeline, &request, args.json, None, &cancel).await
    })
}

/// `--sandbox`: the rejects file's records to a throwaway sandbox, as `tapline run
/// --sandbox` sends a pipeline: nothing is recorded.
async fn replay_to_sandbox(mut pipeline: crate::config::Pipeline, args: &ReplayArgs) -> Exit {
    let sandbox = match super::run::start_sandbox().await {
        Ok(sandbox) => sandbox,
        Err(exit) => return exit,
    };
    super::run::send_to_sandbox(&mut pipeline, &sandbox);
    let places = match args.state.store.places(folder_of(&pipeline.file)) {
        Ok(places) => places,
        Err(message) => {
            errln!("error: {message}");
            return Exit::Usage;
        }
    };
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
        Err(exit) => exit,
    };
    if !args.json {
        let _ = super::summary::print_sandbox(&mut super::terminal::stdout(), &sandbox);
    }
    sandbox.stop().await;
    exit
}

fn is_yaml(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml")
    )
}
