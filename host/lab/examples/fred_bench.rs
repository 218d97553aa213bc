//! Figures for the FReD path, printed: per-turn latency of a proxy on FReD with a FAKE model,
//! FReD calls per turn and bytes relayed between nodes per turn.
//!
//!     cargo run --release -p discedge --example fred_bench [-- --sessions 20 --turns 10 --feed]
//!
//! `--feed`: proxies A and B serve the trigger feed (`--fred-trigger-listen`), which the test
//! nodes call as FReD does, so same-node and roamed turns are served from memory.
//!
//! Runs two FReD-compatible TEST nodes (`fred-testnode`, in this process; not FReD), one proxy
//! per node (`discedge serve --store fred`, in this process, via `serve::start_local`) and the
//! FAKE llama-server (`fake_llm::FakeLlm`: answers at once, one token per byte), so every figure
//! is the proxy plus its FReD path, not a model.
//!
//! Replication delay `d`: the test cluster's `set_replication_delay(d)`. Every FReD write
//! (Update) answers only after its relay to the other node has been delivered, `d` later, as
//! FReD's synchronous relay answers after the peer has stored the write. `d` is therefore the
//! round trip of that relay: it emulates a link between the nodes with one-way delay d/2 (a
//! link with one-way delay D is `d = 2D`). Only the node-to-node relay is delayed: the proxy's
//! own calls to the nodes (including proxy A's confirming Read on node B, `--fred-confirm
//! replicas`, the default) go over loopback with no added delay.
//!
//! Each configuration (mode x d) walks `--sessions` sessions of `--turns` turns, one request at
//! a time: turns 1 .. ROAM_AT-1 on proxy A, turn ROAM_AT on proxy B (the roamed turn: the
//! first the session has on B), the rest on B. "same" turns are every turn after the first
//! that stays on the node of the turn before; "new" is turn 1. Latency is at the client
//! (request sent to reply read); "beyond model" is that minus the proxy's `Server-Timing` `llm`.
//! FReD calls per turn are the test nodes' call counters before and after each turn.
//!
//! Bytes: one 50-turn session per mode on a third proxy on node A that reaches its node through
//! a relay in this program counting the bytes either way; value bytes written and relayed come
//! from the test nodes' counters (`bytes_written`, `bytes_replicated_in`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

mod support;

use discedge_lab::fake_llm::FakeLlm;
use discedge_server::serve::LocalServer;
use fred_testnode::{Cluster, NodeHandle, NodeStats, TestPki};
use serde_json::{Value, json};

const MODES: [&str; 2] = ["raw", "tokenized"];
const DELAYS_MS: [u64; 3] = [0, 10, 50];
/// The turn that goes to proxy B first.
const ROAM_AT: u32 = 6;
/// Turns of the session whose relayed bytes are followed.
const BYTES_TURNS: u32 = 50;
const PARTS: [&str; 4] = ["store-read", "policy", "llm", "store-write"];
const RPCS: [&str; 3] = ["Read", "Scan", "Update"];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    New,
    Same,
    Roamed,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::New => "new (turn 1)",
            Kind::Same => "same-node",
            Kind::Roamed => "roamed",
        }
    }
}

/// One measured turn.
struct Sample {
    kind: Kind,
    /// Request sent to reply body read, at the client.
    total: Duration,
    /// The proxy's `Server-Timing` parts, in ms, in the order of [`PARTS`].
    parts: [f64; 4],
    /// FReD calls per RPC during the turn on the node of the proxy that served it, and on
    /// the other node.
    calls: [BTreeMap<String, u64>; 2],
    /// `x-discedge-store-bytes`: what the proxy says it wrote.
    store_bytes: u64,
    /// Value bytes clients wrote to the nodes (`bytes_written`, both nodes).
    written: u64,
    /// Value bytes that arrived by relay (`bytes_replicated_in`, both nodes).
    relayed: u64,
    /// Prompt tokens the model got (`timings.prompt_n`; the fake counts one token per byte).
    prompt_n: u64,
    /// For proxy C only: bytes on the wire to its node and from it (TLS, gRPC framing included).
    wire: [u64; 2],
}

