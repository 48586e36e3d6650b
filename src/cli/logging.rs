//! Logging: where log lines go (stderr as text or JSON, or the systemd journal), their level
//! (`TAPLINE_LOG`), and whether they are coloured (`--color`, `NO_COLOR`).

/// Whether log lines are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ColorChoice {
    /// On a terminal, unless the `NO_COLOR` environment variable is set (no-color.org).
    Auto,
    /// Always, even into a file or pipe.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour, given whether stderr is a terminal and `NO_COLOR`'s value.
    pub(super) fn colours(self, terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && no_color.is_none_or(|value| value.is_empty()),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum LogFormat {
    /// Human-readable lines; colours only on a terminal.
    Text,
    /// One JSON object per line, with fields such as `pipeline` and `run_id`.
    Json,
    /// Straight to the systemd journal, each field a journal field; text on stderr when
    /// there is no journal.
    Journald,
}

/// Logs go to stderr (journald keeps them), coloured as `--color` says; `TAPLINE_LOG` sets
/// the level (`info`, `debug`, ...).
pub(super) fn init_logging(format: LogFormat, default_level: &str, ansi: bool) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TAPLINE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
    };
    let stderr = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => drop(stderr.try_init()),
        LogFormat::Json => drop(stderr.json().flatten_event(true).try_init()),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journald) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                let journald = journald.with_syslog_identifier("tapline".into());
                drop(
                    tracing_subscriber::registry()
                        .with(filter())
                        .with(journald)
                        .try_init(),
                );
            }
            Err(error) => {
                drop(stderr.try_init());
                tracing::warn!(%error, "no systemd journal; logging to stderr");
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::ColorChoice;
    use std::ffi::OsStr;

    #[test]
    fn colour_follows_the_terminal_no_color_and_the_flag() {
        for (choice, terminal, no_color, colours) in [
            (ColorChoice::Auto, true, None, true),
            (ColorChoice::Auto, false, None, false),
            (ColorChoice::Auto, true, Some("1"), false),
            // An empty NO_COLOR does not count (no-color.org).
            (ColorChoice::Auto, true, Some(""), true),
            (ColorChoice::Always, false, Some("1"), true),
            (ColorChoice::Never, true, None, false),
        ] {
            assert_eq!(
                choice.colours(terminal, no_color.map(OsStr::new)),
                colours,
                "{choice:?} terminal={terminal} NO_COLOR={no_color:?}"
            );
        }
    }
}
