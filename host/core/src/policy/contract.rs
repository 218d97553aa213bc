//! The contract versions the host speaks, as generated bindings: `discedge:policy@0.2.0` (the
//! current one, `wit/policy.wit`) and `@0.1.0` (frozen in `wit/0.1.0/`), so components built
//! for the old contract keep serving. Both share one set of Rust types: 0.2.0 only added
//! types, so every 0.1.0 type is a 0.2.0 one with the same shape (wasmtime checks the shape
//! when it links).
//!
//! Only the host imports and the types come from bindgen; the exports are called through
//! [`Exports`], one lookup per component, so a call costs the same on either version.

use wasmtime::component::{Component, ComponentExportIndex};

wasmtime::component::bindgen!({
    path: "../../wit/policy.wit",
    world: "context-policy",
});

/// The frozen 0.1.0 contract: its host interface, linked under its own versioned name.
pub(super) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/0.1.0/policy.wit",
        world: "context-policy",
        with: {
            "discedge:policy/types": super::discedge::policy::types,
        },
    });
}

pub use discedge::policy::host::LogLevel;
pub use discedge::policy::types::{
    Answer, ChatTemplate, CompletionRequest, PolicyError, PolicyInfo, Prepared, Prompt, Reply,
    Settings, Step, TurnInput,
};

/// Which contract a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prepare` returns the prompt at once; it cannot ask for completions.
    V0_1,
    /// `prepare` may ask for completions first (`step`).
    V0_2,
}

impl Version {
    /// The contract's version string, as in the WIT package.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1 => "0.1.0",
            Version::V0_2 => "0.2.0",
        }
    }
}

/// The versions the host serves, newest first, for error messages.
pub const SPOKEN: &str = "discedge:policy@0.2.0 and @0.1.0";

/// Where a component's contract functions are: found once when it is loaded.
#[derive(Clone)]
pub struct Exports {
    pub version: Version,
    pub info: ComponentExportIndex,
    pub prepare: ComponentExportIndex,
    pub commit: ComponentExportIndex,
    /// The optional `history` interface's `render`.
    pub render: Option<ComponentExportIndex>,
}

impl Exports {
    /// Finds the contract's functions, preferring the newest version the component exports.
    pub fn find(component: &Component) -> anyhow::Result<Self> {
        for version in [Version::V0_2, Version::V0_1] {
            let v = version.as_str();
            let Some(policy) =
                component.get_export_index(None, format!("discedge:policy/policy@{v}"))
            else {
                continue;
            };
            let function = |name: &str| {
                component
                    .get_export_index(Some(&policy), name)
                    .ok_or_else(|| anyhow::anyhow!("no discedge:policy/policy@{v}#{name}"))
            };
            let render = match component
                .get_export_index(None, format!("discedge:policy/history@{v}"))
            {
                None => None,
                // Exported, so it must be the contract's: a broken one is refused, not ignored.
                Some(history) => Some(
                    component
                        .get_export_index(Some(&history), "render")
                        .ok_or_else(|| anyhow::anyhow!("no discedge:policy/history@{v}#render"))?,
                ),
            };
            return Ok(Self {
                version,
                info: function("info")?,
                prepare: function("prepare")?,
                commit: function("commit")?,
                render,
            });
        }
        anyhow::bail!("exports no discedge:policy/policy interface of a version the host speaks")
    }
}
