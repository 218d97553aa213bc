//! Planted facts: scenario messages with `expect:` alternatives, and whether each mode's answer
//! mentioned them. A check counts against a mode in every run (CSV and scenario) where that mode
//! ran, reached or not: a mode that stopped before the question recalled nothing. Which turns
//! carry checks comes from the rows of all modes of the run, since unsent turns leave no rows.

use std::collections::{BTreeMap, BTreeSet};

use super::{Data, markdown_table};

/// One check in one run: (CSV index, scenario, turn).
type Key<'a> = (usize, &'a str, u32);

/// The checks of every run, with their alternatives as written in the CSV (`a|b`).
fn checks(data: &Data) -> BTreeMap<Key<'_>, &str> {
    let mut checks = BTreeMap::new();
    for t in &data.turns {
        if !t.row.expect.is_empty() {
            let key = (t.source, t.row.scenario.as_str(), t.row.turn);
            checks.insert(key, t.row.expect.as_str());
        }
    }
    checks
}

/// The runs (CSV index, scenario) in which `mode` sent at least one turn.
fn runs_of<'a>(data: &'a Data, mode: &str) -> BTreeSet<(usize, &'a str)> {
    let turns = data.turns.iter().filter(|t| t.row.mode == mode);
    turns.map(|t| (t.source, t.row.scenario.as_str())).collect()
}

/// How `mode` did on the checks of its runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Checks the mode's runs hold.
    pub checks: usize,
    /// Answers that mentioned the fact.
    pub recalled: usize,
    /// Checks with no answer (the turn failed, or the mode stopped before it).
    pub unanswered: usize,
    /// Answered checks whose prompt still held the fact (see `Row::in_context`).
    pub in_context: usize,
}

impl Tally {
    /// `3 of 8`, and how many were not answered.
    pub fn text(&self) -> String {
        match self.unanswered {
            0 => format!("{} of {}", self.recalled, self.checks),
            n => format!("{} of {} ({n} not answered)", self.recalled, self.checks),
        }
    }
}

/// The tally of `mode`, or `None` when its runs hold no checks.
pub fn tally(data: &Data, mode: &str) -> Option<Tally> {
    let (checks, runs) = (checks(data), runs_of(data, mode));
    let mut tally = Tally::default();
    for &(source, scenario, turn) in checks.keys() {
        if !runs.contains(&(source, scenario)) {
            continue;
        }
        tally.checks += 1;
        let row = data
            .turns
            .iter()
            .map(|t| (t.source, &t.row))
            .find(|(s, r)| {
                *s == source && r.mode == mode && r.scenario == scenario && r.turn == turn
            });
        if row.is_some_and(|(_, r)| r.in_context == Some(true)) {
            tally.in_context += 1;
        }
        match row.and_then(|(_, r)| r.recalled) {
            Some(true) => tally.recalled += 1,
            Some(false) => {}
            None => tally.unanswered += 1,
        }
    }
    (tally.checks > 0).then_some(tally)
}

/// Whether any CSV holds a check.
pub fn any(data: &Data) -> bool {
    data.turns.iter().any(|t| !t.row.expect.is_empty())
}

/// The alternatives as a table cell: ` / `-joined, the first few only when they are many.
fn shown(expect: &str) -> String {
    let mut cell = String::new();
    for (i, alternative) in expect.split('|').enumerate() {
        if i > 0 && cell.chars().count() + alternative.chars().count() > 32 {
            cell.push_str(" / …");
            break;
        }
        if i > 0 {
            cell.push_str(" / ");
        }
        cell.push_str(alternative);
    }
    cell
}

/// A row per check (scenario and turn), a column per mode: `yes`, `no`, or `-` (not answered);
/// with several runs, `recalled/runs`. "" when the CSVs hold no checks.
pub fn facts(data: &Data) -> String {
    let checks = checks(data);
    if checks.is_empty() {
        return String::new();
    }
    let mut facts: BTreeMap<(&str, u32), &str> = BTreeMap::new();
    for (&(_, scenario, turn), &expect) in &checks {
        facts.entry((scenario, turn)).or_insert(expect);
    }
    let scenarios: BTreeSet<&str> = facts.keys().map(|(s, _)| *s).collect();
    let runs: Vec<_> = data.modes.iter().map(|m| runs_of(data, m)).collect();
    let rows: Vec<Vec<String>> = facts
        .iter()
        .map(|(&(scenario, turn), expect)| {
            let mut row = match scenarios.len() {
                1 => vec![turn.to_string()],
                _ => vec![format!("{scenario} {turn}")],
            };
            row.push(shown(expect));
            for (mode, runs) in data.modes.iter().zip(&runs) {
                let (mut asked, mut recalled, mut answered) = (0, 0, 0);
                for &(source, _) in runs.iter().filter(|(_, s)| *s == scenario) {
                    if !checks.contains_key(&(source, scenario, turn)) {
                        continue;
                    }
                    asked += 1;
                    let recall = data.turns.iter().find_map(|t| {
                        let r = &t.row;
                        let this = t.source == source && r.mode == *mode && r.turn == turn;
                        (this && r.scenario == scenario)
                            .then_some(r.recalled)
                            .flatten()
                    });
                    answered += usize::from(recall.is_some());
                    recalled += usize::from(recall == Some(true));
                }
                row.push(match (asked, answered, recalled) {
                    (0, _, _) => String::new(),
                    (1, 0, _) => "-".into(),
                    (1, _, 1) => "yes".into(),
                    (1, _, _) => "no".into(),
                    (n, _, k) => format!("{k}/{n}"),
                });
            }
            row
        })
        .collect();
    let mut header = vec!["turn", "expect"];
    header.extend(data.modes.iter().map(String::as_str));
    markdown_table(&header, &rows, false)
}

