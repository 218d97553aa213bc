//! The operator's endpoints (`/admin/...`, `/metrics`, `/policies`) answer to the operator's
//! key when one is set, not to a user's API key nor to no key. Uses `FakeLlm`, a FAKE
//! llama-server.

mod common;

use common::{ALICE_KEY, start_proxy};
use discedge_lab::fake_llm::FakeLlm;

const OPERATOR_KEY: &str = "operator-key-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn operator_endpoints_need_the_operator_key() {
    let llama = FakeLlm::start().await.unwrap();
    let keys = common::api_keys();
    let proxy = start_proxy(&[
        "--llama-url",
        &llama.url,
        "--api-keys",
        &keys,
        "--operator-key",
        OPERATOR_KEY,
    ])
    .await;
    let client = common::client();
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/policies"),
        ("POST", "/admin/policies/reload"),
    ] {
        let url = format!("{}{path}", proxy.url);
        let method: reqwest::Method = method.parse().unwrap();
        for key in [None, Some(ALICE_KEY), Some("operator-key-wrong-000")] {
            let mut request = client.request(method.clone(), &url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let reply = request.send().await.unwrap();
            assert_eq!(reply.status(), 401, "{path} with {key:?}");
            let body: serde_json::Value = reply.json().await.unwrap();
            assert_eq!(common::error_code(&body), "unauthorized", "{path}: {body}");
        }
        let reply = client
            .request(method.clone(), &url)
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{path} with the operator key");
        let reply = client
            .request(method, &url)
            .header("x-api-key", OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            reply.status(),
            200,
            "{path} with the operator key as X-API-Key"
        );
    }
    // Health stays open, for load balancers.
    let reply = client
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
}
