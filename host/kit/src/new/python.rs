//! The Python project: `app.py` (a class implementing the contract), the WIT embedded in
//! this binary, and a Makefile around componentize-py.

use std::path::Path;

use super::{CONVERSATION, File, POLICY_WIT, fill};

const APP_PY: &str = include_str!("templates/python/app.py");
const MAKEFILE: &str = include_str!("templates/python/Makefile");
const README: &str = include_str!("templates/python/README.md");

/// The project's files.
pub(super) fn files(name: &str, discedge: &Path) -> Vec<File> {
    let values = [
        ("name", name),
        ("discedge", &discedge.display().to_string()),
    ];
    vec![
        File {
            path: "app.py",
            text: fill(APP_PY, &values),
        },
        File {
            path: "wit/policy.wit",
            text: POLICY_WIT.to_owned(),
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
            text: "*.wasm\n__pycache__/\n".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_has_the_contract_and_no_unfilled_keys() {
        let files = files("py-policy", Path::new("/bin/discedge"));
        let wit = &files
            .iter()
            .find(|f| f.path == "wit/policy.wit")
            .unwrap()
            .text;
        assert_eq!(wit, POLICY_WIT);
        let app = &files.iter().find(|f| f.path == "app.py").unwrap().text;
        assert!(app.contains("class Policy(exports.Policy)"), "{app}");
        assert!(
            files.iter().all(|f| !f.text.contains("{{")),
            "a key was left unfilled"
        );
    }
}
