//! What `/health` answers: whether the daemon can do its work — its state store reachable,
//! pipelines loaded, not draining for a stop — as `200 ok`, or `503` with each reason.

use std::sync::Mutex;

use crate::state::Location;

/// The daemon's side of its health, updated as it loads pipelines and stops.
#[derive(Debug)]
pub struct Health {
    store: Location,
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Pipelines loaded (valid ones, scheduled or not).
    loaded: usize,
    /// A SIGTERM came: no new runs start.
    draining: bool,
}

impl Health {
    /// The health of a daemon keeping its state in `store`, before it loaded anything.
    pub fn new(store: Location) -> Self {
        Health {
            store,
            state: Mutex::default(),
        }
    }

    /// What the daemon now has loaded, and whether it is stopping.
    pub fn set(&self, loaded: usize, draining: bool) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = State { loaded, draining };
    }

    /// Checks the state store (opening it, as a run does) and answers: `None` when the
    /// daemon can do its work, else what keeps it from it, a line each.
    pub async fn problems(&self) -> Option<String> {
        let state = *self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let store = self.store.clone();
        let reachable = tokio::task::spawn_blocking(move || crate::state::open(&store).map(drop))
            .await
            .map_err(|error| error.to_string())
            .and_then(|opened| opened.map_err(|error| error.to_string()));
        verdict(state, reachable.err())
    }
}

/// The answer for a state and the state store's error, if it had one.
fn verdict(state: State, store_error: Option<String>) -> Option<String> {
    let mut problems = Vec::new();
    if let Some(error) = store_error {
        problems.push(format!("the state store cannot be used: {error}"));
    }
    if state.loaded == 0 {
        problems.push("no pipeline is loaded: the folder has none that validates".to_string());
    }
    if state.draining {
        problems.push("draining: a stop was asked for, and no new runs start".to_string());
    }
    (!problems.is_empty()).then(|| problems.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_with_a_store_pipelines_and_no_stop() {
        let loaded = State {
            loaded: 2,
            draining: false,
        };
        assert_eq!(verdict(loaded, None), None);
        for (state, error, says) in [
            (
                loaded,
                Some("locked".to_string()),
                "the state store cannot be used: locked",
            ),
            (
                State {
                    loaded: 0,
                    ..loaded
                },
                None,
                "no pipeline is loaded",
            ),
            (
                State {
                    draining: true,
                    ..loaded
                },
                None,
                "draining",
            ),
        ] {
            let answer = verdict(state, error).expect("unhealthy");
            assert!(answer.contains(says), "{answer}");
        }
    }
}
