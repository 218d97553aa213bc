//! Roamed turns against same-node turns: what a client pays at the node it roams to (prompt
//! tokens the model evaluates, and the time that takes, the server's share of the time to
//! first token). Per CSV, so a run with the roaming warm-up (`discedge serve --warm-up`) and
//! one without sit side by side.

use super::{Data, markdown_table, median};
use crate::scenario::Row;

/// The table (Markdown), or "" when no run changed node.
pub fn roaming(data: &Data) -> String {
    let mut rows = Vec::new();
    for (source, file) in data.files.iter().enumerate() {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        for mode in &data.modes {
            let runs = data
                .sourced_runs(mode)
                .into_iter()
                .filter(|(from, _)| *from == source)
                .map(|(_, run)| run);
            let (mut same, mut roamed) = (Vec::new(), Vec::new());
            for run in runs {
                for pair in run.windows(2) {
                    let (before, turn) = (pair[0], pair[1]);
                    if turn.turn != before.turn + 1 {
                        continue;
                    }
                    match turn.node == before.node {
                        true => same.push(turn),
                        false => roamed.push(turn),
                    }
                }
            }
            if roamed.is_empty() {
                continue;
            }
            let med = |turns: &[&Row], value: fn(&Row) -> Option<f64>| {
                median(turns.iter().filter_map(|r| value(r)).collect())
                    .map_or("-".to_string(), |v| format!("{v:.1}"))
            };
            let evaluated = |r: &Row| r.prompt_n.map(|n| n as f64);
            let prompt_ms = |r: &Row| r.prompt_ms;
            rows.push(vec![
                name.to_string(),
                mode.clone(),
                format!("{} / {}", same.len(), roamed.len()),
                format!("{} / {}", med(&same, evaluated), med(&roamed, evaluated)),
                format!("{} / {}", med(&same, prompt_ms), med(&roamed, prompt_ms)),
            ]);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    markdown_table(
        &[
            "run",
            "mode",
            "turns same / roamed",
            "prompt tokens evaluated, median same / roamed",
            "prompt ms, median same / roamed",
        ],
        &rows,
        false,
    )
}
