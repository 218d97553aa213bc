//! The scenario's client: sends one session's turns as a real client would, and measures them.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::file::recalls;
use super::record::{Row, rfc3339_utc};
use discedge_core::causes::error_chain;
use discedge_policy_sdk::{Template, user_turn};
use discedge_server::config::TemplatePreset;

/// Resends of a turn that a node refused because it has not yet seen the previous turn.
pub const LAG_RETRIES: u32 = 3;
/// Pause before each resend.
pub const LAG_BACKOFF: Duration = Duration::from_millis(200);

/// The mode whose history the client keeps and sends whole.
pub const CLIENT_SIDE: &str = "client-side";

/// One session in one mode: the session id once the proxy gave it, the turn counter, and for
/// `client-side` the ChatML history.
pub struct Session<'a> {
    pub http: &'a reqwest::Client,
    pub scenario: &'a str,
    pub mode: &'a str,
    pub user_id: Option<&'a str>,
    pub n_predict: u32,
    pub id: Option<String>,
    pub turn: u32,
    history: String,
}

/// The template a `client-side` client renders its history with: the proxy's ChatML preset.
fn chatml() -> Template {
    let (bos, prefix, suffix) = TemplatePreset::Chatml.parts().expect("a preset");
    Template::new(bos, prefix, suffix)
}

impl<'a> Session<'a> {
    /// A client-side session: it keeps the conversation and renders it with the template.
    pub fn new(
        http: &'a reqwest::Client,
        scenario: &'a str,
        mode: &'a str,
        user_id: Option<&'a str>,
        n_predict: u32,
    ) -> Self {
        Self {
            http,
            scenario,
            mode,
            user_id,
            n_predict,
            id: None,
            turn: 0,
            history: String::new(),
        }
    }

    /// Sends the next turn to `url`; the row says how it went (the session advances only on
    /// 200), and whether the reply mentions one of `expect` (when given).
    pub async fn send(&mut self, url: &str, node: &str, message: &str, expect: &[String]) -> Row {
        let turn = self.turn + 1;
        let user = user_turn(&chatml(), message);
        let prompt = if self.mode == CLIENT_SIDE {
            format!("{}{user}", self.history)
        } else {
            message.to_owned()
        };
        let mut body = json!({
            "mode": self.mode, "turn": turn, "prompt": prompt, "n_predict": self.n_predict,
            "temperature": 0, "seed": 42, "cache_prompt": true,
        });
        if let Some(id) = &self.id {
            body["session_id"] = json!(id);
        }
        if let Some(user_id) = self.user_id {
            body["user_id"] = json!(user_id);
        }
        let body = body.to_string();
        let mut row = Row {
            timestamp: rfc3339_utc(SystemTime::now()),
            scenario: self.scenario.into(),
            mode: self.mode.into(),
            node: node.into(),
            session: self.id.clone().unwrap_or_default(),
            turn,
            request_bytes: body.len(),
            expect: expect.join("|"),
            ..Row::default()
        };
        let start = Instant::now();
        let answer = loop {
            let answer = self.post(url, &body).await;
            if row.retries < LAG_RETRIES && is_lag(&answer, turn) {
                row.retries += 1;
                tokio::time::sleep(LAG_BACKOFF).await;
                continue;
            }
            break answer;
        };
        row.round_trip_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        match answer {
            Err(e) => row.error = e,
            Ok(Answer {
                status,
                bytes,
                json: reply,
                headers,
            }) => {
                row.http_status = Some(status);
                row.response_bytes = bytes;
                fill_proxy_split(&mut row, &headers);
                if status == 200 {
                    fill_figures(&mut row, &reply);
                    let content = reply["content"].as_str().unwrap_or_default();
                    row.reply_chars = Some(content.chars().count());
                    row.recalled = recalls(expect, content);
                    let seen = reply["prompt"].as_str().unwrap_or_default();
                    row.in_context = recalls(expect, seen);
                    if row.recalled.is_some() {
                        row.reply = content.to_owned();
                    }
                    self.history.push_str(&user);
                    self.history.push_str(content);
                    self.history.push_str(&chatml().message_suffix);
                    if let Some(id) = reply["session_id"].as_str() {
                        self.id = Some(id.to_owned());
                        row.session = id.to_owned();
                    }
                    self.turn = turn;
                } else {
                    row.error = error_text(&reply);
                }
            }
        }
        row
    }

    /// One POST and what came back.
    async fn post(&self, url: &str, body: &str) -> Result<Answer, String> {
        let reply = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("request to {url} failed: {}", error_chain(&e)))?;
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let bytes = reply
            .bytes()
            .await
            .map_err(|e| format!("reading the reply from {url} failed: {}", error_chain(&e)))?;
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&bytes).chars().take(200).collect())
        });
        Ok(Answer {
            status,
            bytes: bytes.len(),
            json,
            headers,
        })
    }
}

