//! The Rust project: a Cargo crate on the guest SDK, a workspace of its own so it builds
//! anywhere, with the repository's lock file so it gets the versions the shipped policies use.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use super::{CONVERSATION, File, fill};

const CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml");
const LIB_RS: &str = include_str!("templates/rust/lib.rs");
const MAKEFILE: &str = include_str!("templates/rust/Makefile");
const README: &str = include_str!("templates/rust/README.md");

/// The guest SDK of the clone this binary was built from (the repository is not on crates.io,
/// so a project depends on it by path).
pub(super) fn built_in_sdk() -> anyhow::Result<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk");
    sdk.canonicalize().map_err(|_| {
        anyhow!(
            "the guest SDK this program was built from ({}) is gone: give --sdk PATH/TO/discedge/plugins/sdk",
            sdk.display()
        )
    })
}

/// The project's files; `sdk` must be the `discedge-policy-sdk` crate.
pub(super) fn files(name: &str, sdk: &Path, discedge: &Path) -> anyhow::Result<Vec<File>> {
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("--sdk {}", sdk.display()))?;
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml"))
        .with_context(|| format!("{} has no Cargo.toml", sdk.display()))?;
    if !manifest.contains("name = \"discedge-policy-sdk\"") {
        bail!(
            "{} is not discedge-policy-sdk (plugins/sdk of a DisCEdge clone)",
            sdk.display()
        );
    }
    let sdk_text = toml_string(&sdk.display().to_string());
    let values = [
        ("name", name),
        ("crate", &name.replace('-', "_")),
        ("sdk", sdk_text.as_str()),
        ("discedge", &discedge.display().to_string()),
    ];
    let mut files = vec![
        File {
            path: "Cargo.toml",
            text: fill(CARGO_TOML, &values),
        },
        File {
            path: "src/lib.rs",
            text: fill(LIB_RS, &values),
        },
        File {
            path: "Makefile",
            text: fill(MAKEFILE, &values),
        },
        File {
            path: "README.md",
            text: fill(README, &values),
        },
        File {
            path: "conversation.yml",
            text: fill(CONVERSATION, &values),
        },
        File {
            path: ".gitignore",
            text: "/target\n*.wasm\n".into(),
        },
    ];
    // The clone's lock file: cargo keeps what the project uses of it.
    if let Ok(lock) = std::fs::read_to_string(sdk.join("../../Cargo.lock")) {
        files.push(File {
            path: "Cargo.lock",
            text: lock,
        });
    }
    Ok(files)
}

/// Text for inside a TOML basic string (`"..."`).
fn toml_string(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_depends_on_the_sdk_by_path_in_a_workspace_of_its_own() {
        let sdk = built_in_sdk().unwrap();
        let files = files("my-policy", &sdk, Path::new("/bin/discedge")).unwrap();
        let cargo = &files.iter().find(|f| f.path == "Cargo.toml").unwrap().text;
        assert!(cargo.contains("name = \"my-policy\""), "{cargo}");
        assert!(
            cargo.contains(&format!("path = \"{}\"", sdk.display())),
            "{cargo}"
        );
        assert!(cargo.lines().any(|l| l == "[workspace]"), "{cargo}");
        let make = &files.iter().find(|f| f.path == "Makefile").unwrap().text;
        assert!(
            make.contains("release/my_policy.wasm my-policy.wasm"),
            "{make}"
        );
        assert!(
            files.iter().all(|f| !f.text.contains("{{")),
            "a key was left unfilled"
        );
    }

    #[test]
    fn refuses_a_folder_that_is_not_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"other\"\n",
        )
        .unwrap();
        let err = files("p", dir.path(), Path::new("d"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not discedge-policy-sdk"), "{err}");
    }
}
