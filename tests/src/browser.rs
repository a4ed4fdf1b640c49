//! Running a browser script of `tests/browser/` (Node.js + playwright-core + Chromium) from a
//! test: its input as JSON in `GRANTFLOW_BROWSER_INPUT`, its one JSON result line on stdout,
//! within a time limit; and where its artifacts (screenshots, measurements) go.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Where test artifacts go: `<target>/artifacts/<name>`.
pub fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let dir = target.join("artifacts").join(name);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Runs `tests/browser/<script>` with `input` (plus `chromium`: `CHROMIUM_BIN`, else
/// `/usr/bin/chromium`); returns its JSON result line. Panics when it fails or outlasts
/// `limit` (the child is killed).
pub async fn run_browser(script: &str, input: &Value, limit: Duration) -> Value {
    let path = crate::repo_root().join("tests/browser").join(script);
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut input = input.clone();
    input["chromium"] = json!(chromium);
    let mut child = Command::new("node")
        .arg(&path)
        .env("GRANTFLOW_BROWSER_INPUT", input.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is Node.js installed?)");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let run = async {
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.expect("read stdout");
        (child.wait().await.expect("wait for node"), out)
    };
    let (status, out) = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"));
    assert!(
        status.success(),
        "{script} failed ({status}); see its stderr above"
    );
    let line = out.lines().last().expect("a result line");
    serde_json::from_str(line).expect("the result line is JSON")
}
