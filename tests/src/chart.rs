//! The Helm chart (`charts/grantflow-session`) under test: rendered by Helm's own engine
//! (helm-python-sdk, through `tests/chart/helm.py`) and checked by `kubernetes-validate`; the
//! chart tests apply it with real `kubectl` to the real API server of
//! [`crate::control_plane`]. The Python tools come from `<repo>/.venv`
//! (scripts/install-test-tools.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use crate::repo_root;

/// Release name and namespace the tests render with.
pub const RELEASE: &str = "grantflow-session";
pub const NAMESPACE: &str = "grantflow-system";

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/grantflow-session")
}

/// A values file of the chart's `ci/` directory.
pub fn ci_values(name: &str) -> PathBuf {
    let path = chart_dir().join("ci").join(name);
    assert!(path.is_file(), "{} exists", path.display());
    path
}

/// A tool of the test venv (`.venv/bin/<name>`), else `<name>` from PATH.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}

use tempfile::TempDir;

/// Runs a command to completion; panics when it cannot be started.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn helm_py(
    command: &str,
    namespace: &str,
    values: &[&Path],
    set: Option<&Value>,
    out: Option<&Path>,
) -> Value {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(repo_root().join("tests/chart/helm.py"))
        .arg(command)
        .arg(chart_dir())
        .args(["--name", RELEASE, "--namespace", namespace]);
    for file in values {
        cmd.arg("--values").arg(file);
    }
    if let Some(set) = set {
        cmd.arg("--set-json").arg(set.to_string());
    }
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    let output = run(&mut cmd);
    assert!(
        output.status.success(),
        "helm.py {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "helm.py {command} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The manifests of one `helm template`-like render.
pub struct Rendered {
    /// One file per non-empty template.
    pub files: Vec<PathBuf>,
    /// The chart's CRDs (Helm installs them before the templates).
    pub crd_files: Vec<PathBuf>,
    /// Every rendered object; `__template` names its template.
    pub objects: Vec<Value>,
    pub notes: String,
    pub dir: TempDir,
}

impl Rendered {
    /// The object of `kind` named `name`; panics when there is none.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} among {}", self.summary()))
    }

    /// The objects of the template whose path ends with `suffix`, without the `__template`
    /// key (ready to apply).
    pub fn template_objects(&self, suffix: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|o| {
                o["__template"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(suffix))
            })
            .map(|o| {
                let mut o = o.clone();
                if let Some(object) = o.as_object_mut() {
                    object.remove("__template");
                }
                o
            })
            .collect()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .objects
            .iter()
            .filter_map(|o| o["kind"].as_str().map(str::to_owned))
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// `Kind/name` of every object.
    pub fn summary(&self) -> String {
        let names: Vec<String> = self
            .objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect();
        names.join(", ")
    }

    /// The container `name` of a workload's pod template.
    pub fn container<'a>(&self, workload: &'a Value, name: &str) -> &'a Value {
        workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
    }

    /// The Secret key a container sees at the file `path`: `(secret name, key, mount)`, where
    /// `mount` is the container's volumeMounts entry. None when no Secret volume mounted in
    /// `container` of `workload` projects a key to `path`.
    pub fn secret_file<'a>(
        &self,
        workload: &'a Value,
        container: &str,
        path: &str,
    ) -> Option<(String, String, &'a Value)> {
        let volumes = workload["spec"]["template"]["spec"]["volumes"].as_array()?;
        let mounts = self.container(workload, container)["volumeMounts"].as_array()?;
        mounts.iter().find_map(|mount| {
            let dir = mount["mountPath"].as_str()?.trim_end_matches('/');
            let relative = path.strip_prefix(dir)?.strip_prefix('/')?;
            let volume = volumes.iter().find(|v| v["name"] == mount["name"])?;
            let secret = &volume["secret"];
            let name = secret["secretName"].as_str()?.to_owned();
            let key = match secret["items"].as_array() {
                // Only the listed keys, each at its path.
                Some(items) => items.iter().find(|item| item["path"] == relative)?["key"]
                    .as_str()?
                    .to_owned(),
                // Every key, at its own name.
                None => relative.to_owned(),
            };
            Some((name, key, mount))
        })
    }
}

/// Renders the chart into [`NAMESPACE`] with these values files (merged in order) and `set`
/// merged last. Err: the message of a failing template or schema check.
pub fn render(values: &[&Path], set: Option<&Value>) -> Result<Rendered, String> {
    render_in(NAMESPACE, values, set)
}

/// [`render`] with `namespace` as the release namespace.
pub fn render_in(
    namespace: &str,
    values: &[&Path],
    set: Option<&Value>,
) -> Result<Rendered, String> {
    let dir = crate::temp_dir("render");
    let result = helm_py("render", namespace, values, set, Some(dir.path()));
    if let Some(error) = result["error"].as_str() {
        return Err(error.to_owned());
    }
    let paths = |key: &str| -> Vec<PathBuf> {
        result[key]
            .as_array()
            .expect("a list of files")
            .iter()
            .map(|p| PathBuf::from(p.as_str().expect("a path")))
            .collect()
    };
    Ok(Rendered {
        files: paths("files"),
        crd_files: paths("crd_files"),
        objects: result["objects"].as_array().expect("objects").clone(),
        notes: result["notes"].as_str().unwrap_or_default().to_owned(),
        dir,
    })
}

/// `helm lint --strict` with these values: `{messages: [{severity, path, error}], errors}`.
pub fn lint(values: &[&Path], set: Option<&Value>) -> Value {
    helm_py("lint", NAMESPACE, values, set, None)
}

/// Validates the values against `values.schema.json`; Err: Helm's message.
pub fn check_schema(values: &[&Path], set: Option<&Value>) -> Result<(), String> {
    let result = helm_py("schema", NAMESPACE, values, set, None);
    match result["error"].as_str() {
        Some(error) => Err(error.to_owned()),
        None => Ok(()),
    }
}

/// The CRDs Helm loads from the chart: `[{name, filename, data}]`.
pub fn chart_crds() -> Vec<Value> {
    helm_py("crds", NAMESPACE, &[], None, None)["crds"]
        .as_array()
        .expect("crds")
        .clone()
}

/// The YAML documents of `file`, as JSON values.
pub fn yaml_file(file: &Path) -> Vec<Value> {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(repo_root().join("tests/chart/helm.py"))
        .arg("yaml")
        .arg(file);
    let output = run(&mut cmd);
    assert!(
        output.status.success(),
        "cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).expect("helm.py yaml prints JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// Standard base64 that decodes with or without padding, as in Secret data and caBundle.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard base64 (with or without padding; whitespace is ignored), as in Secret data
/// and caBundle.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let compact: String = text.split_ascii_whitespace().collect();
    BASE64
        .decode(&compact)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// A Secret's `data[key]`, decoded as UTF-8.
pub fn secret_value(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {} has no {key}", secret["metadata"]["name"]));
    String::from_utf8(base64_decode(encoded)).expect("UTF-8 secret")
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGVsbG8h"), b"hello!");
        assert_eq!(super::base64_decode("aGk"), b"hi");
        assert_eq!(super::base64_decode(""), b"");
    }
}
