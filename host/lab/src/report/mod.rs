//! `discedge report DIR`: turns the CSVs of one or more scenario runs into the experiment's
//! report, so that a researcher gets the paper's comparison from a run without a notebook:
//! `report.md` (a table per mode, the planted facts each mode recalled when the scenario has
//! `expect:` checks, and the paper's figures next to ours, also printed) and five SVG plots. Only answered turns (HTTP 200) count; failures show in each mode's ok/total.

mod plot;
mod recall;
mod roaming;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::args::ReportArgs;
use crate::scenario::{ALL_MODES, Row, read_csv};
pub use plot::PLOTS;

/// What a report wrote.
#[derive(Debug)]
pub struct Report {
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
    /// The tables, as printed.
    pub tables: String,
}

/// One CSV row and the file it came from: turns are comparable only within one run.
pub struct Turn {
    pub source: usize,
    pub row: Row,
}

/// Every row of every CSV in the folder.
pub struct Data {
    pub files: Vec<PathBuf>,
    pub turns: Vec<Turn>,
    /// Modes found, the paper's four first (in `--mode all` order), then others as they appear.
    pub modes: Vec<String>,
}

impl Data {
    /// Reads every `*.csv` directly in `dir`, in name order.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the report folder {}", dir.display()))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let csv = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if csv && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            bail!(
                "no scenario CSVs (*.csv) in {}: write some with `discedge scenario FILE.yml --out {0}`",
                dir.display()
            );
        }
        let mut turns = Vec::new();
        for (source, path) in files.iter().enumerate() {
            let rows = read_csv(path)
                .with_context(|| format!("{} is not a scenario CSV", path.display()))?;
            turns.extend(rows.into_iter().map(|row| Turn { source, row }));
        }
        if turns.is_empty() {
            bail!("the CSVs in {} have no rows", dir.display());
        }
        let mut modes: Vec<String> = ALL_MODES
            .iter()
            .filter(|m| turns.iter().any(|t| t.row.mode == **m))
            .map(|m| m.to_string())
            .collect();
        for turn in &turns {
            if !modes.contains(&turn.row.mode) {
                modes.push(turn.row.mode.clone());
            }
        }
        Ok(Self {
            files,
            turns,
            modes,
        })
    }

    /// The answered turns of `mode`.
    pub fn ok_rows<'a>(&'a self, mode: &'a str) -> impl Iterator<Item = &'a Turn> + 'a {
        self.turns
            .iter()
            .filter(move |t| t.row.mode == mode && t.row.ok())
    }

    /// Each run of `mode` (one CSV, one scenario) as its answered rows in turn order.
    pub fn runs<'a>(&'a self, mode: &'a str) -> Vec<Vec<&'a Row>> {
        self.sourced_runs(mode)
            .into_iter()
            .map(|(_, rows)| rows)
            .collect()
    }

    /// [`Data::runs`], each with the index of the CSV it came from.
    pub fn sourced_runs<'a>(&'a self, mode: &'a str) -> Vec<(usize, Vec<&'a Row>)> {
        let mut runs: BTreeMap<(usize, &str), Vec<&Row>> = BTreeMap::new();
        for t in self.ok_rows(mode) {
            runs.entry((t.source, t.row.scenario.as_str()))
                .or_default()
                .push(&t.row);
        }
        runs.into_iter()
            .map(|((source, _), mut rows)| {
                rows.sort_by_key(|r| r.turn);
                (source, rows)
            })
            .collect()
    }
}

/// Writes report.md and the plots into `--out` (default DIR) and prints the tables.
pub fn run(args: &ReportArgs) -> anyhow::Result<Report> {
    let data = Data::load(&args.dir)?;
    let out = args.out.as_deref().unwrap_or(&args.dir);
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;

    let mut plots = Vec::new();
    for plot in &PLOTS {
        let path = out.join(plot.file);
        plot.draw(&data, &path)
            .with_context(|| format!("cannot draw {}", path.display()))?;
        plots.push(path);
    }
    let (modes, comparisons) = (table::modes(&data), table::comparisons(&data));
    let (roamed, facts) = (roaming::roaming(&data), recall::facts(&data));
    let mut tables = format!("{modes}\n");
    if !facts.is_empty() {
        tables.push_str(&format!("{facts}\n"));
    }
    tables.push_str(&format!("{comparisons}\n{roamed}"));
    let markdown = out.join("report.md");
    std::fs::write(
        &markdown,
        table::markdown(&data, &modes, &facts, &comparisons, &roamed),
    )
    .with_context(|| format!("cannot write {}", markdown.display()))?;

    println!("{tables}");
    println!("report: {}", markdown.display());
    for path in &plots {
        println!("plot:   {}", path.display());
    }
    Ok(Report {
        markdown,
        plots,
        tables,
    })
}

/// Prompt tokens llama-server took from its prompt cache rather than evaluating: `cache_n`,
/// kept in the CSV as `context_tokens - prompt_n`. (Its `tokens_cached` is not this: it counts
/// everything in the slot after the turn, the new prompt and the reply included.)
pub fn cached_tokens(row: &Row) -> Option<u64> {
    Some(row.context_tokens?.saturating_sub(row.prompt_n?))
}

/// The median of some values (NaN-free), or `None` for none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    crate::scenario::record::median(&values)
}

/// A Markdown table padded to its columns; `numbers` right-aligns all but the first column.
fn markdown_table(header: &[&str], rows: &[Vec<String>], numbers: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| match numbers && i > 0 {
                true => format!("{cell:>w$}"),
                false => format!("{cell:<w$}"),
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut text = line(&mut header.iter().copied());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| match numbers && i > 0 {
            true => format!("{}:", "-".repeat(w - 1)),
            false => "-".repeat(w),
        })
        .collect();
    text.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        text.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    text
}
