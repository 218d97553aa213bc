//! `discedge report`: from scenario CSVs made here with known figures, it writes report.md with
//! the per-mode table and the paper's comparisons computed right, and four SVG plots that parse
//! and carry their axis labels; a missing mode reads "n/a"; a folder without CSVs is refused;
//! any mode in the CSVs shows (e.g. `summarize`), with the planted facts each one recalled.

use std::path::Path;

use clap::Parser;
use discedge::cli::{Cli, Command};
use discedge_lab::args::ReportArgs;
use discedge_lab::report::{self, PLOTS};
use discedge_lab::scenario::Row;
use discedge_lab::scenario::record::CsvLog;

/// One answered turn with the figures a run would record.
fn turn(mode: &str, turn: u32, round_trip: f64, request: usize, store: u64, context: u64) -> Row {
    let evaluated = match mode {
        "tokenized" | "truncate" => 30,
        _ => context,
    };
    Row {
        timestamp: "2026-01-01T00:00:00.000Z".into(),
        scenario: "Synthetic".into(),
        mode: mode.into(),
        node: "local".into(),
        session: format!("s{mode}"),
        turn,
        round_trip_ms: round_trip,
        request_bytes: request,
        response_bytes: 900,
        context_tokens: Some(context),
        prompt_n: Some(evaluated),
        llm_ms: Some(round_trip - 5.0),
        store_read_ms: Some(0.5),
        policy_ms: Some(0.2),
        store_write_ms: Some(1.0),
        store_bytes: Some(store),
        http_status: Some(200),
        ..Row::default()
    }
}

/// Nine turns per mode. Medians (turn 5): raw 700 ms, tokenized 580 ms; store bytes: raw
/// 6,750, tokenized 4,950; request bytes: tokenized 160, client-side 2,150. Raw also has a
/// failed tenth turn, which must count in its total only.
fn rows(modes: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &mode in modes {
        for t in 1..=9u32 {
            let f = f64::from(t);
            let context = 60 * u64::from(t);
            rows.push(match mode {
                "raw" => turn(
                    mode,
                    t,
                    400.0 + 60.0 * f,
                    150,
                    600 + 30 * u64::from(t),
                    context,
                ),
                "client-side" => turn(
                    mode,
                    t,
                    390.0 + 50.0 * f,
                    150 + 400 * t as usize,
                    0,
                    context,
                ),
                _ => turn(mode, t, 380.0 + 40.0 * f, 160, 550, context),
            });
        }
        if mode == "raw" {
            rows.push(Row {
                mode: mode.into(),
                turn: 10,
                http_status: Some(422),
                error: "context_full: no room".into(),
                ..Row::default()
            });
        }
    }
    rows
}

fn write_csv(dir: &Path, rows: &[Row]) {
    let mut log = CsvLog::create(dir, "synthetic").unwrap();
    for row in rows {
        log.write(row).unwrap();
    }
}

fn args(argv: &[&str]) -> ReportArgs {
    let argv = [&["discedge", "report"], argv].concat();
    let Command::Report(args) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    args
}

/// Every `<text>` of an SVG, after checking that it parses and is an SVG.
fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect()
}

