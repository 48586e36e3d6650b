//! The console in a real browser: Debian's chromium, driven through chromedriver by
//! fantoccini, against a real daemon and sandbox. A screenshot of each page is kept in
//! `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`, or
//! `TAPLINE_TEST_CHROMEDRIVER` naming a driver); without them the test says so and passes,
//! except under `.ci/run`, which installs them and sets `TAPLINE_TEST_BROWSER_REQUIRED`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tapline::sandbox::SandboxConfig;

use crate::common::{self, TestSandbox};
use crate::console::{DaemonProcess, request, runs_with_refusals};

/// A chromedriver listening on loopback, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The machine's chromedriver, started; `None` (after saying how to run the test) when
/// there is none and CI does not require it.
fn driver() -> Option<Driver> {
    let program = std::env::var("TAPLINE_TEST_CHROMEDRIVER").unwrap_or("chromedriver".into());
    // A free port: chromedriver takes no port 0.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let started = Command::new(&program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match started {
        Ok(child) => child,
        Err(error) if std::env::var_os("TAPLINE_TEST_BROWSER_REQUIRED").is_none() => {
            eprintln!(
                "skipped: cannot start `{program}` ({error}); `apt-get install chromium chromium-driver` runs these tests"
            );
            return None;
        }
        Err(error) => panic!("`{program}` is required here: {error}"),
    };
    let driver = Driver { child, port };
    common::wait_until(60, "chromedriver listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(driver)
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("make the screenshots folder");
    dir
}

/// Saves what the browser shows as `name.png`.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("take a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save the screenshot");
}

/// Waits until `condition` holds, looking every 50 ms; the browser's side of
/// [`common::wait_until`].
async fn eventually<F, Fut>(seconds: u64, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut look = tokio::time::interval(Duration::from_millis(50));
    loop {
        look.tick().await;
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {seconds} s waiting for: {what}"
        );
    }
}

/// The text of the first element `css` finds, or empty.
async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[test]
fn the_console_in_a_browser_lists_pipelines_shows_progress_live_and_runs_a_pipeline_now() {
    let Some(driver) = driver() else { return };
    // Slow enough that the run is seen going: 40 requests of 250 ms, one at a time.
    let sandbox = TestSandbox::start(SandboxConfig {
        discarded_events: vec!["Old Promo".into()],
        latency: Duration::from_millis(250),
        ..SandboxConfig::default()
    });
    let (workspace, events_run) = runs_with_refusals(&sandbox);
    workspace.write("profiles.csv", common::profile_csv(40_000));
    workspace.pipeline(
        "big",
        &sandbox,
        "description: Every profile, nightly\nsource: {path: profiles.csv}\ntarget: {entity: user_profiles}\nthread_count: 1\n",
    );
    let token = "c0ffee5eed2b9a7d4e1f";
    workspace.write("console-token", token);
    let daemon = DaemonProcess::start(&workspace, &["--token-file", "console-token"]);
    let address = daemon.address.clone();
    let events_id = events_run["run_id"].as_str().unwrap().to_string();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
            }),
        );
        let browser = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a browser session through chromedriver");

        // Without the token: the browser is asked to log in, and shows nothing of the pipelines.
        browser.goto(&format!("http://{address}/")).await.unwrap();
        let refused = browser.source().await.unwrap();
        assert!(!refused.contains("events"), "{refused}");

        // With it (HTTP Basic, as a browser logs in), the overview: pipelines, their next
        // fires in their zone and UTC, the one that does not load with its error.
        browser
            .goto(&format!("http://ops:{token}@{address}/"))
            .await
            .unwrap();
        // The browser keeps the login for the origin, as after its prompt: from here the
        // pages' own URLs (a URL with credentials in it may not fetch).
        browser.goto(&format!("http://{address}/")).await.unwrap();
        let table = text(&browser, "main > table").await;
        assert!(table.contains("events"), "{table}");
        assert!(table.contains("big"), "{table}");
        assert!(table.contains("IST (+05:30)"), "{table}");
        assert!(table.contains("broken"), "{table}");
        // The description that is markup shows as text, and nothing of it runs.
        assert!(table.contains("<img src=x onerror=alert(1)>"), "{table}");
        let images = browser
            .execute("return document.images.length", vec![])
            .await
            .unwrap();
        assert_eq!(images, serde_json::json!(0));
        screenshot(&browser, "overview").await;
        // A request of the page without the credentials the browser keeps is answered 401.
        let status = browser
            .execute_async(
                "const done = arguments[0]; fetch('/api/pipelines', {credentials: 'omit'}).then(r => done(r.status), e => done(String(e)))",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(status, serde_json::json!(401));

        // One run: the reasons with their code, count and an example line.
        browser.goto(&format!("http://{address}/runs/{events_id}")).await.unwrap();
        let reasons = text(&browser, "main table").await;
        assert!(reasons.contains("line "), "{reasons}");
        assert!(reasons.contains("Old Promo"), "{reasons}");
        screenshot(&browser, "run").await;

        // One pipeline: "Run now" starts a run and leads to its page.
        browser.goto(&format!("http://{address}/pipelines/big")).await.unwrap();
        screenshot(&browser, "pipeline").await;
        browser
            .find(Locator::XPath("//button[text()='Run now']"))
            .await
            .expect("a Run now button")
            .click()
            .await
            .unwrap();
        eventually(60, "the new run's page", || async {
            browser
                .current_url()
                .await
                .is_ok_and(|url| url.path().starts_with("/runs/2"))
        })
        .await;
        let run_page = text(&browser, "main").await;
        assert!(run_page.contains("api"), "{run_page}");

        // The overview follows the run without a reload.
        browser.goto(&format!("http://{address}/")).await.unwrap();
        browser
            .execute("window.tapline_test_mark = 'not reloaded'; return null", vec![])
            .await
            .unwrap();
        let settled = |browser: &Client| {
            let browser = browser.clone();
            async move {
                text(&browser, "#running tbody tr td:nth-child(7)")
                    .await
                    .parse::<u64>()
                    .unwrap_or(0)
            }
        };
        eventually(120, "the running run with records settled", || async {
            settled(&browser).await > 0
        })
        .await;
        let first = settled(&browser).await;
        eventually(120, "more records settled, shown without a reload", || async {
            settled(&browser).await > first
        })
        .await;
        let mark = browser
            .execute("return window.tapline_test_mark || null", vec![])
            .await
            .unwrap();
        assert_eq!(mark, serde_json::json!("not reloaded"));
        screenshot(&browser, "overview-running").await;

        browser.goto(&format!("http://{address}/runs")).await.unwrap();
        screenshot(&browser, "runs").await;
        browser.close().await.unwrap();
    });
    // The API the browser used answers a program the same.
    let answer = request(&address, "GET", "/api/runs?pipeline=big", &[]);
    assert_eq!(answer.status, 401);
}
