//! The documentation as a user meets it: the README's quickstart runs as written, the
//! guide's PostgreSQL example validates and sends, the pipeline reference is what `tapline
//! schema --markdown` writes, and every link between the documents lands on a heading.

use std::path::{Path, PathBuf};

use crate::common::*;
use tapline::sandbox::SandboxConfig;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// The fenced blocks of `language` after the heading `heading` (up to the next `## `).
fn blocks_under(markdown: &str, heading: &str, language: &str) -> Vec<String> {
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let section = &markdown[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let fence = format!("```{language}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|block| block[..block.find("```").expect("a closed block")].to_string())
        .collect()
}

/// A command line of a block, without its comment; `None` for a line that is not one.
fn command(line: &str) -> Option<Vec<String>> {
    let line = line.split(" #").next().unwrap_or_default().trim();
    (!line.is_empty()).then(|| line.split_whitespace().map(str::to_string).collect())
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    let readme = read("README.md");
    // The top: the example pipeline to the sandbox (the binary `cargo run --release --` builds).
    let top = readme.split("```sh\n").nth(1).unwrap();
    let first = top.lines().next().unwrap();
    assert!(
        first.starts_with("cargo run --release -- run pipelines/vip_profiles.yaml --sandbox"),
        "{first}"
    );
    let output = tapline(root(), &["run", "pipelines/vip_profiles.yaml", "--sandbox"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("sandbox received"),
        "{}",
        stdout(&output)
    );
    // The guide's rejects-file example is this run's entry, line number and all.
    let output = tapline(
        root(),
        &["run", "pipelines/vip_profiles.yaml", "--sandbox", "--json"],
    );
    let rejects_file = summary(&output)["rejects_file"]
        .as_str()
        .unwrap()
        .to_string();
    let entry = std::fs::read_to_string(root().join(rejects_file)).unwrap();
    let entry = entry.lines().next().unwrap();
    assert!(entry.starts_with(r#"{"line":5,"#), "{entry}");
    assert!(
        read("docs/guide.md").contains(entry),
        "the guide should show {entry}"
    );

    // "Your first pipeline", command by command, in an empty folder.
    let workspace = tempfile::tempdir().unwrap();
    let dir = workspace.path();
    let blocks = blocks_under(&readme, "## Your first pipeline", "sh");
    let mut ran = 0;
    for line in blocks[0].lines() {
        let Some(words) = command(line) else { continue };
        assert_eq!(words[0], "tapline", "{line}");
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let output = tapline(dir, &args);
        assert_eq!(output.status.code(), Some(0), "{line}: {}", stderr(&output));
        ran += 1;
        if args[0] == "history" {
            assert!(
                stdout(&output).contains("  sandbox\n"),
                "{}",
                stdout(&output)
            );
        }
    }
    assert_eq!(ran, 4);

    // The pipeline the README shows validates where `init` wrote its data.
    let shown = blocks_under(&readme, "## Your first pipeline", "yaml");
    std::fs::write(dir.join("pipelines/shown.yaml"), &shown[0]).unwrap();
    let output = tapline(dir, &["validate", "pipelines/shown.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Sending for real: the dry run, with the account in the environment.
    let real = &blocks_under(&readme, "## Your first pipeline", "sh")[1];
    let dry_run = real
        .lines()
        .filter_map(command)
        .find(|words| words.contains(&"--dry-run".to_string()))
        .expect("a dry run in the block");
    let args: Vec<&str> = dry_run[1..].iter().map(String::as_str).collect();
    let output = tapline_with_env(
        dir,
        &args,
        &[
            ("CLEVERTAP_ACCOUNT_ID", "TEST-123-456-7890"),
            ("CLEVERTAP_PASSCODE", "not-sent"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn the_guides_postgres_example_validates_and_sends() {
    let Some(database) = TestDatabase::open() else {
        return;
    };
    let guide = read("docs/guide.md");
    let blocks = blocks_under(
        &guide,
        "### Sources: files, Parquet, PostgreSQL and MySQL queries",
        "yaml",
    );
    let (connections, pipeline) = (&blocks[0], &blocks[1]);
    assert!(connections.contains("warehouse:") && pipeline.contains("FROM crm.users"));
    database.execute(
        "CREATE TABLE $schema.users (user_id text, email text, plan text, interests text[],
                                     active boolean, updated_at timestamptz);
         INSERT INTO $schema.users VALUES
           ('u1', 'u1@example.com', 'gold', '{golf,jazz}', true, '2026-11-01 10:00:00+00'),
           ('u2', 'u2@example.com', 'free', NULL, false, '2026-11-02 10:00:00+00');",
    );
    let sandbox = TestSandbox::start(SandboxConfig::default());
    let workspace = Workspace::new();
    let (account, _) = sandbox.sandbox.credentials();
    workspace.write(
        "pipelines/connections.yaml",
        format!(
            "{connections}prod:\n  account_id: {account}\n  passcode_file: ../passcode.txt\n  endpoint: {}\n",
            sandbox.sandbox.base_url()
        ),
    );
    // The example as written, its table in the test's own schema.
    workspace.write(
        "pipelines/vip.yaml",
        pipeline.replace("crm.users", &format!("{}.users", database.schema)),
    );
    let tapline = || Tapline::new(workspace.dir.path()).env("WAREHOUSE_URL", &database.url);
    tapline().args(["validate", "pipelines"]).run().code(0);
    let summary = tapline()
        .args(["run", "pipelines/vip.yaml", "--json"])
        .run()
        .code(0)
        .summary();
    assert_eq!(summary["records"]["accepted"], 1);
    // The incremental column is sent, under the name the query gives it.
    let profile = &profiles_by_identity(&sandbox)["u1"];
    assert_eq!(profile["Plan"], "gold", "{profile}");
    assert_eq!(profile["Updated At"], "$D_1793527200", "{profile}");
    // The next run reads only what is newer: nothing.
    let summary = tapline()
        .args(["run", "pipelines/vip.yaml", "--json"])
        .run()
        .summary();
    assert_eq!(summary["records"]["read"], 0, "{summary}");
}

#[test]
fn the_pipeline_reference_is_current() {
    let written = Tapline::new(root())
        .args(["schema", "--markdown"])
        .run()
        .code(0)
        .stdout();
    assert_eq!(
        written,
        read("docs/pipeline-reference.md"),
        "docs/pipeline-reference.md is stale: run `cargo run -- schema --markdown > docs/pipeline-reference.md`"
    );
}

/// The Markdown documents of the repository.
fn documents() -> Vec<PathBuf> {
    let mut documents = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            documents.push(path);
        }
    }
    documents
}

/// The anchors of a document's headings, as GitHub makes them.
fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            anchors.push(tapline::config::reference::anchor(
                line.trim_start_matches('#').trim(),
            ));
        }
    }
    anchors
}

#[test]
fn every_link_between_the_documents_lands_on_a_heading() {
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for link in text.split("](").skip(1) {
            let target = &link[..link.find(')').unwrap_or(link.len())];
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(file)
            };
            assert!(
                file.exists(),
                "{}: {target} does not exist",
                document.display()
            );
            if !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(
                    headings.iter().any(|heading| heading == anchor),
                    "{}: no heading for {target}",
                    document.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked}");
}

#[test]
fn the_guides_annotated_pipeline_validates_with_its_connections() {
    let guide = read("docs/guide.md");
    let blocks = blocks_under(&guide, "## Pipelines", "yaml");
    let (pipeline, connections) = (&blocks[0], &blocks[1]);
    assert!(pipeline.contains("schedule:") && connections.starts_with("prod:"));
    let workspace = Workspace::new();
    workspace.write("pipelines/guide.yaml", pipeline);
    workspace.write("pipelines/connections.yaml", connections);
    workspace.write(
        "pipelines/data/vip_users.csv",
        read("pipelines/data/vip_users.csv"),
    );
    let report = Tapline::new(workspace.dir.path())
        .args(["validate", "pipelines", "--strict"])
        .env("CLEVERTAP_ACCOUNT_ID", "TEST-123")
        .env("CLEVERTAP_PASSCODE", "p")
        .env("TAPLINE_WEBHOOK_SECRET", "s")
        .run()
        .code(0)
        .stdout();
    assert!(report.contains("ok  pipelines/guide.yaml"), "{report}");
}