/// One HTTP answer: the status, the body's size, the body as JSON (a JSON string holding the
/// start of the body if it is not JSON), and the headers, where the proxy reports its split.
struct Answer {
    status: u16,
    bytes: usize,
    json: Value,
    headers: HeaderMap,
}

/// Whether the node is behind this session, so that the previous turn is still replicating
/// and a resend can succeed: a 409 expecting an earlier turn than the one sent, or a 404 for
/// a session another node has already served (this node has not seen it at all yet). A node
/// expecting a later turn means this turn is stale, and resending cannot help.
fn is_lag(answer: &Result<Answer, String>, turn: u32) -> bool {
    let Ok(answer) = answer else {
        return false;
    };
    let error = &answer.json["error"];
    match (answer.status, error["code"].as_str()) {
        (409, Some("turn_mismatch")) => error["expected_turn"]
            .as_u64()
            .is_some_and(|expected| expected <= u64::from(turn)),
        (404, Some("unknown_session")) => turn > 1,
        _ => false,
    }
}

/// llama-server's figures for the turn (absent from a reply replayed from the store).
fn fill_figures(row: &mut Row, reply: &Value) {
    let timings = &reply["timings"];
    row.prompt_chars = reply["prompt"].as_str().map(|p| p.chars().count());
    row.prompt_n = timings["prompt_n"].as_u64();
    row.prompt_ms = timings["prompt_ms"].as_f64();
    row.predicted_n = timings["predicted_n"].as_u64();
    row.predicted_ms = timings["predicted_ms"].as_f64();
    row.context_tokens = row
        .prompt_n
        .map(|n| n + timings["cache_n"].as_u64().unwrap_or(0));
    row.tokens_cached = reply["tokens_cached"].as_u64();
    row.tokens_evaluated = reply["tokens_evaluated"].as_u64();
}

/// The proxy's split of the turn, from `Server-Timing: store-read;dur=X, policy;dur=Y, ...`
/// and `x-discedge-store-bytes`. Each stays empty when its header or metric is absent (a
/// llama-server or another proxy answering), so the CSV never shows a guess as a measurement.
fn fill_proxy_split(row: &mut Row, headers: &HeaderMap) {
    let timing = headers
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let metric = |name: &str| server_timing_dur(&timing, name);
    row.store_read_ms = metric("store-read");
    row.policy_ms = metric("policy");
    row.llm_ms = metric("llm");
    row.store_write_ms = metric("store-write");
    row.store_bytes = headers
        .get("x-discedge-store-bytes")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
}

/// The `dur` of metric `name` in a `Server-Timing` value (`name;desc="...";dur=1.5, ...`).
fn server_timing_dur(header: &str, name: &str) -> Option<f64> {
    header.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != name {
            return None;
        }
        parts.find_map(|param| {
            let (key, value) = param.split_once('=')?;
            (key.trim() == "dur")
                .then(|| value.trim().trim_matches('"').parse().ok())
                .flatten()
        })
    })
}

/// `code: message` from the proxy's error JSON, or the start of whatever else came back.
fn error_text(reply: &Value) -> String {
    let error = &reply["error"];
    match (error["code"].as_str(), error["message"].as_str(), reply) {
        (Some(code), Some(message), _) => format!("{code}: {message}"),
        (Some(code), None, _) => code.into(),
        (_, _, Value::String(text)) => text.clone(),
        _ => reply.to_string().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_split_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "server-timing",
            "store-read;dur=0.125, policy;dur=0.5, llm;desc=\"model\";dur=812.25, store-write;dur=1"
                .parse()
                .unwrap(),
        );
        headers.insert("x-discedge-store-bytes", "553".parse().unwrap());
        let mut row = Row::default();
        fill_proxy_split(&mut row, &headers);
        assert_eq!(row.store_read_ms, Some(0.125));
        assert_eq!(row.policy_ms, Some(0.5));
        assert_eq!(row.llm_ms, Some(812.25));
        assert_eq!(row.store_write_ms, Some(1.0));
        assert_eq!(row.store_bytes, Some(553));

        // No proxy headers (e.g. llama-server itself answered): empty, not zero.
        let mut row = Row::default();
        fill_proxy_split(&mut row, &HeaderMap::new());
        assert_eq!((row.llm_ms, row.store_bytes), (None, None));
        assert_eq!(server_timing_dur("llm;dur=x, policy", "llm"), None);
        assert_eq!(server_timing_dur("llmx;dur=3", "llm"), None);
    }
}
