//! Test support shared by the exactness test and the benchmark example: a minimal HTTP/1.1
//! keep-alive client for llama-server's `/tokenize` (no HTTP crate needed for one POST), and
//! the environment this crate's live checks read.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A keep-alive connection to one llama-server, reopened when the server closes it.
pub struct Llama {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Llama {
    /// `url` as in DISCEDGE_TEST_LLAMA_URL: `http://host:port` (no path, no TLS).
    pub fn new(url: &str) -> Self {
        let addr = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .expect("an http:// URL")
            .to_owned();
        Self { addr, conn: None }
    }

    /// POSTs `body` (JSON) to `path` and returns the response body; panics on a non-200.
    pub fn post(&mut self, path: &str, body: &str) -> String {
        self.request("POST", path, body)
    }

    /// GETs `path` and returns the response body; panics on a non-200.
    pub fn get(&mut self, path: &str) -> String {
        self.request("GET", path, "")
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> String {
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            match self.try_request(method, path, body) {
                Ok(b) => return b,
                Err(e) if reused && attempt == 0 => {
                    let _ = e; // the server closed an idle or used-up connection: reopen once
                    self.conn = None;
                }
                Err(e) => panic!("{method} {}{path}: {e}", self.addr),
            }
        }
        unreachable!()
    }

    fn try_request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(req.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut len, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => len = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v == "close",
                _ => {}
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                conn.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            out.resize(n, 0);
            conn.read_exact(&mut out)?;
        } else {
            conn.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        let body = String::from_utf8(out).expect("UTF-8 body");
        assert_eq!(status, "200", "{method} {path} answered {status}: {body}");
        Ok(body)
    }

    /// llama-server's token ids for `text`: `POST /tokenize` with add_special false.
    pub fn tokenize(&mut self, text: &str, parse_special: bool) -> Vec<u32> {
        let body = serde_json::json!({"content": text, "add_special": false, "parse_special": parse_special});
        let v: serde_json::Value =
            serde_json::from_str(&self.post("/tokenize", &body.to_string())).unwrap();
        v["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    }

    /// llama-server's text for `ids`: `POST /detokenize`.
    pub fn detokenize(&mut self, ids: &[u32]) -> String {
        let body = serde_json::json!({ "tokens": ids });
        let v: serde_json::Value =
            serde_json::from_str(&self.post("/detokenize", &body.to_string())).unwrap();
        v["content"].as_str().expect("content").to_owned()
    }
}

/// The live llama-server and the GGUF it loaded, from DISCEDGE_TEST_LLAMA_URL and
/// DISCEDGE_TEST_MODEL (scripts/llama.sh exports both); None, with the reason, when either is
/// missing.
pub fn live_env() -> Result<(String, String), String> {
    let url = std::env::var("DISCEDGE_TEST_LLAMA_URL")
        .ok()
        .filter(|s| !s.is_empty());
    let model = std::env::var("DISCEDGE_TEST_MODEL")
        .ok()
        .filter(|s| !s.is_empty());
    match (url, model) {
        (Some(u), Some(m)) => Ok((u, m)),
        (u, m) => Err(format!(
            "DISCEDGE_TEST_LLAMA_URL is {} and DISCEDGE_TEST_MODEL is {} (scripts/test.sh sets both)",
            if u.is_some() { "set" } else { "NOT set" },
            if m.is_some() { "set" } else { "NOT set" }
        )),
    }
}