struct Bed {
    cluster: Cluster,
    nodes: [NodeHandle; 2],
    /// `/completion` of each proxy: A (node A), B (node B), then C (node A, through a
    /// byte-counting relay) once started.
    urls: Vec<String>,
    /// The node each proxy talks to (0: A, 1: B).
    node_of: Vec<usize>,
    /// Bytes proxy C sent to its node and received from it (TLS records: gRPC with framing).
    counted: Option<Arc<Counted>>,
    http: reqwest::Client,
    _proxies: Vec<LocalServer>,
    pki: TestPki,
    fake: FakeLlm,
    dir: tempfile::TempDir,
    /// Whether proxies A and B serve the trigger feed.
    feed: bool,
}

#[derive(Default)]
struct Counted {
    to_node: AtomicU64,
    from_node: AtomicU64,
}

impl Bed {
    async fn start(feed: bool) -> anyhow::Result<Bed> {
        let dir = tempfile::tempdir()?;
        let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "proxy0", "proxy1"])?;
        let cluster = Cluster::new();
        let mut nodes = Vec::new();
        for id in ["nodeA", "nodeB"] {
            nodes.push(
                cluster
                    .start_node(id, "127.0.0.1:0".parse()?, pki.node_tls(id))
                    .await?,
            );
        }
        let [a, b]: [NodeHandle; 2] = nodes.try_into().ok().unwrap();
        let mut bed = Bed {
            cluster,
            nodes: [a, b],
            urls: Vec::new(),
            node_of: Vec::new(),
            counted: None,
            http: reqwest::Client::new(),
            _proxies: Vec::new(),
            pki,
            feed,
            fake: FakeLlm::start().await?,
            dir,
        };
        // Proxy A first: it creates the keygroup and grants proxy B's user its roles.
        for node in 0..2 {
            let addr = bed.nodes[node].addr();
            bed.start_proxy(node, addr).await?;
        }
        Ok(bed)
    }

    /// Starts a proxy on `node` (as FReD user `proxy{node}`) that dials `fred_addr`.
    async fn start_proxy(&mut self, node: usize, fred_addr: SocketAddr) -> anyhow::Result<()> {
        let (user, other) = (format!("proxy{node}"), format!("proxy{}", 1 - node));
        let data = self.dir.path().join(format!("data{}", self.urls.len()));
        let cache = self.dir.path().join("policy-cache");
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let mut extra = vec![
            "--fred-grant",
            &other,
            "--policy-cache-dir",
            cache.to_str().unwrap(),
            "--no-watch",
        ];
        // Proxies A and B only (the byte-counting proxy C dials through a relay).
        if self.feed && self.urls.len() < 2 {
            extra.extend(["--fred-trigger-listen", &listen]);
        }
        let argv = support::fred_proxy_argv(
            &self.pki,
            &user,
            ["nodeA", "nodeB"][node],
            &fred_addr.to_string(),
            &self.fake.url,
            &data,
            &extra,
        );
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let local = discedge_server::serve::start_local(&argv).await?;
        self.urls.push(format!("http://{}/completion", local.addr));
        self.node_of.push(node);
        self._proxies.push(local);
        Ok(())
    }

    /// Starts proxy C on node A, dialling it through a relay that counts the bytes; returns
    /// its index.
    async fn start_counted_proxy(&mut self) -> anyhow::Result<usize> {
        let counted = Arc::new(Counted::default());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay_addr = listener.local_addr()?;
        let (target, relay_counted) = (self.nodes[0].addr(), counted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counted = relay_counted.clone();
                tokio::spawn(async move {
                    let Ok(node) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), node.set_nodelay(true));
                    let (client_in, client_out) = client.into_split();
                    let (node_in, node_out) = node.into_split();
                    tokio::join!(
                        pipe(client_in, node_out, &counted.to_node),
                        pipe(node_in, client_out, &counted.from_node)
                    );
                });
            }
        });
        self.counted = Some(counted);
        self.start_proxy(0, relay_addr).await?;
        Ok(self.urls.len() - 1)
    }

    /// Bytes through proxy C's counting relay so far: to its node, from its node.
    fn wire(&self) -> [u64; 2] {
        self.counted.as_ref().map_or([0, 0], |c| {
            [
                c.to_node.load(Ordering::SeqCst),
                c.from_node.load(Ordering::SeqCst),
            ]
        })
    }

    fn stats(&self) -> [NodeStats; 2] {
        [self.nodes[0].stats(), self.nodes[1].stats()]
    }

    /// Sends one turn to proxy `proxy` (0: A, 1: B, 2: C); returns the session id and the
    /// sample.
    async fn turn(
        &self,
        proxy: usize,
        mode: &str,
        session: &Value,
        turn: u32,
        kind: Kind,
    ) -> anyhow::Result<(Value, Sample)> {
        let prompt = format!("Question {turn}: tell me one more fact about the number {turn}.");
        let body = json!({"mode": mode, "session_id": session, "turn": turn, "prompt": prompt,
                          "n_predict": 32, "temperature": 0});
        let node = self.node_of[proxy];
        let before = self.stats();
        let wire_before = self.wire();
        let started = Instant::now();
        let reply = self.http.post(&self.urls[proxy]).json(&body).send().await?;
        let status = reply.status();
        let headers = reply.headers().clone();
        let reply: Value = reply.json().await?;
        let total = started.elapsed();
        let after = self.stats();
        let wire_after = self.wire();
        anyhow::ensure!(
            status.is_success() && reply.get("error").is_none(),
            "{mode} turn {turn} on node {node}: {status} {reply}"
        );
        let timing = headers
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let parts = PARTS.map(|name| server_timing_ms(timing, name).unwrap_or(f64::NAN));
        let store_bytes = headers
            .get("x-discedge-store-bytes")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let calls = [node, 1 - node].map(|i| {
            let mut diff = BTreeMap::new();
            for (rpc, n) in &after[i].calls {
                let d = n - before[i].call_count(rpc);
                if d > 0 {
                    diff.insert(rpc.clone(), d);
                }
            }
            diff
        });
        let sum = |f: fn(&NodeStats) -> u64| -> u64 {
            (0..2).map(|i| f(&after[i]) - f(&before[i])).sum()
        };
        let sample = Sample {
            kind,
            total,
            parts,
            calls,
            store_bytes,
            written: sum(|s| s.bytes_written),
            relayed: sum(|s| s.bytes_replicated_in),
            prompt_n: reply["timings"]["prompt_n"].as_u64().unwrap_or(0),
            wire: [
                wire_after[0] - wire_before[0],
                wire_after[1] - wire_before[1],
            ],
        };
        Ok((reply["session_id"].clone(), sample))
    }

    /// One session: turns before ROAM_AT on A, the rest on B.
    async fn session(&self, mode: &str, turns: u32) -> anyhow::Result<Vec<Sample>> {
        let (mut session, mut samples) = (Value::Null, Vec::new());
        for turn in 1..=turns {
            let node = usize::from(turn >= ROAM_AT);
            let kind = match turn {
                1 => Kind::New,
                ROAM_AT => Kind::Roamed,
                _ => Kind::Same,
            };
            let (id, sample) = self.turn(node, mode, &session, turn, kind).await?;
            session = id;
            samples.push(sample);
        }
        Ok(samples)
    }
}

