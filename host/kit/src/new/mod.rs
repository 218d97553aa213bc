//! `discedge policy new`: a ready policy project, Rust or Python, that builds to a component
//! with one command (`make`) and checks and plays it with another (`make test`).

mod python;
mod rust;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::args::{Lang, NewArgs};

/// The contract, embedded so a Python project gets the exact WIT this binary speaks.
pub const POLICY_WIT: &str = include_str!("../../../../wit/policy.wit");

/// A two-turn conversation every project plays in `make test`.
const CONVERSATION: &str = include_str!("templates/conversation.yml");

/// One file of a project: its path inside the project and its text.
struct File {
    path: &'static str,
    text: String,
}

/// Writes the project and prints what to do next.
pub fn run(args: &NewArgs) -> anyhow::Result<PathBuf> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty: choose another --dir",
            dir.display()
        );
    }
    let discedge = std::env::current_exe()
        .context("cannot find this program's path for the project's Makefile")?;
    let (files, build) = match args.lang {
        Lang::Rust => {
            let sdk = match &args.sdk {
                Some(sdk) => sdk.clone(),
                None => rust::built_in_sdk()?,
            };
            (
                rust::files(&args.name, &sdk, &discedge)?,
                "cargo build --target wasm32-wasip2 --release",
            )
        }
        Lang::Python => (
            python::files(&args.name, &discedge),
            "componentize-py ... componentize app",
        ),
    };
    write_all(&dir, &files)?;
    println!("created {} ({} files)", dir.display(), files.len());
    println!("  cd {}", dir.display());
    println!("  make        # builds {}.wasm ({build})", args.name);
    println!("  make test   # discedge policy check, then discedge policy test conversation.yml");
    Ok(dir)
}

/// Mode names are file stems a client types in `mode`; keep them plain for every language
/// (a Python module or a Cargo package of the same name must be valid too).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "bad policy name {name:?}: use lowercase letters, digits and '-', starting with a letter (at most 64)"
        );
    }
    Ok(())
}

/// Fills a template's `{{key}}`s.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

fn write_all(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    for file in files {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &file.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_mode_names() {
        for good in ["recent", "my-policy", "p2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "My", "2p", "a b", "a_b", "a.b", "-a", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fill_replaces_every_key() {
        assert_eq!(
            fill("{{a}}-{{b}}-{{a}}", &[("a", "1"), ("b", "2")]),
            "1-2-1"
        );
    }

    #[test]
    fn refuses_a_folder_that_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let args = NewArgs {
            name: "p".into(),
            lang: Lang::Python,
            dir: Some(dir.path().to_owned()),
            sdk: None,
        };
        let err = run(&args).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn embedded_wit_is_the_contract() {
        assert!(POLICY_WIT.contains("package discedge:policy@0.2.0;"));
    }
}
