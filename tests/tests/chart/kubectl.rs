//! Every combination applies with real `kubectl` to the kmock API emulator, twice (the second
//! apply changes nothing).

use std::path::PathBuf;

use grantflow_e2e::chart::{Kmock, NAMESPACE};
use serde_json::Value;

use crate::support::{COMBINATIONS, EXTAUTHZ, render};

#[tokio::test(flavor = "multi_thread")]
async fn every_combination_applies_with_kubectl() {
    for file in COMBINATIONS {
        let rendered = render(file);
        let kmock = Kmock::start(&rendered.crd_files).await;
        let apply = |paths: &[PathBuf]| {
            let mut args = vec!["apply", "--validate=false"];
            for p in paths {
                args.push("-f");
                args.push(p.to_str().unwrap());
            }
            kmock.kubectl(&args)
        };
        let crds = apply(&rendered.crd_files);
        assert!(
            crds.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&crds.stderr)
        );
        let first = apply(&rendered.files);
        let stdout = String::from_utf8_lossy(&first.stdout);
        assert!(
            first.status.success(),
            "{file}: kubectl apply failed:\n{stdout}{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let created = stdout.lines().filter(|l| l.ends_with(" created")).count();
        assert_eq!(
            created,
            rendered.objects.len(),
            "{file}: every object created:\n{stdout}"
        );
        // What the server stored is what was applied: a second apply changes nothing. (kubectl
        // always re-sends a PodDisruptionBudget's selector, whose patch strategy is
        // "replace", and reports it "configured"; its stored spec is compared below.)
        let second = apply(&rendered.files);
        let stdout = String::from_utf8_lossy(&second.stdout);
        assert!(second.status.success(), "{file}: {stdout}");
        assert!(
            stdout.lines().all(|l| l.ends_with(" unchanged")
                || (l.starts_with("poddisruptionbudget.policy/") && l.ends_with(" configured"))),
            "{file}: the second apply is a no-op:\n{stdout}"
        );
        for pdb in rendered.of_kind("PodDisruptionBudget") {
            let name = pdb["metadata"]["name"].as_str().unwrap();
            let got = kmock.kubectl(&[
                "get",
                "poddisruptionbudget.policy",
                name,
                "-n",
                NAMESPACE,
                "-o",
                "json",
            ]);
            let got: Value = serde_json::from_slice(&got.stdout).expect("JSON");
            assert_eq!(got["spec"], pdb["spec"], "{file}: {name}");
        }
        // And each object reads back with its namespace.
        let deployment =
            kmock.kubectl(&["get", "deployment", EXTAUTHZ, "-n", NAMESPACE, "-o", "json"]);
        let deployment: Value = serde_json::from_slice(&deployment.stdout).expect("JSON");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"],
            rendered.get("Deployment", EXTAUTHZ)["spec"]["template"]["spec"]["containers"][0]["args"]
        );
    }
}
