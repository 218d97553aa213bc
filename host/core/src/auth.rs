//! Optional API keys: when configured, a request's user is the key's user, so a `user_id`
//! cannot simply be claimed. The keys and the rules live here; reading a key from a request
//! is the HTTP layer's (its `auth` module).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{Error, Kind};

/// Key -> user. Empty means no keys: requests name their `user_id` themselves.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    users: HashMap<String, String>,
    /// The operator's key (`--operator-key`), for the endpoints that change or reveal the
    /// node: reloading policies, metrics, the policy list. A user's key does not open them.
    operator: Option<String>,
}

/// Shortest key accepted, for users and the operator alike.
const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Reads `KEY=USER` entries separated by commas or new lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for entry in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .flat_map(|l| l.split(','))
        {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (key, user) = entry
                .split_once('=')
                .ok_or_else(|| format!("API key entry {entry:?} is not KEY=USER"))?;
            let (key, user) = (key.trim(), user.trim());
            if key.len() < MIN_KEY_LEN || user.is_empty() {
                return Err(format!(
                    "API key for {user:?}: keys need at least 16 characters and a user"
                ));
            }
            users.insert(key.to_owned(), user.to_owned());
        }
        Ok(Self {
            users,
            operator: None,
        })
    }

    /// Sets the operator's key (see [`ApiKeys::operator_of`]).
    pub fn with_operator_key(mut self, key: &str) -> Result<Self, String> {
        let key = key.trim();
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "the operator key needs at least {MIN_KEY_LEN} characters"
            ));
        }
        if self.users.contains_key(key) {
            return Err("the operator key is also a user's API key".into());
        }
        self.operator = Some(key.to_owned());
        Ok(self)
    }

    /// May this request use the operator's endpoints (`/admin/...`)? With an operator key,
    /// only if it carries that key (401 otherwise); without one, only from this machine
    /// (a loopback `peer`; 403 otherwise), so a node is never open to the network for them.
    pub fn operator_of(&self, key: Option<&str>, peer: Option<IpAddr>) -> Result<(), Error> {
        match &self.operator {
            Some(operator) => match key {
                Some(key) if same_key(key, operator) => Ok(()),
                _ => Err(Error::new(
                    Kind::Unauthorized,
                    "unauthorized",
                    "the operator key is required (Authorization: Bearer KEY, or X-API-Key)",
                )),
            },
            None if peer.is_some_and(|ip| ip.is_loopback()) => Ok(()),
            None => Err(Error::new(
                Kind::Forbidden,
                "operator_only",
                "this endpoint answers only on loopback unless --operator-key is set",
            )),
        }
    }

    /// May this request read what the node reveals about itself (`/metrics`, `/policies`)?
    /// Open on a node without keys, as every endpoint is; with user keys or an operator key,
    /// the same rule as [`ApiKeys::operator_of`].
    pub fn monitor_of(&self, key: Option<&str>, peer: Option<IpAddr>) -> Result<(), Error> {
        if self.users.is_empty() && self.operator.is_none() {
            return Ok(());
        }
        self.operator_of(key, peer)
    }

    /// No user keys: requests name their `user_id` themselves.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a request acts as: `None` when no keys are configured; 401 when keys are
    /// configured and the request carries no known key (`Authorization: Bearer KEY` or `X-API-Key`).
    pub fn caller_of(&self, key: Option<&str>) -> Result<Option<&str>, Error> {
        if self.users.is_empty() {
            return Ok(None);
        }
        match key.and_then(|key| self.users.get(key)) {
            Some(user) => Ok(Some(user)),
            None => Err(Error::new(
                Kind::Unauthorized,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY, or X-API-Key)",
            )),
        }
    }
}

/// Compares keys in time that depends on their length only, not on where they differ.
fn same_key(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}
