//! Optional API keys: when configured, a request's user is the key's user, so a `user_id`
//! cannot simply be claimed.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;

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

    /// Sets the operator's key (see [`ApiKeys::operator`]).
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
    pub fn operator(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        match &self.operator {
            Some(operator) => match presented_key(headers) {
                Some(key) if same_key(key, operator) => Ok(()),
                _ => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the operator key is required (Authorization: Bearer KEY, or X-API-Key)",
                )),
            },
            None if peer.is_some_and(|ip| ip.is_loopback()) => Ok(()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                "this endpoint answers only on loopback unless --operator-key is set",
            )),
        }
    }

    /// May this request read what the node reveals about itself (`/metrics`, `/policies`)?
    /// Open on a node without keys, as every endpoint is; with user keys or an operator key,
    /// the same rule as [`ApiKeys::operator`].
    pub fn monitor(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        if self.users.is_empty() && self.operator.is_none() {
            return Ok(());
        }
        self.operator(headers, peer)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a request acts as: `None` when no keys are configured; 401 when keys are
    /// configured and the request carries no known key (`Authorization: Bearer KEY` or `X-API-Key`).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
        if self.users.is_empty() {
            return Ok(None);
        }
        match presented_key(headers).and_then(|key| self.users.get(key)) {
            Some(user) => Ok(Some(user)),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY, or X-API-Key)",
            )),
        }
    }
}

/// The key a request carries: `Authorization: Bearer KEY`, else `X-API-Key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_checks_headers() {
        let keys =
            ApiKeys::parse("# operators\nkey-of-alice-0001=alice, key-of-bob-00002=bob\n").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            keys.caller(&headers).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        headers.insert(
            header::AUTHORIZATION,
            "Bearer key-of-alice-0001".parse().unwrap(),
        );
        assert_eq!(keys.caller(&headers).unwrap(), Some("alice"));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "key-of-bob-00002".parse().unwrap());
        assert_eq!(keys.caller(&headers).unwrap(), Some("bob"));
        headers.insert("x-api-key", "wrong-key-000000".parse().unwrap());
        assert!(keys.caller(&headers).is_err());
        assert_eq!(ApiKeys::default().caller(&HeaderMap::new()).unwrap(), None);
        assert!(ApiKeys::parse("short=alice").is_err());
        assert!(ApiKeys::parse("no-user-separator-here").is_err());
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn without_an_operator_key_admin_answers_only_on_loopback() {
        let none = HeaderMap::new();
        for keys in [
            ApiKeys::default(),
            ApiKeys::parse("key-of-alice-0001=alice").unwrap(),
        ] {
            assert!(keys.operator(&none, LOCAL).is_ok());
            let refused = keys.operator(&none, REMOTE).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN);
            assert!(keys.operator(&none, None).is_err(), "unknown peer");
            assert!(keys.operator(&bearer("key-of-alice-0001"), REMOTE).is_err());
        }
    }

    #[test]
    fn monitoring_is_open_only_on_a_node_without_keys() {
        let none = HeaderMap::new();
        assert!(ApiKeys::default().monitor(&none, REMOTE).is_ok());
        let keys = ApiKeys::parse("key-of-alice-0001=alice").unwrap();
        assert!(keys.monitor(&none, REMOTE).is_err());
        assert!(keys.monitor(&bearer("key-of-alice-0001"), REMOTE).is_err());
        assert!(keys.monitor(&none, LOCAL).is_ok());
    }

    #[test]
    fn the_operator_key_opens_admin_from_anywhere_and_nothing_else_does() {
        let keys = ApiKeys::parse("key-of-alice-0001=alice")
            .unwrap()
            .with_operator_key("operator-key-00001")
            .unwrap();
        for peer in [LOCAL, REMOTE] {
            assert!(keys.operator(&bearer("operator-key-00001"), peer).is_ok());
            assert!(keys.monitor(&bearer("operator-key-00001"), peer).is_ok());
            for wrong in [
                "key-of-alice-0001",
                "operator-key-00002",
                "operator-key-0000",
            ] {
                let refused = keys.operator(&bearer(wrong), peer).unwrap_err();
                assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{wrong}");
            }
            assert!(keys.operator(&HeaderMap::new(), peer).is_err());
        }
        assert!(ApiKeys::default().with_operator_key("short").is_err());
        assert!(
            ApiKeys::parse("key-of-alice-0001=alice")
                .unwrap()
                .with_operator_key("key-of-alice-0001")
                .is_err()
        );
    }
}
