//! Prometheus's own `promtool` (built from the pinned Go module by `scripts/build-promtool.sh`;
//! `scripts/test.sh` exports its path as PROMTOOL_BIN): what the alert and dashboard tests
//! check rules with, and the names of GrantFlow metrics an expression reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use grantflow_e2e::repo_root;

/// The promtool binary: PROMTOOL_BIN, else where `scripts/build-promtool.sh` caches it.
pub fn promtool() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMTOOL_BIN") {
        return PathBuf::from(bin);
    }
    let go_mod = std::fs::read_to_string(repo_root().join("tests/promtool/go.mod"))
        .expect("tests/promtool/go.mod");
    let version = go_mod
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| {
            (words.next() == Some("github.com/prometheus/prometheus"))
                .then(|| words.next())
                .flatten()
        })
        .expect("tests/promtool/go.mod pins github.com/prometheus/prometheus");
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = PathBuf::from(home).join(format!(
        ".cache/grantflow/tools/promtool-{version}/promtool"
    ));
    assert!(
        bin.is_file(),
        "promtool is missing at {}: run scripts/build-promtool.sh (or set PROMTOOL_BIN)",
        bin.display()
    );
    bin
}

/// Runs `promtool <args>` in `dir`; whether it succeeded, and everything it printed.
pub fn run(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `promtool check rules --lint=all --lint-fatal` of the rule file `groups` (a
/// `{groups: [...]}` document) written into `dir` as `name`; panics with promtool's output when
/// it refuses (a lint finding, such as a duplicate rule, is fatal too).
pub fn check_rules(dir: &Path, name: &str, groups: &serde_json::Value) -> String {
    let file = dir.join(name);
    std::fs::write(&file, serde_yaml::to_string(groups).expect("YAML")).expect("write rules");
    let (ok, output) = run(dir, &["check", "rules", "--lint=all", "--lint-fatal", name]);
    assert!(ok, "promtool check rules {name} failed:\n{output}");
    output
}

/// The GrantFlow metric names an expression reads: every identifier starting `grantflow_`
/// (every metric of both binaries has that prefix; label values are quoted and skipped).
pub fn grantflow_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut quoted = false;
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' && (i == 0 || bytes[i - 1] != b'\\') {
            quoted = !quoted;
            i += 1;
            continue;
        }
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !quoted && starts_word && expr[i..].starts_with("grantflow_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |n| i + n);
            names.insert(expr[i..end].to_owned());
            i = end;
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn grantflow_names_finds_metrics_not_label_values() {
    let names = grantflow_names(
        r#"sum(rate(grantflow_checks_total{outcome="grantflow_x"}[5m])) / on() grantflow_store_resets"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["grantflow_checks_total", "grantflow_store_resets"]
    );
}
