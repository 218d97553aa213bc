//! Streamed turns (`"stream": true`): llama-server's server-sent events go to the client as
//! they arrive, and the turn is committed only when the stream ended normally with the client
//! still listening. A broken stream or a client that left changes nothing in the session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::ApiError;
use crate::openai::ChatMeta;
use discedge_core::llm::{EventStream, StreamEvent};
use discedge_core::session::{
    PreparedTurn, Proxy, StartedTurn, TurnReply, TurnTiming, add_session_fields,
    copy_session_fields,
};

/// Which event format the client speaks.
pub enum EventFormat {
    /// llama.cpp's own `/completion` events, with the session fields in the first and last.
    Completion,
    /// OpenAI's `chat.completion.chunk` events, ending with `data: [DONE]`.
    Chat(ChatMeta),
}

/// Events buffered between llama-server and a slow client before llama-server is slowed too.
const BUFFERED_EVENTS: usize = 32;

/// Starts the model's stream for a started turn and answers with an event stream. Errors
/// before the first event (llama-server refusing, say) are still plain HTTP errors.
pub async fn respond(
    proxy: Arc<Proxy>,
    started: StartedTurn,
    format: EventFormat,
) -> Result<Response, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_EVENTS);
    let policy = match started {
        StartedTurn::Replayed(reply) => {
            let policy = reply.policy.clone();
            let mode = string_field(&reply.body, "mode");
            proxy.count_request(&mode, 200, "", Some(&reply.timing));
            for event in format.replayed(reply) {
                // The channel is new and larger than a replay: this cannot wait or fail.
                let _ = tx.try_send(event);
            }
            policy
        }
        StartedTurn::Prepared(mut prepared) => {
            let started = Instant::now();
            let body = std::mem::take(&mut prepared.body);
            let events = proxy.llm.complete_stream(body).await?;
            let policy = prepared.policy_label();
            let span = tracing::Span::current();
            tokio::spawn(
                async move {
                    let mode = prepared.mode.clone();
                    match relay(&proxy, prepared, events, started, &format, &tx).await {
                        Ok(timing) => proxy.count_request(&mode, 200, "", Some(&timing)),
                        Err(Ended::ClientGone) => {
                            tracing::info!("client left during the stream; turn not committed");
                            proxy.count_request(&mode, 499, "client_disconnected", None);
                        }
                        Err(Ended::Failed(e)) => {
                            tracing::warn!("streamed turn failed: {e}");
                            let _ = tx.send(format.error(&e)).await;
                            proxy.count_request(&mode, e.status.as_u16(), e.code, None);
                        }
                    }
                }
                .instrument(span),
            );
            policy
        }
    };
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert("x-discedge-policy", policy);
    }
    Ok(response)
}

/// How a stream ended without committing.
enum Ended {
    /// The client closed the connection; nobody is told.
    ClientGone,
    /// The client is told in a last error event.
    Failed(ApiError),
}

impl From<ApiError> for Ended {
    fn from(e: ApiError) -> Self {
        Ended::Failed(e)
    }
}

impl From<discedge_core::error::Error> for Ended {
    fn from(e: discedge_core::error::Error) -> Self {
        Ended::Failed(e.into())
    }
}

/// Passes events on until llama-server's last one, then commits and sends the last event.
async fn relay(
    proxy: &Proxy,
    mut prepared: Box<PreparedTurn>,
    mut events: EventStream,
    started: Instant,
    format: &EventFormat,
    tx: &mpsc::Sender<Bytes>,
) -> Result<TurnTiming, Ended> {
    let mut content = String::new();
    let wants_tokens = prepared.wants_tokens();
    let mut tokens: Vec<Value> = Vec::new();
    let mut first = true;
    loop {
        // A client that leaves is noticed at once, even while llama-server is still reading
        // a long prompt and has sent nothing.
        let event = tokio::select! {
            event = events.next() => event,
            () = tx.closed() => return Err(Ended::ClientGone),
        };
        let Some(event) = event else { break };
        let event = event.map_err(ApiError::from)?;
        if let Some(text) = event.fields.get("content").and_then(Value::as_str) {
            content.push_str(text);
        }
        if wants_tokens && let Some(ids) = event.fields.get("tokens").and_then(Value::as_array) {
            tokens.extend(ids.iter().cloned());
        }
        if event.fields.get("stop").and_then(Value::as_bool) == Some(true) {
            prepared.timing.llm = started.elapsed();
            drop(events);
            // A client that left before the end does not get its turn committed.
            if tx.is_closed() {
                return Err(Ended::ClientGone);
            }
            // The whole reply goes to the policy; the client already has all but this
            // event's own piece of it.
            let mut whole = event.fields;
            let own = LastPiece {
                content: whole.insert("content".into(), Value::String(content)),
                tokens: if wants_tokens {
                    whole.insert("tokens".into(), Value::Array(tokens))
                } else {
                    whole.remove("tokens")
                },
            };
            let reply = proxy.finish_turn(prepared, whole).await?;
            let timing = reply.timing;
            // Committed: a client leaving now retries the turn and gets it replayed.
            let _ = tx.send(format.last(own, reply)).await;
            return Ok(timing);
        }
        let out = if first {
            first = false;
            format.first(event, &prepared)
        } else {
            format.middle(&event)
        };
        tx.send(out).await.map_err(|_| Ended::ClientGone)?;
    }
    Err(ApiError::from(discedge_core::llm::LlmError::StreamBroken(
        "the stream ended before its last event".into(),
    ))
    .into())
}

