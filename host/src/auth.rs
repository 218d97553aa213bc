//! Optional API keys: when configured, a request's user is the key's user, so a `user_id`
//! cannot simply be claimed.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;

/// Key -> user. Empty means no keys: requests name their `user_id` themselves.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    users: HashMap<String, String>,
}

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
            if key.len() < 16 || user.is_empty() {
                return Err(format!(
                    "API key for {user:?}: keys need at least 16 characters and a user"
                ));
            }
            users.insert(key.to_owned(), user.to_owned());
        }
        Ok(Self { users })
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
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let key = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        match key.and_then(|key| self.users.get(key.trim())) {
            Some(user) => Ok(Some(user)),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY, or X-API-Key)",
            )),
        }
    }
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
