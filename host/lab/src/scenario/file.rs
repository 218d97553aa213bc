//! The scenario file: the original DisCEdge YAML format, read and checked before any request
//! is sent, so a typo costs an error message and not a half-finished run.
//!
//! ```yaml
//! name: "Bread baking"
//! model_name: "SmolLM2-135M-Instruct"   # informational
//! user_id: "baker"
//! messages: ["How do I start a sourdough starter?", "How often do I feed it?"]
//! ```
//!
//! or, for a client that roams between nodes, `locations` walked in order:
//!
//! ```yaml
//! locations:
//!   - {name: Node1, api_url: "http://127.0.0.1:8081/completion", messages: ["...", "..."]}
//!   - {name: Node2, api_url: "http://127.0.0.1:8082/completion", messages: ["..."]}
//! ```

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A checked scenario: at least one leg, every leg with at least one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub model_name: Option<String>,
    pub user_id: Option<String>,
    /// The conversation as the client walks it: one leg for a plain `messages` file.
    pub legs: Vec<Leg>,
    /// Whether the file used the roaming `locations` form.
    pub roaming: bool,
}

/// Consecutive turns sent to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The location's name, or `local` for a plain `messages` file.
    pub node: String,
    /// The node's full `/completion` URL, if the file gives one.
    pub api_url: Option<String>,
    pub messages: Vec<String>,
}

/// The YAML as written; unknown keys are refused so that a misspelt `messages` is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    model_name: Option<String>,
    user_id: Option<String>,
    messages: Option<Vec<String>>,
    locations: Option<Vec<RawLocation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    name: String,
    api_url: Option<String>,
    messages: Vec<String>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and checks scenario YAML.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let raw: RawScenario = serde_yaml::from_str(text).context("not a valid scenario YAML")?;
        if raw.name.trim().is_empty() {
            bail!("`name` is empty");
        }
        let (legs, roaming) = match (raw.messages, raw.locations) {
            (Some(_), Some(_)) => bail!("give either `messages` or `locations`, not both"),
            (None, None) => bail!("no `messages` and no `locations`: nothing to send"),
            (Some(messages), None) => {
                check_messages(&messages, "`messages`")?;
                let local = Leg {
                    node: "local".into(),
                    api_url: None,
                    messages,
                };
                (vec![local], false)
            }
            (None, Some(locations)) => {
                if locations.is_empty() {
                    bail!("`locations` is empty");
                }
                let mut legs = Vec::with_capacity(locations.len());
                for (i, location) in locations.into_iter().enumerate() {
                    let what = format!("location {} ({:?})", i + 1, location.name);
                    if location.name.trim().is_empty() {
                        bail!("location {} has an empty `name`", i + 1);
                    }
                    check_messages(&location.messages, &what)?;
                    if location
                        .api_url
                        .as_ref()
                        .is_some_and(|u| u.trim().is_empty())
                    {
                        bail!("{what} has an empty `api_url`");
                    }
                    legs.push(Leg {
                        node: location.name,
                        api_url: location.api_url,
                        messages: location.messages,
                    });
                }
                (legs, true)
            }
        };
        Ok(Self {
            name: raw.name,
            model_name: raw.model_name,
            user_id: raw.user_id,
            legs,
            roaming,
        })
    }

    /// Turns in one walk of the scenario.
    pub fn turns(&self) -> usize {
        self.legs.iter().map(|l| l.messages.len()).sum()
    }

    /// The nodes visited, each once, in the order first visited.
    pub fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = Vec::new();
        for leg in &self.legs {
            if !nodes.contains(&leg.node.as_str()) {
                nodes.push(&leg.node);
            }
        }
        nodes
    }

    /// The name as a file-name part: lowercase letters and digits joined by single dashes.
    pub fn slug(&self) -> String {
        let mut slug = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        if slug.is_empty() {
            "scenario".into()
        } else {
            slug.into()
        }
    }
}

fn check_messages(messages: &[String], what: &str) -> anyhow::Result<()> {
    if messages.is_empty() {
        bail!("{what} has no messages");
    }
    if let Some(i) = messages.iter().position(|m| m.trim().is_empty()) {
        bail!("{what}: message {} is empty", i + 1);
    }
    Ok(())
}
