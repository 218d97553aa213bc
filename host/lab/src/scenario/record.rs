//! What a scenario run leaves behind: one CSV row per turn, written as soon as the turn ends
//! (so an interrupted run keeps what it measured), and a summary per mode.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One turn as the client saw it. Empty fields mean "not known": llama-server's figures are
/// absent when a turn failed or was replayed from the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// When the turn was first sent, RFC 3339 UTC.
    pub timestamp: String,
    pub scenario: String,
    pub mode: String,
    /// The location's name, or `local`.
    pub node: String,
    pub session: String,
    pub turn: u32,
    /// From the first send to the final answer, retries and their backoff included.
    pub round_trip_ms: f64,
    /// Size of the JSON body sent (once; retries resend the same body).
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// Characters of the prompt the model saw (llama-server's `prompt`, as text).
    pub prompt_chars: Option<usize>,
    /// Tokens of context the model worked on: `prompt_n + cache_n`.
    pub context_tokens: Option<u64>,
    pub prompt_n: Option<u64>,
    pub prompt_ms: Option<f64>,
    pub predicted_n: Option<u64>,
    pub predicted_ms: Option<f64>,
    pub tokens_cached: Option<u64>,
    pub tokens_evaluated: Option<u64>,
    /// The proxy's own split of the turn (its `Server-Timing` header), in milliseconds. These
    /// five columns came later: `serde(default)` keeps older CSVs readable.
    #[serde(default)]
    pub store_read_ms: Option<f64>,
    #[serde(default)]
    pub policy_ms: Option<f64>,
    #[serde(default)]
    pub llm_ms: Option<f64>,
    #[serde(default)]
    pub store_write_ms: Option<f64>,
    /// Bytes the turn wrote to the store (`x-discedge-store-bytes`): 0 for `client-side` and
    /// for replayed turns.
    #[serde(default)]
    pub store_bytes: Option<u64>,
    /// Absent when no HTTP answer came (connection refused, timeout).
    pub http_status: Option<u16>,
    /// Resends after a 409 caused by replication lag.
    pub retries: u32,
    /// `code: message` of a failed turn.
    pub error: String,
    /// Characters of the model's reply (`content`); empty for a failed turn.
    #[serde(default)]
    pub reply_chars: Option<usize>,
    /// A planted-fact check: the alternatives the reply should mention, `|`-joined; empty when
    /// the message has none.
    #[serde(default)]
    pub expect: String,
    /// Whether the reply mentions one of them (case-insensitively); empty when there is no
    /// check or no reply.
    #[serde(default)]
    pub recalled: Option<bool>,
    /// The model's reply on a turn with a check, to audit the match; empty on other turns.
    #[serde(default)]
    pub reply: String,
    /// Whether the prompt the model saw (llama-server's `prompt`) mentions one of the
    /// alternatives: the fact was still in its context, whatever the model made of it. Empty
    /// when there is no check or no reply.
    #[serde(default)]
    pub in_context: Option<bool>,
}

impl Row {
    /// The turn succeeded (HTTP 200).
    pub fn ok(&self) -> bool {
        self.http_status == Some(200)
    }
}

/// The CSV file of one run, flushed after every row.
pub struct CsvLog {
    pub path: PathBuf,
    writer: csv::Writer<File>,
}

impl CsvLog {
    /// Creates `DIR/<slug>-<UTC time>.csv`, never overwriting an earlier run's file.
    pub fn create(dir: &Path, slug: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
        let stamp = compact_utc(SystemTime::now());
        for n in 1.. {
            let name = match n {
                1 => format!("{slug}-{stamp}.csv"),
                n => format!("{slug}-{stamp}-{n}.csv"),
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        writer: csv::Writer::from_writer(file),
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        unreachable!("some file name is free")
    }

    /// Appends one turn's row and flushes it, so a run cut short keeps its rows.
    pub fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        self.writer.serialize(row)?;
        self.writer.flush()?;
        Ok(())
    }
}

/// Reads a scenario CSV back (for tests and the report).
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(reader.deserialize().collect::<Result<_, _>>()?)
}

