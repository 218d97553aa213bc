//! Reads a request's API key from its headers and checks it with the node's [`ApiKeys`];
//! refusals become HTTP errors here.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};

use crate::error::ApiError;
use discedge_core::auth::ApiKeys;

/// [`ApiKeys`]' checks for an HTTP request: the key comes from its headers.
pub trait RequestKeys {
    /// The user a request acts as (see [`ApiKeys::caller_of`]).
    fn caller(&self, headers: &HeaderMap) -> Result<Option<&str>, ApiError>;
    /// May this request use the operator's endpoints (see [`ApiKeys::operator_of`])?
    fn operator(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError>;
    /// May this request read the node's own figures (see [`ApiKeys::monitor_of`])?
    fn monitor(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError>;
}

impl RequestKeys for ApiKeys {
    fn caller(&self, headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
        Ok(self.caller_of(presented_key(headers))?)
    }

    fn operator(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        Ok(self.operator_of(presented_key(headers), peer)?)
    }

    fn monitor(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        Ok(self.monitor_of(presented_key(headers), peer)?)
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
            axum::http::StatusCode::UNAUTHORIZED
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
            assert_eq!(refused.status, axum::http::StatusCode::FORBIDDEN);
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
                assert_eq!(
                    refused.status,
                    axum::http::StatusCode::UNAUTHORIZED,
                    "{wrong}"
                );
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