#[test]
fn report_has_the_table_the_comparisons_and_five_plots() {
    let dir = tempfile::tempdir().unwrap();
    write_csv(
        dir.path(),
        &rows(&["raw", "tokenized", "truncate", "client-side"]),
    );
    let report = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap();

    let md = std::fs::read_to_string(&report.markdown).unwrap();
    assert_eq!(report.markdown, dir.path().join("report.md"));
    for table in report.tables.split("\n\n") {
        assert!(
            md.contains(table.trim()),
            "report.md holds the printed tables"
        );
    }
    let line = |start: &str| {
        let found = md.lines().find(|l| l.starts_with(start));
        found.unwrap_or_else(|| panic!("no line {start:?} in\n{md}"))
    };
    let cells = |start: &str| -> Vec<String> {
        let cells = line(start).split('|').map(|c| c.trim().to_owned());
        cells.filter(|c| !c.is_empty()).collect()
    };
    // mode, ok/total, round trip, llm, overhead, request, store, evaluated / cached
    assert_eq!(
        cells("| raw "),
        [
            "raw", "9/10", "700.0", "695.0", "5.0", "150", "6750", "300 / 0"
        ]
    );
    assert_eq!(
        cells("| tokenized "),
        [
            "tokenized",
            "9/9",
            "580.0",
            "575.0",
            "5.0",
            "160",
            "4950",
            "30 / 270"
        ]
    );
    assert_eq!(cells("| client-side ")[5], "2150");
    assert_eq!(cells("| client-side ")[6], "0");

    let ours = |start: &str| cells(start)[2].clone();
    assert!(
        ours("| tokenized vs raw: median response time").starts_with("17.14% better"),
        "{md}"
    );
    assert!(ours("| tokenized vs raw: sync bytes").starts_with("26.67% lower"));
    assert!(ours("| tokenized vs client-side").starts_with("92.56% smaller"));
    assert!(md.contains("up to 14.46% better") && md.contains("90% smaller"));

    assert_eq!(report.plots.len(), 5);
    let labels = [
        "round trip (ms)",
        "written to the store so far (bytes)",
        "request body (bytes)",
        "prompt the model saw (tokens)",
        "prompt tokens",
    ];
    for ((plot, path), label) in PLOTS.iter().zip(&report.plots).zip(labels) {
        assert_eq!(path, &dir.path().join(plot.file));
        assert!(
            md.contains(&format!("]({})", plot.file)),
            "report.md shows it"
        );
        let texts = svg_texts(path);
        for want in ["turn", label, "tokenized", "client-side"] {
            assert!(
                texts.iter().any(|t| t == want || t.contains(want)),
                "{}: no {want:?} in {texts:?}",
                plot.file
            );
        }
    }
    let tokens = svg_texts(&dir.path().join("prompt-tokens.svg"));
    assert!(tokens.iter().any(|t| t.contains("evaluated (prompt_n)")));
    assert!(tokens.iter().any(|t| t.contains("cached")));
    // No `expect:` checks in these CSVs: no recall column, no planted-facts table.
    assert!(!md.contains("planted facts") && !md.contains("## Planted facts"));
}

#[test]
fn missing_modes_read_na_and_out_is_separate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    write_csv(dir.path(), &rows(&["tokenized"]));
    let report = report::run(&args(&[
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(report.markdown, out.join("report.md"));
    assert!(out.join("store-bytes.svg").exists());
    assert!(!dir.path().join("report.md").exists());
    assert!(report.tables.contains("n/a (no answered raw turns)"));
    assert!(
        report
            .tables
            .contains("n/a (no answered client-side turns)")
    );
}

#[test]
fn several_runs_and_old_csvs_combine() {
    let dir = tempfile::tempdir().unwrap();
    write_csv(dir.path(), &rows(&["raw", "tokenized"]));
    // An older CSV: the same runs without the proxy-split and store columns.
    let old_rows = rows(&["raw", "tokenized"]);
    let mut csv = csv::Writer::from_path(dir.path().join("older.csv")).unwrap();
    let header = "timestamp,scenario,mode,node,session,turn,round_trip_ms,request_bytes,response_bytes,prompt_chars,context_tokens,prompt_n,prompt_ms,predicted_n,predicted_ms,tokens_cached,tokens_evaluated,http_status,retries,error";
    csv.write_record(header.split(',')).unwrap();
    for r in &old_rows {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let status = r.http_status.map_or(String::new(), |s| s.to_string());
        csv.write_record([
            &r.timestamp,
            &r.scenario,
            &r.mode,
            &r.node,
            &r.session,
            &r.turn.to_string(),
            &r.round_trip_ms.to_string(),
            &r.request_bytes.to_string(),
            "900",
            "",
            &opt(r.context_tokens),
            &opt(r.prompt_n),
            "",
            "",
            "",
            "",
            "",
            &status,
            "0",
            &r.error,
        ])
        .unwrap();
    }
    csv.flush().unwrap();

    let report = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap();
    let md = std::fs::read_to_string(&report.markdown).unwrap();
    assert!(md.contains("`older.csv`"), "{md}");
    let raw = md.lines().find(|l| l.starts_with("| raw ")).unwrap();
    assert!(raw.contains("18/20"), "{raw}");
    // Store bytes are known for half the turns only: no total, no sync-bytes comparison.
    assert!(raw.contains("n/a"), "{raw}");
    assert!(md.contains("n/a (the CSVs lack the bytes figures)"), "{md}");
    assert!(md.contains("17.14% better"), "{md}");
}

#[test]
fn folders_without_csvs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "no CSV here").unwrap();
    let error = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap_err();
    let error = format!("{error:#}");
    assert!(error.contains("no scenario CSVs (*.csv) in"), "{error}");
    assert!(!dir.path().join("report.md").exists());

    let missing = report::run(&args(&["/no/such/folder"])).unwrap_err();
    assert!(
        format!("{missing:#}").contains("cannot read the report folder /no/such/folder"),
        "{missing:#}"
    );

    std::fs::write(dir.path().join("other.csv"), "a,b\n1,2\n").unwrap();
    let error = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap_err();
    assert!(
        format!("{error:#}").contains("other.csv is not a scenario CSV"),
        "{error:#}"
    );
}

