//! HTTP: parse and validate requests, hand turns to the session layer, shape replies.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::auth::RequestKeys;
use crate::error::ApiError;
use crate::openai;
use crate::request::{parse_turn, resolve_user};
use crate::stream::{self, EventFormat};
use discedge_core::session::Proxy;

/// Every route the proxy serves: method, path, handler. `/openapi.json` documents exactly
/// these (a test compares the two).
fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<Proxy>>)> {
    vec![
        (Method::POST, "/completion", post(completion)),
        (Method::POST, "/v1/chat/completions", post(chat_completions)),
        (Method::GET, "/v1/models", get(models)),
        (Method::GET, "/sessions", get(list_sessions)),
        (Method::GET, "/sessions/{id}", get(get_session)),
        (Method::DELETE, "/sessions/{id}", delete(delete_session)),
        (Method::POST, "/sessions/{id}/warm", post(warm_session)),
        (Method::GET, "/policies", get(policies)),
        (Method::POST, "/admin/policies/reload", post(reload)),
        (Method::GET, "/health", get(health)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(openapi)),
    ]
}

/// The routes as (method, path), for checking the OpenAPI document against them.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// The proxy's HTTP interface (see `routes` and `host/server/openapi.yaml`).
pub fn router(proxy: Arc<Proxy>, max_body_bytes: usize) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        // Handlers for other methods on the same path are merged by axum.
        router = router.route(path, handler);
    }
    router
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(proxy)
}

/// Accepted connections with Nagle's algorithm off: a stream's events are small writes that
/// must leave at once, not wait for the client's delayed ACK (about 40 ms each on Linux).
/// (A named type, not `impl Listener`, so [`with_peers`] can learn each client's address.)
pub fn no_delay(listener: tokio::net::TcpListener) -> NoDelayListener {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// The listener [`no_delay`] makes.
pub type NoDelayListener =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

/// The router as a service that records each client's address, which the operator's
/// endpoints check (loopback only unless an operator key is set).
pub fn with_peers(
    router: Router,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr> {
    router.into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// The client's IP address, when the server recorded it (see [`with_peers`]).
struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let info = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Peer(info.map(|info| info.0.ip())))
    }
}

/// The OpenAPI document, written as YAML in the source tree and served as JSON.
pub fn openapi_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_yaml::from_str(include_str!("../openapi.yaml"))
            .expect("host/server/openapi.yaml is valid YAML (checked by the api tests)")
    })
}

async fn openapi() -> Json<&'static Value> {
    Json(openapi_document())
}

async fn completion(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    counted(&proxy, &headers, body, Endpoint::Completion).await
}

/// `POST /v1/chat/completions`: the same turn in OpenAI's chat format.
async fn chat_completions(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    counted(&proxy, &headers, body, Endpoint::Chat).await
}

/// The two formats a turn can come in.
#[derive(Clone, Copy)]
enum Endpoint {
    Completion,
    Chat,
}

/// Serves a turn and counts a failure in the metrics (successes are counted where they end).
async fn counted(
    proxy: &Arc<Proxy>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let mut mode = String::new();
    let result = serve_turn(proxy, headers, body, endpoint, &mut mode).await;
    if let Err(e) = &result {
        proxy.count_request(&mode, e.status.as_u16(), e.code, None);
    }
    result
}

