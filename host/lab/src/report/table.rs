//! The report's numbers: one row per mode, and the paper's comparisons next to ours. Tables are
//! Markdown padded to their columns' width, so the same text reads well printed and rendered.

use std::collections::HashMap;

use super::{Data, PLOTS, cached_tokens, markdown_table, median, recall};
use crate::scenario::Row;

/// The per-mode table.
pub fn modes(data: &Data) -> String {
    let mut header = vec![
        "mode",
        "turns ok",
        "round trip ms (median)",
        "llm ms (median)",
        "proxy overhead ms (median)",
        "request bytes (median)",
        "store bytes (total)",
        "prompt tokens evaluated / cached (mean)",
    ];
    let mut rows: Vec<Vec<String>> = data.modes.iter().map(|m| mode_row(data, m)).collect();
    if recall::any(data) {
        header.push("planted facts recalled");
        header.push("planted facts in the prompt");
        for (row, mode) in rows.iter_mut().zip(&data.modes) {
            let tally = recall::tally(data, mode);
            row.push(tally.as_ref().map_or("n/a".into(), |t| t.text()));
            row.push(tally.map_or("n/a".into(), |t| {
                format!("{} of {}", t.in_context, t.checks)
            }));
        }
    }
    markdown_table(&header, &rows, true)
}

fn mode_row(data: &Data, mode: &str) -> Vec<String> {
    let total = data.turns.iter().filter(|t| t.row.mode == mode).count();
    let ok: Vec<&Row> = data.ok_rows(mode).map(|t| &t.row).collect();
    let med = |value: &dyn Fn(&Row) -> Option<f64>, decimals: usize| {
        let values = ok.iter().filter_map(|r| value(r)).collect();
        median(values).map_or("n/a".into(), |v| format!("{v:.decimals$}"))
    };
    let mean = |value: &dyn Fn(&Row) -> Option<u64>| {
        let values: Vec<u64> = ok.iter().filter_map(|r| value(r)).collect();
        let sum: u64 = values.iter().sum();
        match values.len() {
            0 => "n/a".to_string(),
            n => format!("{:.0}", sum as f64 / n as f64),
        }
    };
    vec![
        mode.to_string(),
        format!("{}/{total}", ok.len()),
        med(&|r| Some(r.round_trip_ms), 1),
        med(&|r| r.llm_ms, 1),
        med(&|r| r.llm_ms.map(|llm| r.round_trip_ms - llm), 1),
        med(&|r| Some(r.request_bytes as f64), 0),
        total_store_bytes(&ok).map_or("n/a".into(), |b| b.to_string()),
        format!("{} / {}", mean(&|r| r.prompt_n), mean(&cached_tokens)),
    ]
}

/// Bytes written to the store over these turns; `None` unless every turn reports them (a
/// partial sum would read as a measurement).
fn total_store_bytes(rows: &[&Row]) -> Option<u64> {
    if rows.is_empty() {
        return None;
    }
    rows.iter().map(|r| r.store_bytes).sum()
}

/// One of the paper's comparisons: `ours` against `other` on one figure.
struct Comparison {
    what: &'static str,
    paper: &'static str,
    ours: &'static str,
    other: &'static str,
    figure: fn(&[&Row]) -> Option<f64>,
    unit: &'static str,
    /// How a lower figure for `ours` reads, and a higher one.
    lower: &'static str,
    higher: &'static str,
}

const COMPARISONS: [Comparison; 3] = [
    Comparison {
        what: "tokenized vs raw: median response time",
        paper: "up to 14.46% better",
        ours: "tokenized",
        other: "raw",
        figure: |rows| median(rows.iter().map(|r| r.round_trip_ms).collect()),
        unit: "ms",
        lower: "better",
        higher: "worse",
    },
    Comparison {
        what: "tokenized vs raw: sync bytes",
        paper: "up to 15% lower",
        ours: "tokenized",
        other: "raw",
        figure: |rows| total_store_bytes(rows).map(|b| b as f64),
        unit: "bytes",
        lower: "lower",
        higher: "higher",
    },
    Comparison {
        what: "tokenized vs client-side: median request size",
        paper: "90% smaller",
        ours: "tokenized",
        other: "client-side",
        figure: |rows| median(rows.iter().map(|r| r.request_bytes as f64).collect()),
        unit: "bytes",
        lower: "smaller",
        higher: "larger",
    },
];

/// The paper's comparisons next to ours.
pub fn comparisons(data: &Data) -> String {
    let rows: Vec<Vec<String>> = COMPARISONS
        .iter()
        .map(|c| vec![c.what.into(), c.paper.into(), compare(data, c)])
        .collect();
    markdown_table(&["comparison", "paper", "ours"], &rows, false)
}