/// A run that roams (node changes between turns) gets the roamed-vs-same-node table: medians of
/// prompt tokens evaluated and prompt ms over each kind of turn, per CSV.
#[test]
fn roamed_turns_are_compared_with_same_node_turns() {
    let dir = tempfile::tempdir().unwrap();
    let plan = "AABBAABBB";
    let roaming: Vec<Row> = plan
        .chars()
        .enumerate()
        .map(|(i, node)| {
            let t = i as u32 + 1;
            let roamed = i > 0 && plan.as_bytes()[i - 1] as char != node;
            Row {
                node: node.to_string(),
                prompt_n: Some(if roamed { 100 + u64::from(t) } else { 20 }),
                prompt_ms: Some(if roamed { 900.0 } else { 150.0 }),
                ..turn("tokenized", t, 500.0, 160, 550, 60 * u64::from(t))
            }
        })
        .collect();
    write_csv(dir.path(), &roaming);
    let report = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap();
    let md = std::fs::read_to_string(&report.markdown).unwrap();
    assert!(md.contains("## Roamed turns"), "{md}");
    // Same-node turns 2, 4, 6, 8, 9; roamed 3 (103), 5 (105), 7 (107): median 105.
    let line = md
        .lines()
        .find(|l| l.contains("| tokenized") && l.contains("5 / 3"))
        .unwrap_or_else(|| panic!("no roaming row in\n{md}"));
    assert!(line.contains("20.0 / 105.0"), "{line}");
    assert!(line.contains("150.0 / 900.0"), "{line}");

    let local = tempfile::tempdir().unwrap();
    write_csv(local.path(), &rows(&["tokenized"]));
    let report = report::run(&args(&[local.path().to_str().unwrap()])).unwrap();
    let md = std::fs::read_to_string(&report.markdown).unwrap();
    assert!(
        !md.contains("## Roamed turns"),
        "a run on one node has no roaming table"
    );
}