/// Copies one direction of a relayed connection, counting the bytes.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, count: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}

/// The `dur` of metric `name` in a `Server-Timing` value.
fn server_timing_ms(header: &str, name: &str) -> Option<f64> {
    header.split(',').find_map(|metric| {
        let mut fields = metric.trim().split(';');
        if fields.next()?.trim() != name {
            return None;
        }
        fields.find_map(|f| f.trim().strip_prefix("dur=")?.parse().ok())
    })
}

/// Nearest-rank percentile of values in ms (sorts them).
fn pct(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn of_kind(samples: &[Sample], kind: Kind) -> impl Iterator<Item = &Sample> {
    samples.iter().filter(move |s| s.kind == kind)
}

fn totals(samples: &[Sample], kind: Kind) -> Vec<f64> {
    of_kind(samples, kind).map(|s| ms(s.total)).collect()
}

/// The proxy's own time: the whole turn at the client minus the proxy's wait for the model.
fn beyond_model(samples: &[Sample], kind: Kind) -> Vec<f64> {
    of_kind(samples, kind)
        .map(|s| ms(s.total) - s.parts[2])
        .collect()
}

fn arg(args: &[String], name: &str, default: u32) -> anyhow::Result<u32> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("{name} wants a number"))?
            .parse()?),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions = arg(&args, "--sessions", 20)?;
    let turns = arg(&args, "--turns", 10)?.max(ROAM_AT);
    let feed = args.iter().any(|a| a == "--feed");
    let started = Instant::now();
    let mut bed = Bed::start(feed).await?;

    // Warm-up, not counted: policy instances, connections, both proxies' paths.
    bed.cluster.set_replication_delay(Duration::ZERO);
    for mode in MODES {
        for _ in 0..3 {
            bed.session(mode, ROAM_AT + 1).await?;
        }
    }

    let mut results: BTreeMap<(&str, u64), Vec<Sample>> = BTreeMap::new();
    for mode in MODES {
        for d in DELAYS_MS {
            bed.cluster.set_replication_delay(Duration::from_millis(d));
            let mut samples = Vec::new();
            for _ in 0..sessions {
                samples.extend(bed.session(mode, turns).await?);
            }
            results.insert((mode, d), samples);
        }
    }

    println!(
        "FReD path, per-turn latency at the client (ms): two FReD-compatible TEST nodes (not FReD) and \
         one proxy per node in one process, FAKE llama-server (answers at once)"
    );
    println!(
        "{sessions} sessions x {turns} turns per row, one request at a time: turns 1-{} on proxy A, \
         turn {ROAM_AT} on proxy B (roamed: the session's first turn on B), the rest on B",
        ROAM_AT - 1
    );
    println!(
        "d = replication delay: each FReD write answers after its relay to the other node, d later \
         (= relay round trip; emulates one-way link delay d/2)"
    );
    println!(
        "beyond model = client time minus the proxy's Server-Timing llm (store, policy, HTTP, JSON)"
    );
    println!(
        "trigger feed: {}",
        if feed {
            "on (--feed)"
        } else {
            "off (--feed turns it on)"
        }
    );
    let same_n = of_kind(&results[&(MODES[0], 0)], Kind::Same).count();
    let roamed_n = of_kind(&results[&(MODES[0], 0)], Kind::Roamed).count();
    println!(
        "samples per row: {same_n} same-node, {roamed_n} roamed, {sessions} new (p99 of {roamed_n} roamed turns is their max)"
    );
    println!();
    println!(
        "{:<10} {:>5} | {:>8} | {:>8} {:>8} | {:>8} {:>8} | {:>13} {:>13}",
        "mode",
        "d ms",
        "new p50",
        "same p50",
        "same p99",
        "roam p50",
        "roam p99",
        "beyond: same",
        "beyond: roam"
    );
    for ((mode, d), samples) in &results {
        println!(
            "{:<10} {:>5} | {:>8.2} | {:>8.2} {:>8.2} | {:>8.2} {:>8.2} | {:>13.2} {:>13.2}",
            mode,
            d,
            pct(&mut totals(samples, Kind::New), 0.5),
            pct(&mut totals(samples, Kind::Same), 0.5),
            pct(&mut totals(samples, Kind::Same), 0.99),
            pct(&mut totals(samples, Kind::Roamed), 0.5),
            pct(&mut totals(samples, Kind::Roamed), 0.99),
            pct(&mut beyond_model(samples, Kind::Same), 0.5),
            pct(&mut beyond_model(samples, Kind::Roamed), 0.5),
        );
    }

    println!();
    println!(
        "where the time goes: p50 of each Server-Timing part (ms); rest = client time minus the parts"
    );
    println!(
        "{:<10} {:>5} {:<13} | {:>10} {:>7} {:>7} {:>11} {:>7} | {:>7}",
        "mode", "d ms", "turn", "store-read", "policy", "llm", "store-write", "rest", "total"
    );
    for ((mode, d), samples) in &results {
        for kind in [Kind::New, Kind::Same, Kind::Roamed] {
            let part = |i: usize| {
                pct(
                    &mut of_kind(samples, kind)
                        .map(|s| s.parts[i])
                        .collect::<Vec<_>>(),
                    0.5,
                )
            };
            let mut rest: Vec<f64> = of_kind(samples, kind)
                .map(|s| ms(s.total) - s.parts.iter().sum::<f64>())
                .collect();
            println!(
                "{:<10} {:>5} {:<13} | {:>10.2} {:>7.2} {:>7.2} {:>11.2} {:>7.2} | {:>7.2}",
                mode,
                d,
                kind.label(),
                part(0),
                part(1),
                part(2),
                part(3),
                pct(&mut rest, 0.5),
                pct(&mut totals(samples, kind), 0.5),
            );
        }
    }

    println!();
    println!(
        "FReD calls per turn (mean over the turns of that kind at all three delays): on the node of \
         the proxy that served the turn | on the other node; Read/Scan/Update, then any other RPC"
    );
    println!(
        "{:<10} {:<13} | {:>10} {:>5} {:>7} | {:>10} {:>5} {:>7} | other",
        "mode", "turn", "local Read", "Scan", "Update", "other Read", "Scan", "Update"
    );
    for mode in MODES {
        for kind in [Kind::New, Kind::Same, Kind::Roamed] {
            let picked: Vec<&Sample> = DELAYS_MS
                .iter()
                .flat_map(|d| of_kind(&results[&(mode, *d)], kind))
                .collect();
            let n = picked.len() as f64;
            let mean = |node: usize, rpc: &str| {
                picked
                    .iter()
                    .map(|s| s.calls[node].get(rpc).copied().unwrap_or(0))
                    .sum::<u64>() as f64
                    / n
            };
            let mut varied = Vec::new();
            for node in 0..2 {
                for rpc in RPCS {
                    let counts: BTreeSet<u64> = picked
                        .iter()
                        .map(|s| s.calls[node].get(rpc).copied().unwrap_or(0))
                        .collect();
                    if counts.len() > 1 {
                        varied.push(format!("{}{rpc} {:?}", ["local ", "other "][node], counts));
                    }
                }
            }
            let others: BTreeSet<String> = picked
                .iter()
                .flat_map(|s| {
                    (0..2).flat_map(move |node| {
                        s.calls[node]
                            .keys()
                            .filter(|rpc| !RPCS.contains(&rpc.as_str()))
                            .map(move |rpc| format!("{}{rpc}", ["local ", "other "][node]))
                    })
                })
                .collect();
            let other: Vec<String> = others
                .iter()
                .map(|label| {
                    let (node, rpc) = label.split_once(' ').unwrap();
                    let node = usize::from(node == "other");
                    format!("{label} {:.2}", mean(node, rpc))
                })
                .collect();
            println!(
                "{:<10} {:<13} | {:>10.2} {:>5.2} {:>7.2} | {:>10.2} {:>5.2} {:>7.2} | {}{}",
                mode,
                kind.label(),
                mean(0, "Read"),
                mean(0, "Scan"),
                mean(0, "Update"),
                mean(1, "Read"),
                mean(1, "Scan"),
                mean(1, "Update"),
                if other.is_empty() {
                    "-".to_string()
                } else {
                    other.join(", ")
                },
                if varied.is_empty() {
                    String::new()
                } else {
                    format!(" (varied: {})", varied.join(", "))
                },
            );
        }
    }

    // Bytes: one long session per mode on proxy C (node A, through the counting relay), d = 0.
    bed.cluster.set_replication_delay(Duration::ZERO);
    let counted = bed.start_counted_proxy().await?;
    println!();
    println!(
        "bytes per turn, one {BYTES_TURNS}-turn session per mode, every turn on one proxy on node A, \
         d = 0, after the runs above (the keygroup holds their sessions too)"
    );
    println!(
        "proxy = its x-discedge-store-bytes; written = value bytes clients wrote to the nodes; relayed = \
         value bytes that reached the other node by replication (both: val only, no keys, clocks or framing)"
    );
    println!(
        "to node / from node = all bytes between the proxy and its own node on the wire (TLS, gRPC); \
         the confirming Keys on the other node is not in them"
    );
    println!(
        "{:<10} {:>4} | {:>7} {:>8} {:>8} | {:>8} {:>9} | {:>13}",
        "mode", "turn", "proxy", "written", "relayed", "to node", "from node", "prompt tokens"
    );
    let mut flat = Vec::new();
    for mode in MODES {
        let mut session = Value::Null;
        let mut turns = Vec::new();
        for turn in 1..=BYTES_TURNS {
            let kind = if turn == 1 { Kind::New } else { Kind::Same };
            let (id, s) = bed.turn(counted, mode, &session, turn, kind).await?;
            session = id;
            if [1, 2, 10, 25, 50].contains(&turn) {
                println!(
                    "{:<10} {:>4} | {:>7} {:>8} {:>8} | {:>8} {:>9} | {:>13}",
                    mode,
                    turn,
                    s.store_bytes,
                    s.written,
                    s.relayed,
                    s.wire[0],
                    s.wire[1],
                    s.prompt_n
                );
            }
            turns.push(s);
        }
        let range = |f: fn(&Sample) -> u64| {
            let later: Vec<u64> = turns[1..].iter().map(f).collect();
            format!(
                "{}-{}",
                later.iter().min().unwrap_or(&0),
                later.iter().max().unwrap_or(&0)
            )
        };
        flat.push(format!(
            "{mode}: turns 2-{BYTES_TURNS}, min-max per turn: relayed {} B, to node {} B, from node {} B",
            range(|s| s.relayed),
            range(|s| s.wire[0]),
            range(|s| s.wire[1]),
        ));
    }
    for line in flat {
        println!("{line}");
    }
    println!();
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
