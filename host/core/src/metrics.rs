//! Operator metrics, served at `GET /metrics` in Prometheus' text format: plain atomics and
//! one small map, no registry crate (the set is fixed and small).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a turn's time went inside the proxy, and what it wrote to the store. Here, not in
/// `session`, because the metrics read it and the session fills it in: the lower layer owns it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnTiming {
    /// Loading the session, waits for replication included.
    pub store_read: Duration,
    /// Instantiating the policy and its `prepare` and `commit` calls.
    pub policy: Duration,
    /// The call to llama-server.
    pub llm: Duration,
    /// The completions the policy asked for before the turn's prompt (contract 0.2.0), not
    /// counted in `policy` or `llm`.
    pub policy_llm: Duration,
    /// How many completions the policy asked for.
    pub policy_completions: u32,
    pub store_write: Duration,
    /// Bytes the commit wrote to the store.
    pub store_bytes: u64,
    /// Old records the policy's prompt left out (its `dropped-records`), for the metrics.
    pub dropped_records: u32,
}

/// Upper bounds (seconds) of the latency histograms: from tens of microseconds (policy, store)
/// to a minute (the model).
const BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 60.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, stage: &str) {
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{stage=\"{stage}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{stage=\"{stage}\"}} {count}");
    }
}

/// Everything counted since start.
#[derive(Default)]
pub struct Metrics {
    /// (mode, HTTP status, error code or "") -> requests.
    requests: Mutex<BTreeMap<(String, u16, &'static str), u64>>,
    store_read: Histogram,
    policy: Histogram,
    llm: Histogram,
    store_write: Histogram,
    /// Only turns whose policy asked for completions.
    policy_llm: Histogram,
    policy_completions: AtomicU64,
    prompt_tokens_evaluated: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    store_bytes: AtomicU64,
    replication_waits: AtomicU64,
    dropped_records: AtomicU64,
    turns_dropping_records: AtomicU64,
}

impl Metrics {
    /// One answered turn (either endpoint): its mode, status, error code (if any) and time split.
    pub fn request(
        &self,
        mode: &str,
        status: u16,
        code: &'static str,
        timing: Option<&TurnTiming>,
    ) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((mode.to_owned(), status, code))
            .or_default() += 1;
        if let Some(t) = timing {
            self.store_read.observe(t.store_read);
            self.policy.observe(t.policy);
            self.llm.observe(t.llm);
            self.store_write.observe(t.store_write);
            if t.policy_completions > 0 {
                self.policy_llm.observe(t.policy_llm);
                self.policy_completions
                    .fetch_add(u64::from(t.policy_completions), Ordering::Relaxed);
            }
            self.store_bytes.fetch_add(t.store_bytes, Ordering::Relaxed);
            if t.dropped_records > 0 {
                self.dropped_records
                    .fetch_add(u64::from(t.dropped_records), Ordering::Relaxed);
                self.turns_dropping_records.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Prompt tokens llama-server evaluated, and those it reused from its cache.
    pub fn prompt_tokens(&self, evaluated: u64, cached: u64) {
        self.prompt_tokens_evaluated
            .fetch_add(evaluated, Ordering::Relaxed);
        self.prompt_tokens_cached
            .fetch_add(cached, Ordering::Relaxed);
    }

    /// A turn that had to wait for replication (roaming lag).
    pub fn replication_wait(&self) {
        self.replication_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition; `policy_loads` comes from the policy registry.
    pub fn render(&self, policy_loads: u64, policies_loaded: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP discedge_requests_total Turn requests (/completion and /v1/chat/completions, streamed or not) by mode, HTTP status and error code (499 client_disconnected: a client left a stream).\n");
        out.push_str("# TYPE discedge_requests_total counter\n");
        for ((mode, status, code), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "discedge_requests_total{{mode=\"{}\",status=\"{status}\",code=\"{code}\"}} {n}",
                escape(mode)
            );
        }
        out.push_str("# HELP discedge_turn_seconds Where a turn's time went inside the proxy (policy_llm: the completions a policy asked for, counted only in turns that asked).\n");
        out.push_str("# TYPE discedge_turn_seconds histogram\n");
        for (stage, histogram) in [
            ("store_read", &self.store_read),
            ("policy", &self.policy),
            ("llm", &self.llm),
            ("store_write", &self.store_write),
            ("policy_llm", &self.policy_llm),
        ] {
            histogram.render(&mut out, "discedge_turn_seconds", stage);
        }
        let counters = [
            (
                "discedge_prompt_tokens_evaluated_total",
                "Prompt tokens llama-server evaluated.",
                &self.prompt_tokens_evaluated,
            ),
            (
                "discedge_prompt_tokens_cached_total",
                "Prompt tokens llama-server reused from its cache.",
                &self.prompt_tokens_cached,
            ),
            (
                "discedge_store_bytes_written_total",
                "Bytes turns wrote to the context store.",
                &self.store_bytes,
            ),
            (
                "discedge_replication_waits_total",
                "Turns that waited for replication from another node.",
                &self.replication_waits,
            ),
            (
                "discedge_policy_completions_total",
                "Completions policies asked the model for before building a turn's prompt (a summary, say).",
                &self.policy_completions,
            ),
            (
                "discedge_dropped_records_total",
                "Old records (turns) policies left out of prompts to fit the window, summed over turns.",
                &self.dropped_records,
            ),
            (
                "discedge_turns_dropping_records_total",
                "Turns whose prompt left out old records.",
                &self.turns_dropping_records,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP discedge_policy_loads_total Policy versions loaded since start (first loads and swaps).\n# TYPE discedge_policy_loads_total counter\ndiscedge_policy_loads_total {policy_loads}"
        );
        let _ = writeln!(
            out,
            "# HELP discedge_policies_loaded Policies serving now.\n# TYPE discedge_policies_loaded gauge\ndiscedge_policies_loaded {policies_loaded}"
        );
        out
    }
}

/// Label values are policy names (file stems the operator chose): escape what Prometheus'
/// format needs escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let metrics = Metrics::default();
        let timing = TurnTiming {
            llm: Duration::from_millis(20),
            store_bytes: 100,
            ..Default::default()
        };
        metrics.request("raw", 200, "", Some(&timing));
        metrics.request("raw", 200, "", Some(&timing));
        metrics.request("x\"y", 400, "unknown_mode", None);
        metrics.prompt_tokens(5, 40);
        let text = metrics.render(3, 4);
        assert!(
            text.contains("discedge_requests_total{mode=\"raw\",status=\"200\",code=\"\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "discedge_requests_total{mode=\"x\\\"y\",status=\"400\",code=\"unknown_mode\"} 1"
        ));
        assert!(text.contains("discedge_turn_seconds_bucket{stage=\"llm\",le=\"0.01\"} 0"));
        assert!(text.contains("discedge_turn_seconds_bucket{stage=\"llm\",le=\"0.05\"} 2"));
        assert!(text.contains("discedge_turn_seconds_count{stage=\"llm\"} 2"));
        assert!(text.contains("discedge_store_bytes_written_total 200"));
        assert!(text.contains("discedge_prompt_tokens_cached_total 40"));
        assert!(text.contains("discedge_policy_loads_total 3"));
    }
}