/// A hand-written CSV of a `truncate` vs `summarize` run with planted-fact checks (the columns a
/// run writes: `reply_chars`, `expect`, `recalled`): the per-mode table gets "planted facts
/// recalled", a mode outside the paper's four shows like the others, and the planted-facts
/// table says per check which mode's answer mentioned it.
#[test]
fn planted_facts_recalled_per_mode() {
    let dir = tempfile::tempdir().unwrap();
    let header = "timestamp,scenario,mode,node,session,turn,round_trip_ms,request_bytes,response_bytes,\
prompt_chars,context_tokens,prompt_n,prompt_ms,predicted_n,predicted_ms,tokens_cached,tokens_evaluated,\
store_read_ms,policy_ms,llm_ms,store_write_ms,store_bytes,http_status,retries,error,reply_chars,expect,recalled,\
reply,in_context\n";
    let mut csv = header.to_string();
    // turn, expect, truncate (recalled, context), summarize (recalled, context)
    let plan = [
        (1, "", None, 400, None, 400),
        (2, "", None, 1900, None, 900),
        (3, "Ziggy", Some(false), 1500, Some(true), 700),
        (4, "Ljubljana|Lubiana", Some(true), 1600, Some(true), 750),
        (5, "86", Some(false), 1700, Some(false), 800),
    ];
    for (turn, expect, t_recalled, t_context, s_recalled, s_context) in plan {
        for (mode, recalled, context, store) in [
            ("truncate", t_recalled, t_context, 500),
            ("summarize", s_recalled, s_context, 300),
        ] {
            let recalled = recalled.map_or(String::new(), |r: bool| r.to_string());
            // Every fact was still in summarize's prompts; truncate's held none.
            let in_context = match expect {
                "" => String::new(),
                _ => (mode == "summarize").to_string(),
            };
            csv.push_str(&format!(
                "2026-01-01T00:00:00.000Z,Long recall,{mode},local,s-{mode},{turn},{rt},120,900,,\
{context},40,30.0,64,500.0,,,0.5,0.2,{llm},1.0,{store},200,0,,180,{expect},{recalled},,{in_context}\n",
                rt = 1000 + 100 * turn,
                llm = 990 + 100 * turn,
            ));
        }
    }
    std::fs::write(dir.path().join("long-recall.csv"), csv).unwrap();
    let report = report::run(&args(&[dir.path().to_str().unwrap()])).unwrap();
    let md = std::fs::read_to_string(&report.markdown).unwrap();
    let cells = |start: &str| -> Vec<String> {
        let line = md.lines().find(|l| l.starts_with(start));
        let line = line.unwrap_or_else(|| panic!("no line {start:?} in\n{md}"));
        let cells = line.split('|').map(|c| c.trim().to_owned());
        cells.filter(|c| !c.is_empty()).collect()
    };
    let header = cells("| mode ");
    assert_eq!(
        header[header.len() - 2..],
        ["planted facts recalled", "planted facts in the prompt"]
    );
    // mode, ok, round trip, llm, overhead, request, store, evaluated / cached, recalled,
    // in the prompt
    assert_eq!(
        cells("| truncate "),
        [
            "truncate",
            "5/5",
            "1300.0",
            "1290.0",
            "10.0",
            "120",
            "2500",
            "40 / 1380",
            "1 of 3",
            "0 of 3"
        ]
    );
    assert_eq!(
        cells("| summarize "),
        [
            "summarize",
            "5/5",
            "1300.0",
            "1290.0",
            "10.0",
            "120",
            "1500",
            "40 / 670",
            "2 of 3",
            "3 of 3"
        ]
    );
    assert!(md.contains("## Planted facts"), "{md}");
    assert_eq!(
        cells("| turn "),
        ["turn", "expect", "truncate", "summarize"]
    );
    assert_eq!(cells("| 3 "), ["3", "Ziggy", "no", "yes"]);
    assert_eq!(cells("| 4 "), ["4", "Ljubljana / Lubiana", "yes", "yes"]);
    assert_eq!(cells("| 5 "), ["5", "86", "no", "no"]);
    assert!(
        report.tables.contains("| 3    | Ziggy "),
        "{}",
        report.tables
    );
    // summarize has its own line in each plot, next to truncate.
    let texts = svg_texts(&dir.path().join("context-tokens.svg"));
    assert!(texts.iter().any(|t| t.trim() == "summarize"), "{texts:?}");
    assert!(texts.iter().any(|t| t.trim() == "truncate"), "{texts:?}");
}