/// Ours as a percentage, over the turns both modes answered in the same run (same CSV,
/// scenario and turn): a mode that stopped early must not win by skipping the long turns.
fn compare(data: &Data, c: &Comparison) -> String {
    for mode in [c.ours, c.other] {
        if data.ok_rows(mode).next().is_none() {
            return format!("n/a (no answered {mode} turns)");
        }
    }
    let key = |r: &Row| (r.scenario.clone(), r.turn);
    let others: HashMap<_, &Row> = data
        .ok_rows(c.other)
        .map(|t| ((t.source, key(&t.row)), &t.row))
        .collect();
    let (ours, other): (Vec<&Row>, Vec<&Row>) = data
        .ok_rows(c.ours)
        .filter_map(|t| Some((&t.row, *others.get(&(t.source, key(&t.row)))?)))
        .unzip();
    if ours.is_empty() {
        return "n/a (no turn answered in both modes in one run)".into();
    }
    let (Some(a), Some(b)) = ((c.figure)(&ours), (c.figure)(&other)) else {
        return format!("n/a (the CSVs lack the {} figures)", c.unit);
    };
    if b == 0.0 {
        return format!("n/a ({} is 0 {})", c.other, c.unit);
    }
    let percent = (b - a) / b * 100.0;
    let verdict = if percent >= 0.0 { c.lower } else { c.higher };
    format!(
        "{:.2}% {verdict} ({a:.0} vs {b:.0} {}, {} turns)",
        percent.abs(),
        c.unit,
        ours.len()
    )
}

/// The whole report.md.
pub fn markdown(data: &Data, modes: &str, facts: &str, comparisons: &str, roamed: &str) -> String {
    let files: Vec<String> = data
        .files
        .iter()
        .map(|f| format!("`{}`", f.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    let mut scenarios: Vec<&str> = data.turns.iter().map(|t| t.row.scenario.as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    let ok = data.turns.iter().filter(|t| t.row.ok()).count();
    let mut md = format!(
        "# Scenario report\n\n{} turns ({ok} answered) of scenario {} from {}.\n\n## Per mode\n\n{modes}\n",
        data.turns.len(),
        scenarios.join(", "),
        files.join(", "),
    );
    md.push_str(
        "- Medians and means are over answered turns (HTTP 200); `turns ok` counts the rest too.
- *round trip*: the client's, from the first send to the answer, lag retries included.
- *llm*: the proxy's wait for llama-server (its `Server-Timing` `llm`). *Proxy overhead* =
  round trip - llm: everything but the model, both HTTP hops included.
- *store bytes*: what the proxy wrote to its store (`x-discedge-store-bytes`), which is what
  FReD replicates to each peer. `client-side` stores nothing.
- *prompt tokens*: evaluated is llama-server's `prompt_n`; cached is the prompt reused from its
  prompt cache (`context_tokens - prompt_n`, i.e. `timings.cache_n`).\n",
    );
    if !facts.is_empty() {
        md.push_str(
            "- *planted facts recalled*: answers to the scenario's `expect:` messages that mention
  one of the alternatives (case-insensitively); a check the mode did not answer (failed, or
  stopped before it) counts as not recalled. The CSV's `reply` column shows each answer.
- *planted facts in the prompt*: checks whose prompt, as llama-server saw it, still held one
  of the alternatives (kept turns, a summary, or an earlier answer): what the policy kept,
  whatever the model made of it (CSV column `in_context`).\n",
        );
        md.push_str(&format!(
            "\n## Planted facts\n\n{facts}\nPer check: `yes` the answer mentions it, `no` it \
             does not, `-` not answered; with several runs, recalled/runs.\n"
        ));
    }
    md.push('\n');
    if !roamed.is_empty() {
        md.push_str(&format!(
            "## Roamed turns\n\n{roamed}\nA roamed turn is one served by another node than the turn \
             before it. Without the roaming warm-up (`discedge serve --warm-up`, or the handover \
             hint `POST /sessions/{{id}}/warm`) the node it roams to evaluates the whole context; \
             with it, about what a same-node turn evaluates. *prompt ms* is llama-server's \
             `timings.prompt_ms`, its share of the time to first token.\n\n"
        ));
    }
    md.push_str(&format!("## Against the paper\n\n{comparisons}\n"));
    md.push_str(
        "The paper: Qwen1.5-0.5B-Chat on an M2 and a Jetson TX2, 8-9-turn conversations roaming
between two FReD nodes; its sync bytes are FReD peer traffic. Ours compares two modes over the
turns both answered in the same run, with whatever model and store the CSVs came from.\n\n## Plots\n\n",
    );
    for plot in &PLOTS {
        let (file, title) = (plot.file, plot.title);
        md.push_str(&format!("### {title}\n\n![{title}]({file})\n\n"));
    }
    md.push_str(
        "With several runs of a mode, each point is the median over the runs that reached that turn.\n",
    );
    md
}
