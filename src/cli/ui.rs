//! `tapline ui`: the web console over a state store alone, for runs started by cron, CI or a
//! fleet of daemons sharing the PostgreSQL store; and the console's token, which the daemon
//! reads the same way.

use super::error::{Error, Outcome};
use super::terminal::outln;
use super::{ConsoleArgs, Exit, UiArgs, runtime};
use crate::console::{Console, Token};

/// Serves the console until the process is stopped.
pub(super) fn ui(args: &UiArgs) -> Outcome {
    let token = token(&args.console)?;
    let places = args.store.places(&args.dir).map_err(Error::usage)?;
    // A store no run has used yet is made, empty: the console shows the first run when it comes.
    let console = Console::open(&places.store, args.dir.clone(), "ui").map_err(Error::usage)?;
    runtime().block_on(async {
        let (bound, served) = crate::console::serve(args.listen, console, token)
            .await
            .map_err(Error::usage)?;
        let _ = outln!("the console is at http://{bound}/ (Ctrl-C stops it)");
        tokio::select! {
            _ = served => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(Exit::Success)
    })
}

/// The console's token: `--token-file`, else the systemd credential `console-token` when the
/// service has one (`LoadCredential=console-token:/etc/tapline/console-token`), else none.
pub(super) fn token(args: &ConsoleArgs) -> Result<Option<Token>, Error> {
    let file = args.token_file.clone().or_else(|| {
        let credential =
            std::path::Path::new(&std::env::var_os("CREDENTIALS_DIRECTORY")?).join("console-token");
        credential.is_file().then_some(credential)
    });
    file.map(|file| Token::read(&file).map_err(Error::usage))
        .transpose()
}
