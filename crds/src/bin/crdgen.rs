//! Prints the CRDs of `session.grantflow.io` as YAML, or with `--write` rewrites the committed
//! files (`crds/*.yaml` and `charts/grantflow-session/crds/*.yaml`, from the repository root).
//!
//! ```text
//! cargo run -p grantflow-crds --bin crdgen            # print both CRDs
//! cargo run -p grantflow-crds --bin crdgen -- --write # regenerate the committed files
//! ```

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let docs: Vec<String> = grantflow_crds::crd_files()
                .into_iter()
                .map(|(_, yaml)| yaml)
                .collect();
            print!("{}", docs.join("---\n"));
            ExitCode::SUCCESS
        }
        [flag] if flag == "--write" => {
            // The checkout `cargo run` runs in, not the one the binary was built from.
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
            let root = Path::new(&manifest)
                .parent()
                .expect("crds/ is in the repository");
            for dir in grantflow_crds::CRD_DIRS {
                let dir = root.join(dir);
                if let Err(error) = std::fs::create_dir_all(&dir) {
                    eprintln!("error: cannot create {}: {error}", dir.display());
                    return ExitCode::FAILURE;
                }
                for (name, yaml) in grantflow_crds::crd_files() {
                    let path = dir.join(name);
                    if let Err(error) = std::fs::write(&path, yaml) {
                        eprintln!("error: cannot write {}: {error}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("wrote {}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: crdgen [--write]");
            ExitCode::from(2)
        }
    }
}