/// How one mode went.
#[derive(Debug, Clone)]
pub struct ModeSummary {
    pub mode: String,
    pub planned: usize,
    pub ok: usize,
    pub failed: usize,
    pub retries: u32,
    pub median_ms: Option<f64>,
    pub request_bytes: usize,
    /// The largest context the model worked on in this mode.
    pub max_context_tokens: Option<u64>,
    /// `turn N: status code: message` of the failure that stopped the mode.
    pub error: Option<String>,
    /// Planted-fact checks in the scenario (the runner sets it: unsent turns leave no rows).
    pub checks: usize,
    /// Checks whose answer mentioned the fact.
    pub recalled: usize,
}

impl ModeSummary {
    /// The summary of one mode's rows, against the turns it planned.
    pub fn of(mode: &str, planned: usize, rows: &[Row]) -> Self {
        let mut times: Vec<f64> = rows
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.round_trip_ms)
            .collect();
        times.sort_by(f64::total_cmp);
        let failed = rows.iter().find(|r| !r.ok());
        Self {
            mode: mode.into(),
            planned,
            ok: times.len(),
            failed: rows.len() - times.len(),
            retries: rows.iter().map(|r| r.retries).sum(),
            median_ms: median(&times),
            request_bytes: rows.iter().map(|r| r.request_bytes).sum(),
            max_context_tokens: rows.iter().filter_map(|r| r.context_tokens).max(),
            error: failed.map(|r| {
                let status = r.http_status.map_or("no answer:".into(), |s| s.to_string());
                format!("turn {}: {status} {}", r.turn, r.error)
            }),
            checks: rows.iter().filter(|r| !r.expect.is_empty()).count(),
            recalled: rows.iter().filter(|r| r.recalled == Some(true)).count(),
        }
    }
}

/// The median of sorted values.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// The summary table printed at the end of a run.
pub fn print_summary(summaries: &[ModeSummary]) {
    let checks = summaries.iter().any(|s| s.checks > 0);
    println!(
        "{:<12} {:>7} {:>6} {:>7} {:>17} {:>13} {:>12}{}",
        "mode",
        "turns",
        "failed",
        "retries",
        "median round trip",
        "request bytes",
        "max context",
        if checks { "  facts recalled" } else { "" }
    );
    for s in summaries {
        let median = s.median_ms.map_or("-".into(), |ms| format!("{ms:.1} ms"));
        let context = s.max_context_tokens.map_or("-".into(), |t| t.to_string());
        let recalled = match checks {
            true => format!("  {:>14}", format!("{} of {}", s.recalled, s.checks)),
            false => String::new(),
        };
        println!(
            "{:<12} {:>7} {:>6} {:>7} {:>17} {:>13} {:>12}{recalled}",
            s.mode,
            format!("{}/{}", s.ok, s.planned),
            s.failed,
            s.retries,
            median,
            s.request_bytes,
            context
        );
    }
    for s in summaries {
        if let Some(error) = &s.error {
            println!("{} stopped at {error}", s.mode);
        }
    }
}

/// `2025-01-31T09:05:07.123Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let (date, [h, m, s], ms) = utc_parts(time);
    format!("{date}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// `20250131T090507Z`, for file names.
fn compact_utc(time: SystemTime) -> String {
    let (date, [h, m, s], _) = utc_parts(time);
    format!("{}T{h:02}{m:02}{s:02}Z", date.replace('-', ""))
}

/// (`YYYY-MM-DD`, [hour, minute, second], millisecond) of a time after 1970, in UTC.
fn utc_parts(time: SystemTime) -> (String, [u64; 3], u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut days = secs / 86_400;
    let of_day = secs % 86_400;
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let february = if leap(year) { 29 } else { 28 };
    let lengths = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    let date = format!("{year:04}-{:02}-{:02}", month + 1, days + 1);
    let clock = [of_day / 3600, of_day / 60 % 60, of_day % 60];
    (date, clock, since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formatting() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_millis(secs);
        assert_eq!(rfc3339_utc(at(0)), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 (a leap day) 23:59:59.999
        assert_eq!(
            rfc3339_utc(at(1_709_251_199_999)),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_utc(at(1_709_251_200_000)),
            "2024-03-01T00:00:00.000Z"
        );
        // 2000 is a leap year, 1900 rule irrelevant here; 2001-01-01
        assert_eq!(compact_utc(at(978_307_200_000)), "20010101T000000Z");
    }
}
