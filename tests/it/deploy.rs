//! The deployment examples in `deploy/` parse, and the pipeline the Kubernetes example carries
//! passes `tapline validate` as it is.

use crate::common::*;

fn documents(path: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .expect("the example exists");
    text.split("\n---\n")
        .map(|document| {
            tapline::config::yaml::parse(document)
                .unwrap_or_else(|error| panic!("{path}: {error:?}"))
                .to_json()
        })
        .collect()
}

#[test]
fn the_kubernetes_example_parses_and_its_pipeline_validates() {
    let documents = documents("deploy/kubernetes/cronjob.yaml");
    let kinds: Vec<&str> = documents
        .iter()
        .map(|document| document["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "Secret", "PersistentVolumeClaim", "CronJob"]
    );
    let cron_job = &documents[3];
    assert_eq!(cron_job["spec"]["concurrencyPolicy"], "Forbid");
    let container = &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "run");
    // The state store's URL comes from the Secret, as a file.
    assert_state_from_the_secret(container, &documents[1]);

    // The ConfigMap's files, written out as the pod sees them, validate (secrets and the
    // database are not here: warnings only).
    let workspace = Workspace::new();
    for (name, text) in documents[0]["data"].as_object().unwrap() {
        workspace.write(name, text.as_str().unwrap());
    }
    let output = tapline(workspace.dir.path(), &["validate", "vip.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// A container's arguments.
fn args_of(container: &serde_json::Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect()
}

/// The container reads the state store's URL from a file of the mounted Secret, which has it.
fn assert_state_from_the_secret(container: &serde_json::Value, secret: &serde_json::Value) {
    let args = args_of(container);
    let at = args
        .iter()
        .position(|arg| *arg == "--state-file")
        .expect("--state-file");
    let file = args[at + 1];
    let key = file
        .strip_prefix("/run/secrets/tapline/")
        .expect("in the mounted Secret");
    assert!(
        secret["stringData"][key]
            .as_str()
            .unwrap()
            .starts_with("postgres://")
    );
}

#[test]
fn the_two_daemons_example_parses_and_its_pipeline_validates() {
    let cron_job_example = documents("deploy/kubernetes/cronjob.yaml");
    let documents = documents("deploy/kubernetes/daemons.yaml");
    let kinds: Vec<&str> = documents
        .iter()
        .map(|document| document["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment"]);
    let deployment = &documents[1];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "daemon");
    assert_state_from_the_secret(container, &cron_job_example[1]);
    // Every option the container passes is one `tapline daemon` takes.
    let args = args_of(container);
    let help = stdout(&tapline(std::path::Path::new("."), &["daemon", "--help"]));
    for option in args.iter().filter(|arg| arg.starts_with("--")) {
        assert!(help.contains(option), "`tapline daemon` has no {option}");
    }

    let workspace = Workspace::new();
    for (name, text) in documents[0]["data"].as_object().unwrap() {
        workspace.write(name, text.as_str().unwrap());
    }
    let output = tapline(workspace.dir.path(), &["validate", "vip.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn the_airflow_example_is_python_that_compiles() {
    let path = format!(
        "{}/deploy/airflow/tapline_dag.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let Ok(output) = std::process::Command::new("python3")
        .args([
            "-c",
            "import ast, sys; ast.parse(open(sys.argv[1]).read())",
            &path,
        ])
        .output()
    else {
        eprintln!("skipped: no python3 to parse {path}");
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