#[cfg(test)]
mod tests {
    use super::super::Turn;
    use super::*;
    use crate::scenario::Row;

    /// One row; `recalled` `None` with an `expect` is a check that got no answer.
    fn row(mode: &str, turn: u32, expect: &str, recalled: Option<bool>) -> Row {
        Row {
            scenario: "S".into(),
            mode: mode.into(),
            turn,
            http_status: Some(if expect.is_empty() || recalled.is_some() {
                200
            } else {
                422
            }),
            expect: expect.into(),
            recalled,
            // The summarising mode kept every fact in its prompt; the others none.
            in_context: recalled.map(|_| mode == "summarize"),
            ..Row::default()
        }
    }

    fn data(runs: &[Vec<Row>], modes: &[&str]) -> Data {
        let turns = runs.iter().enumerate();
        let turns = turns.flat_map(|(source, rows)| {
            rows.iter().map(move |row| Turn {
                source,
                row: row.clone(),
            })
        });
        Data {
            files: (0..runs.len()).map(|i| format!("{i}.csv").into()).collect(),
            turns: turns.collect(),
            modes: modes.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn checks_count_per_mode_even_when_not_reached() {
        // truncate answers all three checks (two recalled); summarize recalls all three;
        // tokenized stops at turn 2 (422), so it answers none of them.
        let run = vec![
            row("truncate", 1, "", None),
            row("truncate", 2, "Biscuit|Bisky", Some(true)),
            row("truncate", 3, "86", Some(false)),
            row("truncate", 4, "Ljubljana", Some(true)),
            row("summarize", 1, "", None),
            row("summarize", 2, "Biscuit|Bisky", Some(true)),
            row("summarize", 3, "86", Some(true)),
            row("summarize", 4, "Ljubljana", Some(true)),
            row("tokenized", 1, "", None),
            row("tokenized", 2, "Biscuit|Bisky", None),
        ];
        let data = data(&[run], &["tokenized", "truncate", "summarize"]);
        let tally = |mode| tally(&data, mode).unwrap();
        let want = |checks, recalled, unanswered, in_context| Tally {
            checks,
            recalled,
            unanswered,
            in_context,
        };
        assert_eq!(tally("truncate"), want(3, 2, 0, 0));
        assert_eq!(tally("summarize"), want(3, 3, 0, 3));
        assert_eq!(tally("tokenized"), want(3, 0, 3, 0));
        assert_eq!(tally("truncate").text(), "2 of 3");
        assert_eq!(tally("tokenized").text(), "0 of 3 (3 not answered)");
        assert!(any(&data));

        let table = facts(&data);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| {
                l.split('|')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            lines[0],
            ["turn", "expect", "tokenized", "truncate", "summarize"]
        );
        assert_eq!(lines[2], ["2", "Biscuit / Bisky", "-", "yes", "yes"]);
        assert_eq!(lines[3], ["3", "86", "-", "no", "yes"]);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            shown("March 14|14 March|14th of March|14th March|14.3|14/3"),
            "March 14 / 14 March / 14th of March / …"
        );
    }

    #[test]
    fn several_runs_read_recalled_of_runs_and_no_checks_no_table() {
        let run = |recalled| {
            vec![
                row("truncate", 1, "", None),
                row("truncate", 2, "Biscuit", Some(recalled)),
            ]
        };
        let data = data(&[run(true), run(false), run(true)], &["truncate"]);
        assert_eq!(tally(&data, "truncate").unwrap().text(), "2 of 3");
        assert!(
            facts(&data).contains("| 2    | Biscuit | 2/3      |"),
            "{}",
            facts(&data)
        );

        let plain = super::super::Data {
            files: vec!["0.csv".into()],
            turns: vec![Turn {
                source: 0,
                row: row("raw", 1, "", None),
            }],
            modes: vec!["raw".into()],
        };
        assert!(!any(&plain));
        assert_eq!(tally(&plain, "raw"), None);
        assert_eq!(facts(&plain), "");
    }
}
