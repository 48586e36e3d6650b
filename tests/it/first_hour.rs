//! A new user's first commands: `tapline init` for each entity (validated, then uploaded to the
//! sandbox), shell completions, the man page, and host names where addresses are asked for.

use crate::common;

use common::*;

#[test]
fn init_writes_a_pipeline_that_validates_and_uploads_for_each_entity() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    for (entity, name) in [
        ("user-profiles", "profiles"),
        ("user-events", "events"),
        ("custom-list", "audience"),
    ] {
        let output = tapline(dir, &["init", "pipelines", "--entity", entity]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let printed = stdout(&output);
        assert!(
            printed.contains(&format!("wrote pipelines/{name}.yaml\n"))
                && printed.contains(&format!("wrote pipelines/data/{name}.csv\n"))
                && printed.contains(&format!("tapline run pipelines/{name}.yaml --sandbox")),
            "{printed}"
        );
        let pipeline = std::fs::read_to_string(dir.join(format!("pipelines/{name}.yaml"))).unwrap();
        assert!(
            pipeline.starts_with("# yaml-language-server: $schema=pipeline.schema.json\n"),
            "{pipeline}"
        );
    }
    // The schemas editors read are the ones `tapline schema` prints.
    let schema = std::fs::read_to_string(dir.join("pipelines/pipeline.schema.json")).unwrap();
    assert_eq!(schema, stdout(&tapline(dir, &["schema"])));

    // A CI job without secrets: valid, with warnings naming what a run will need.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"));
    let clean = command
        .args(["validate", "pipelines"])
        .current_dir(dir)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(stderr(&clean).contains("`CLEVERTAP_PASSCODE` is not set"));
    assert_eq!(
        stdout(&clean).matches("ok  ").count(),
        3,
        "{}",
        stdout(&clean)
    );

    // Every starter uploads as it is.
    let output = tapline(
        dir,
        &[
            "run",
            "pipelines/profiles.yaml",
            "pipelines/events.yaml",
            "pipelines/audience.yaml",
            "--sandbox",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let printed = stdout(&output);
    assert_eq!(printed.matches(": succeeded").count(), 3, "{printed}");
    assert_eq!(
        printed.matches("3 read · 3 accepted").count(),
        3,
        "{printed}"
    );

    // Nothing is overwritten, not even in part.
    let before = std::fs::read_to_string(dir.join("pipelines/data/profiles.csv")).unwrap();
    let output = tapline(dir, &["init", "pipelines"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("error: `pipelines/profiles.yaml` exists; nothing was written"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pipelines/data/profiles.csv")).unwrap(),
        before
    );
    // Another name in the same folder keeps its connections.yaml.
    let output = tapline(dir, &["init", "pipelines", "--name", "vip"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stdout(&output).contains("connections.yaml"));
    let output = tapline(dir, &["init", "pipelines", "--name", "../escape"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    for (shell, marker) in [
        ("bash", "complete -F _tapline"),
        ("zsh", "#compdef tapline"),
        ("fish", "complete -c tapline"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let output = tapline(dir, &["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("replay") && script.contains("init"),
            "{shell}"
        );
    }
    let output = tapline(dir, &["man"]);
    assert_eq!(output.status.code(), Some(0));
    let page = stdout(&output);
    assert!(
        page.starts_with(".ie") && page.contains(".TH tapline 1"),
        "{page}"
    );
    for command in ["validate", "run", "daemon", "history", "replay", "init"] {
        assert!(page.contains(command), "{command} in the man page");
    }
}

#[test]
fn listen_addresses_take_host_names_and_log_format_is_explained_once() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path();
    let mut sandbox = std::process::Command::new(env!("CARGO_BIN_EXE_tapline"))
        .args(["sandbox", "--listen", "localhost:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sandbox.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert!(
        line.starts_with("http://127.0.0.1:") || line.starts_with("http://[::1]:"),
        "{line}"
    );

    let output = tapline(dir, &["sandbox", "--listen", "nowhere.invalid:80"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not HOST:PORT"),
        "{}",
        stderr(&output)
    );

    let output = tapline(dir, &["run", "--help"]);
    let help = stdout(&output);
    let line = help
        .lines()
        .find(|line| line.contains("--log-format"))
        .unwrap();
    assert!(line.contains("text, json"), "{line}");
    assert!(
        !help.contains("native journal entries with fields"),
        "{help}"
    );
}