async fn serve_turn(
    proxy: &Arc<Proxy>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    mode: &mut String,
) -> Result<Response, ApiError> {
    let caller = proxy.api_keys.caller(headers)?.map(str::to_owned);
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "unreadable_body"
        };
        ApiError::new(status, code, e.body_text())
    })?;
    let (request, chat) = match endpoint {
        Endpoint::Completion => (parse_turn(&body, &proxy.defaults, caller)?, None),
        Endpoint::Chat => {
            let keeps_context =
                |mode: &str| proxy.policies.get(mode).map(|p| p.info.stores_context);
            let (request, meta) =
                openai::parse_chat(&body, &proxy.defaults, caller, keeps_context)?;
            (request, Some(meta))
        }
    };
    mode.clone_from(&request.mode);
    // Every log line of the turn, the policy's own included, carries its mode, session and turn.
    let span = tracing::info_span!(
        "turn",
        mode = %request.mode,
        session_id = tracing::field::Empty,
        turn = request.turn.unwrap_or(1),
    );
    if request.stream {
        let format = match chat {
            Some(meta) => EventFormat::Chat(meta),
            None => EventFormat::Completion,
        };
        let streamed = async {
            let started = proxy.start_turn(request).await?;
            stream::respond(proxy.clone(), started, format).await
        };
        return streamed.instrument(span).await;
    }
    let turn = async {
        proxy
            .turn(request)
            .await
            .map_err(ApiError::from)
            .inspect_err(|e| {
                if e.status.is_server_error() {
                    tracing::warn!("turn failed: {e}");
                }
            })
    };
    let reply = turn.instrument(span).await?;
    proxy.count_request(mode, 200, "", Some(&reply.timing));
    let body = match chat {
        Some(meta) => meta.completion(reply.body),
        None => Value::Object(reply.body),
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&reply.policy) {
        headers.insert("x-discedge-policy", policy);
    }
    let t = &reply.timing;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let server_timing = format!(
        "store-read;dur={:.3}, policy;dur={:.3}, policy-llm;dur={:.3}, llm;dur={:.3}, store-write;dur={:.3}",
        ms(t.store_read),
        ms(t.policy),
        ms(t.policy_llm),
        ms(t.llm),
        ms(t.store_write)
    );
    if let Ok(value) = HeaderValue::from_str(&server_timing) {
        headers.insert("server-timing", value);
    }
    headers.insert("x-discedge-store-bytes", HeaderValue::from(t.store_bytes));
    headers.insert(
        "x-discedge-policy-completions",
        HeaderValue::from(t.policy_completions),
    );
    if reply.replayed {
        headers.insert("x-discedge-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// 200 once at least one policy is loaded, so orchestration waits for a usable proxy.
async fn health(State(proxy): State<Arc<Proxy>>) -> Response {
    let policies = proxy.policies.names();
    let status = if policies.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if policies.is_empty() { "no policies loaded" } else { "ok" },
        "policies": policies,
        "store": proxy.store.kind(),
        "tokenizer": proxy.llm.tokenizer_status(),
    });
    (status, Json(body)).into_response()
}

/// Prometheus' text format.
async fn metrics(
    State(proxy): State<Arc<Proxy>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    proxy.api_keys.monitor(&headers, peer)?;
    let mut text = proxy
        .metrics
        .render(proxy.policies.loads(), proxy.policies.names().len());
    text.push_str(&proxy.warm.counts.render());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// The loaded modes as OpenAI's model list (a chat request may name its mode as `model`).
async fn models(State(proxy): State<Arc<Proxy>>) -> Json<Value> {
    Json(openai::model_list(&proxy.policies.names()))
}

async fn policies(
    State(proxy): State<Arc<Proxy>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    proxy.api_keys.monitor(&headers, peer)?;
    Ok(Json(json!({ "policies": proxy.policies.list() })))
}

#[derive(serde::Deserialize)]
struct OwnerQuery {
    user_id: Option<String>,
}

/// The user a sessions request acts for (`?user_id=` is the claim).
fn owner(proxy: &Proxy, headers: &HeaderMap, claimed: Option<String>) -> Result<String, ApiError> {
    let caller = proxy.api_keys.caller(headers)?;
    resolve_user(caller, claimed, &proxy.defaults.user_id)
}

/// `GET /sessions/{id}`: the session's turn count, mode, size and rendered history, for its owner.
async fn get_session(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&proxy, &headers, query.user_id)?;
    Ok(Json(Value::Object(proxy.session_view(&id, &user).await?)))
}

/// `GET /sessions?user_id=`: the user's sessions, most recently updated first.
async fn list_sessions(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&proxy, &headers, query.user_id)?;
    let sessions = proxy.list_sessions(&user).await?;
    Ok(Json(json!({ "user_id": user, "sessions": sessions })))
}

/// `DELETE /sessions/{id}`: the owner removes a session.
async fn delete_session(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&proxy, &headers, query.user_id)?;
    proxy.delete_session(&id, &user).await?;
    Ok(Json(json!({ "deleted": id })))
}

/// The handover hint's body: the last turn the client has (default: what this node has).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    turn: Option<u32>,
}

/// `POST /sessions/{id}/warm`: a client about to move here has this node's model cache the
/// session's next prompt now, after waiting (as a turn does) for its last turn to arrive.
async fn warm_session(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<OwnerQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&proxy, &headers, query.user_id)?;
    let request: WarmRequest = if body.iter().all(u8::is_ascii_whitespace) {
        WarmRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?
    };
    match proxy.warm_up(&id, Some(&user), request.turn).await? {
        Some(warmed) => Ok(Json(json!(warmed))),
        None => Ok(Json(
            json!({ "session_id": id, "skipped": "this session's mode keeps no context" }),
        )),
    }
}

/// Reloads the plugins folder now (for deployments that run with --no-watch).
async fn reload(
    State(proxy): State<Arc<Proxy>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    proxy.api_keys.operator(&headers, peer)?;
    let registry = proxy.policies.clone();
    let report = tokio::task::spawn_blocking(move || registry.reload())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string(),
            )
        })?;
    Ok(Json(
        json!({ "report": report, "policies": proxy.policies.list() }),
    ))
}
