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
//! A message is text, or a map that also says what its answer should mention (a planted-fact
//! check): `{say: "What is my dog called?", expect: ["Biscuit", "Bisc"]}`. The turn *recalls*
//! when the reply's `content` holds any alternative, compared case-insensitively; `expect` may
//! also be one string.
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
    /// Per message, the alternatives its answer should mention; empty for no check.
    pub expects: Vec<Vec<String>>,
}

/// The YAML as written; unknown keys are refused so that a misspelt `messages` is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    model_name: Option<String>,
    user_id: Option<String>,
    messages: Option<Vec<serde_yaml::Value>>,
    locations: Option<Vec<RawLocation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    name: String,
    api_url: Option<String>,
    messages: Vec<serde_yaml::Value>,
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
                let (messages, expects) = read_messages(messages, "`messages`")?;
                let local = Leg {
                    node: "local".into(),
                    api_url: None,
                    messages,
                    expects,
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
                    let (messages, expects) = read_messages(location.messages, &what)?;
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
                        messages,
                        expects,
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

    /// Messages that carry a planted-fact check (`expect`).
    pub fn checks(&self) -> usize {
        let expects = self.legs.iter().flat_map(|l| &l.expects);
        expects.filter(|e| !e.is_empty()).count()
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

/// A list of messages as written: each text, or `{say: TEXT, expect: ALTERNATIVES}`.
fn read_messages(
    raw: Vec<serde_yaml::Value>,
    what: &str,
) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    if raw.is_empty() {
        bail!("{what} has no messages");
    }
    let mut messages = Vec::with_capacity(raw.len());
    let mut expects = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        let (message, expect) =
            read_message(value).with_context(|| format!("{what}: message {}", i + 1))?;
        if message.trim().is_empty() {
            bail!("{what}: message {} is empty", i + 1);
        }
        messages.push(message);
        expects.push(expect);
    }
    Ok((messages, expects))
}

/// One message: its text and the alternatives its answer should mention.
fn read_message(value: serde_yaml::Value) -> anyhow::Result<(String, Vec<String>)> {
    use serde_yaml::Value;
    let map = match value {
        Value::Mapping(map) => map,
        other => return Ok((scalar(other).context("is not text")?, Vec::new())),
    };
    let (mut say, mut expect) = (None, Vec::new());
    for (key, value) in map {
        match key.as_str() {
            Some("say") => say = Some(scalar(value).context("`say` is not text")?),
            Some("expect") => {
                let alternatives = match value {
                    Value::Sequence(list) => list,
                    one => vec![one],
                };
                if alternatives.is_empty() {
                    bail!("`expect` is empty: give one or more alternatives, or leave it out");
                }
                for (j, alternative) in alternatives.into_iter().enumerate() {
                    let text = scalar(alternative)
                        .with_context(|| format!("`expect` alternative {} is not text", j + 1))?;
                    if text.trim().is_empty() {
                        bail!("`expect` alternative {} is empty", j + 1);
                    }
                    expect.push(text);
                }
            }
            _ => bail!(
                "unknown key {} (a message is text, or a map with `say` and `expect`)",
                serde_yaml::to_string(&key).map_or("?".into(), |k| format!("`{}`", k.trim()))
            ),
        }
    }
    let say = say.context("has no `say`")?;
    if say.trim().is_empty() {
        bail!("`say` is empty");
    }
    Ok((say, expect))
}

/// A YAML scalar as text: a string, or a number (`expect: [86]`).
fn scalar(value: serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a reply mentions any of the alternatives (case-insensitive substrings); `None` when
/// there is nothing to check.
pub fn recalls(expect: &[String], reply: &str) -> Option<bool> {
    if expect.is_empty() {
        return None;
    }
    let reply = reply.to_lowercase();
    Some(expect.iter().any(|e| reply.contains(&e.to_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(yaml: &str) -> String {
        format!("{:#}", Scenario::parse(yaml).unwrap_err())
    }

    #[test]
    fn messages_may_carry_checks() {
        let s = Scenario::parse(
            "name: x\nmessages:\n  - plain text\n  - {say: \"What is my dog called?\", expect: [Biscuit, Bisky]}\n  - say: How big is the flat?\n    expect: 86\n  - {say: only say}\n",
        )
        .unwrap();
        let leg = &s.legs[0];
        assert_eq!(
            leg.messages,
            [
                "plain text",
                "What is my dog called?",
                "How big is the flat?",
                "only say"
            ]
        );
        let none: Vec<String> = Vec::new();
        assert_eq!(
            leg.expects,
            [
                none.clone(),
                vec!["Biscuit".into(), "Bisky".into()],
                vec!["86".into()],
                none
            ]
        );
        assert_eq!((s.turns(), s.checks()), (4, 2));

        let roaming = Scenario::parse(
            "name: r\nlocations:\n  - {name: A, messages: [a, {say: b, expect: B}]}\n  - {name: B, messages: [{say: c, expect: [C, D]}]}\n",
        )
        .unwrap();
        assert_eq!(roaming.checks(), 2);
        assert_eq!(roaming.legs[1].messages, ["c"]);
        assert_eq!(roaming.legs[1].expects, [vec!["C".to_string(), "D".into()]]);
    }

    #[test]
    fn bad_checks_are_refused_with_a_reason() {
        let cases = [
            (
                "messages: [{say: a, expct: [b]}]",
                "`messages`: message 1: unknown key `expct` (a message is text, or a map with `say` and `expect`)",
            ),
            (
                "messages: [a, {say: \" \", expect: b}]",
                "`messages`: message 2: `say` is empty",
            ),
            (
                "messages: [{expect: b}]",
                "`messages`: message 1: has no `say`",
            ),
            (
                "messages: [{say: a, expect: []}]",
                "message 1: `expect` is empty",
            ),
            (
                "messages: [{say: a, expect: \"\"}]",
                "message 1: `expect` alternative 1 is empty",
            ),
            (
                "messages: [{say: a, expect: [b, \" \"]}]",
                "message 1: `expect` alternative 2 is empty",
            ),
            (
                "messages: [{say: a, expect: [[b]]}]",
                "message 1: `expect` alternative 1 is not text",
            ),
            (
                "messages: [{say: [a], expect: b}]",
                "message 1: `say` is not text",
            ),
            ("messages: [a, ~]", "`messages`: message 2: is not text"),
            (
                "locations: [{name: A, messages: [{say: a, expect: []}]}]",
                "location 1 (\"A\"): message 1: `expect` is empty",
            ),
        ];
        for (messages, why) in cases {
            let error = refused(&format!("name: x\n{messages}\n"));
            assert!(error.contains(why), "{messages}: {error}");
        }
    }

    #[test]
    fn recall_is_any_alternative_ignoring_case() {
        let expect = ["Biscuit".to_string(), "18,500".into()];
        assert_eq!(recalls(&expect, "Your dog is called BISCUIT."), Some(true));
        assert_eq!(recalls(&expect, "about 18,500 euros"), Some(true));
        assert_eq!(
            recalls(&expect, "18500 euros, and a dog named Bisc"),
            Some(false)
        );
        assert_eq!(recalls(&expect, ""), Some(false));
        assert_eq!(recalls(&[], "Biscuit"), None);
        assert_eq!(recalls(&["Ljubljana".into()], "LJUBLJANA"), Some(true));
        assert_eq!(recalls(&["Žiga".into()], "ask žiga"), Some(true));
    }
}