impl EventFormat {
    /// The first event: the session fields ride along, so a client learns its session at once.
    fn first(&self, event: StreamEvent, turn: &PreparedTurn) -> Bytes {
        match self {
            EventFormat::Completion => {
                let mut fields = event.fields;
                add_turn_fields(&mut fields, turn);
                sse(&Value::Object(fields))
            }
            EventFormat::Chat(meta) => {
                let mut chunk = meta.chunk(Some(content_of(&event.fields)), true, None);
                add_turn_fields(&mut chunk, turn);
                sse(&Value::Object(chunk))
            }
        }
    }

    /// Any other event before the last: llama-server's bytes as they came.
    fn middle(&self, event: &StreamEvent) -> Bytes {
        match self {
            EventFormat::Completion => sse_raw(&event.data),
            EventFormat::Chat(meta) => sse(&Value::Object(meta.chunk(
                Some(content_of(&event.fields)),
                false,
                None,
            ))),
        }
    }

    /// The last event, sent once the turn is committed: llama-server's last event (or the
    /// closing chunk) with the session fields, holding only its own piece of the reply.
    fn last(&self, own: LastPiece, reply: TurnReply) -> Bytes {
        match self {
            EventFormat::Completion => {
                let mut event = reply.body;
                let content = own.content.unwrap_or(Value::String(String::new()));
                event.insert("content".into(), content);
                if let Some(tokens) = event.get_mut("tokens") {
                    *tokens = own.tokens.unwrap_or(Value::Array(Vec::new()));
                }
                sse(&Value::Object(event))
            }
            EventFormat::Chat(meta) => {
                let text = own
                    .content
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut chunk = meta.closing_chunk(text, &reply.body);
                copy_session_fields(&mut chunk, &reply.body);
                let mut out = sse(&Value::Object(chunk)).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
        }
    }

    /// A retried turn, answered from the store as a stream of its own.
    fn replayed(&self, reply: TurnReply) -> Vec<Bytes> {
        match self {
            EventFormat::Completion => {
                let mut body = reply.body;
                body.insert("stop".into(), Value::Bool(true));
                vec![sse(&Value::Object(body))]
            }
            EventFormat::Chat(meta) => {
                let mut first = meta.chunk(Some(content_of(&reply.body)), true, None);
                copy_session_fields(&mut first, &reply.body);
                let nothing_more = LastPiece {
                    content: None,
                    tokens: None,
                };
                vec![sse(&Value::Object(first)), self.last(nothing_more, reply)]
            }
        }
    }

    /// The error event a failed stream ends with (the shape of llama-server's own).
    fn error(&self, e: &ApiError) -> Bytes {
        sse(&e.body())
    }
}

/// What llama-server's last event itself carried of the reply (usually nothing: the text came
/// in the events before it).
struct LastPiece {
    content: Option<Value>,
    tokens: Option<Value>,
}

fn add_turn_fields(fields: &mut Map<String, Value>, turn: &PreparedTurn) {
    add_session_fields(
        fields,
        &turn.session_id,
        &turn.user_id,
        &turn.mode,
        turn.turn,
    );
}

fn content_of(fields: &Map<String, Value>) -> &str {
    fields
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn string_field(fields: &Map<String, Value>, key: &str) -> String {
    fields
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn sse(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Serializing a `Value` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn sse_raw(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
