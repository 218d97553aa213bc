//! `GET /openapi.json` documents exactly the routes the proxy serves: every documented
//! operation is answered by its handler, and every route is documented.
//! Uses `FakeLlm`, a FAKE llama-server, since no model is involved.

mod common;

use std::collections::BTreeSet;

use common::start_proxy;
use discedge_lab::fake_llm::FakeLlm;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_served_spec_matches_the_routes() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = start_proxy(&["--llama-url", &llama.url]).await;
    let reply = common::client()
        .get(format!("{}/openapi.json", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let spec: Value = reply.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    let methods = ["get", "post", "put", "patch", "delete"];
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = discedge_server::api::route_list()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    assert_eq!(documented, served, "documented vs served routes");

    // And the router really serves each of them: never the "no such endpoint" fallback.
    for (method, path) in &documented {
        let path = path.replace("{id}", "nosuchsession");
        let url = format!("{}{path}", proxy.url);
        let request = common::client().request(method.parse().unwrap(), &url);
        let reply = request.json(&serde_json::json!({})).send().await.unwrap();
        let status = reply.status().as_u16();
        let body = reply.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("no such endpoint"),
            "{method} {path}: {status} {body}"
        );
    }
    let reply = common::client()
        .get(format!("{}/nowhere", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let reply = common::client()
        .put(format!("{}/completion", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 405);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    // Every documented operation has an id and every reference resolves.
    let text = spec.to_string();
    for reference in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", &reference[..reference.find('"').unwrap()]);
        assert!(spec.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
    for (method, path) in &documented {
        let op = &spec["paths"][path][method.to_lowercase()];
        assert!(
            op["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
}
