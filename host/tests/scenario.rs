//! `discedge scenario`: the scenario files parse (and bad ones are refused clearly), a run writes
//! one CSV row per turn per mode, roaming files walk real replicated nodes, lag is retried, and
//! failed turns are recorded rather than fatal.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use common::fred::FredBed;
use discedge::cli::{Cli, Command};
use discedge_lab::args::ScenarioArgs;
use discedge_lab::fake_llm::{Behaviour, FakeLlm};
use discedge_lab::scenario::{self, Outcome, Row, Scenario};

fn scenario_file(name: &str) -> PathBuf {
    common::repo_dir().join("testdata/scenarios").join(name)
}

/// `discedge scenario FILE ARGS...` as parsed from a command line, writing into `out`.
fn args(file: &Path, out: &Path, extra: &[&str]) -> ScenarioArgs {
    let plugins = common::shipped_plugins();
    let cache = common::POLICY_CACHE;
    let mut argv = vec![
        "discedge",
        "scenario",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n-predict",
        "8",
        "--plugins-dir",
        plugins.to_str().unwrap(),
        "--policy-cache-dir",
        cache,
    ];
    argv.extend(extra);
    let Command::Scenario(args) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    args
}

async fn run(file: &Path, out: &Path, extra: &[&str]) -> (Outcome, Vec<Row>) {
    let outcome = scenario::run(args(file, out, extra)).await.expect("runs");
    let rows = scenario::read_csv(&outcome.csv).unwrap();
    (outcome, rows)
}

/// A copy of a roaming file whose `127.0.0.1:PORT` addresses point at the given proxies.
fn rewired(file: &str, dir: &Path, ports: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(scenario_file(file)).unwrap();
    for (from, to) in ports {
        let to = to.trim_start_matches("http://");
        text = text.replace(&format!("127.0.0.1:{from}"), to);
    }
    let copy = dir.join(file);
    std::fs::write(&copy, text).unwrap();
    copy
}

fn of_mode<'a>(rows: &'a [Row], mode: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.mode == mode).collect()
}

#[test]
fn shipped_scenarios_parse() {
    let dir = common::repo_dir().join("testdata/scenarios");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            files += 1;
        }
    }
    assert!(files >= 6, "only {files} scenario files");

    let long = Scenario::load(&scenario_file("long-astronomy.yml")).unwrap();
    assert!(long.turns() >= 30 && !long.roaming);

    let two = Scenario::load(&scenario_file("roaming-two-nodes.yml")).unwrap();
    let walk: Vec<(&str, usize)> = two
        .legs
        .iter()
        .map(|l| (l.node.as_str(), l.messages.len()))
        .collect();
    assert_eq!(
        walk,
        [("Node1", 2), ("Node2", 2), ("Node1", 2), ("Node2", 3)]
    );
    assert_eq!(
        two.legs[1].api_url.as_deref(),
        Some("http://127.0.0.1:8082/completion")
    );
    assert_eq!(two.nodes(), ["Node1", "Node2"]);
    let three = Scenario::load(&scenario_file("roaming-three-nodes.yml")).unwrap();
    assert_eq!(three.nodes(), ["Node1", "Node2", "Node3"]);
}

#[test]
fn both_formats_parse() {
    let plain = Scenario::parse(
        "name: \"Matrix: Basics!\"\nmodel_name: m\nuser_id: u\nmessages: [\"a\", \"b\"]\n",
    )
    .unwrap();
    assert_eq!(plain.slug(), "matrix-basics");
    assert_eq!(plain.user_id.as_deref(), Some("u"));
    assert!(!plain.roaming);
    assert_eq!(plain.legs.len(), 1);
    assert_eq!(plain.legs[0].node, "local");
    assert_eq!(plain.turns(), 2);

    let roaming = Scenario::parse(
        "name: r\nlocations:\n  - {name: A, api_url: \"http://h:1/completion\", messages: [x]}\n  - {name: B, messages: [y, z]}\n",
    )
    .unwrap();
    assert!(roaming.roaming);
    assert_eq!(roaming.turns(), 3);
    assert_eq!(roaming.legs[1].api_url, None);
    assert_eq!(roaming.user_id, None);
}

#[test]
fn bad_scenarios_are_refused_with_a_reason() {
    let refused = |yaml: &str, why: &str| {
        let error = format!("{:#}", Scenario::parse(yaml).unwrap_err());
        assert!(error.contains(why), "{yaml:?}: {error}");
    };
    refused("name: [unclosed", "not a valid scenario YAML");
    refused("name: x\nuser_id: u\n", "no `messages` and no `locations`");
    refused("name: x\nmessages: []\n", "`messages` has no messages");
    refused("name: x\nmessages: [a, \" \"]\n", "message 2 is empty");
    refused("name: x\nlocations: []\n", "`locations` is empty");
    refused(
        "name: x\nlocations: [{name: A, api_url: u, messages: []}]\n",
        "location 1 (\"A\") has no messages",
    );
    refused(
        "name: x\nmessages: [a]\nlocations: [{name: A, messages: [b]}]\n",
        "not both",
    );
    refused("name: x\nmesages: [a]\n", "unknown field `mesages`");
    refused("messages: [a]\n", "missing field `name`");

    let missing = Scenario::load(Path::new("/no/such/scenario.yml")).unwrap_err();
    assert!(format!("{missing:#}").contains("cannot read scenario /no/such/scenario.yml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn roaming_file_without_urls_needs_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yml");
    std::fs::write(&file, "name: r\nlocations: [{name: A, messages: [x]}]\n").unwrap();
    let error = scenario::run(args(&file, dir.path(), &[]))
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("location \"A\" has no api_url"),
        "{error:#}"
    );
}

/// No URL: the runner starts its own proxy on the embedded store against the real llama-server.
#[tokio::test(flavor = "multi_thread")]
async fn all_modes_through_an_in_process_proxy() {
    let out = tempfile::tempdir().unwrap();
    let file = scenario_file("houseplants.yml");
    let llama = common::llama_url();
    let (outcome, rows) = run(&file, out.path(), &["--mode", "all", "--llama-url", &llama]).await;

    let name = outcome.csv.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("houseplants-") && name.ends_with(".csv"),
        "{name}"
    );
    assert_eq!(rows.len(), 4 * 4, "one row per turn per mode");
    for mode in scenario::ALL_MODES {
        let rows = of_mode(&rows, mode);
        let turns: Vec<u32> = rows.iter().map(|r| r.turn).collect();
        assert_eq!(turns, [1, 2, 3, 4], "{mode}");
        for row in &rows {
            assert_eq!(
                row.http_status,
                Some(200),
                "{mode} turn {}: {}",
                row.turn,
                row.error
            );
            assert_eq!(
                (row.scenario.as_str(), row.node.as_str(), row.retries),
                ("Houseplants", "local", 0)
            );
            assert_eq!(row.session, rows[0].session, "{mode}: one session");
            assert!(row.round_trip_ms > 0.0 && row.response_bytes > 0);
            assert!(row.prompt_n.is_some() && row.predicted_n.is_some());
            assert!(row.tokens_cached.is_some() && row.prompt_chars.is_some());
            assert!(row.llm_ms.is_some() && row.store_bytes.is_some());
        }
        // Every mode's model sees the whole conversation so far, so its context grows.
        let context: Vec<u64> = rows.iter().map(|r| r.context_tokens.unwrap()).collect();
        assert!(
            context.windows(2).all(|w| w[0] < w[1]),
            "{mode}: {context:?}"
        );
    }
    // The client-side client sends the whole history; the stored modes send one message.
    let bytes = |mode| -> Vec<usize> {
        of_mode(&rows, mode)
            .iter()
            .map(|r| r.request_bytes)
            .collect()
    };
    let client_side = bytes("client-side");
    assert!(
        client_side.windows(2).all(|w| w[0] < w[1]),
        "{client_side:?}"
    );
    assert!(client_side[3] > 2 * bytes("tokenized")[3]);

    let sessions: std::collections::HashSet<_> = rows.iter().map(|r| &r.session).collect();
    assert_eq!(sessions.len(), 4, "each mode is a new session");
    assert_eq!(outcome.summaries.len(), 4);
    for summary in &outcome.summaries {
        assert_eq!((summary.ok, summary.failed, summary.planned), (4, 0, 4));
        assert!(summary.median_ms.is_some() && summary.error.is_none());
    }
}

/// The two-node roaming file against two proxies on replicated (FReD test) nodes: each
/// location's turns go to its node, and the context follows the client.
#[tokio::test(flavor = "multi_thread")]
async fn roaming_walks_two_replicated_nodes() {
    let bed = FredBed::start().await;
    let llama = common::llama_url();
    let (a, b) = bed.proxies(&["--llama-url", &llama]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = rewired(
        "roaming-two-nodes.yml",
        dir.path(),
        &[("8081", &a.url), ("8082", &b.url)],
    );
    let (_, rows) = run(&file, dir.path(), &["--mode", "tokenized"]).await;

    let walk: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        walk,
        [
            "Node1", "Node1", "Node2", "Node2", "Node1", "Node1", "Node2", "Node2", "Node2"
        ]
    );
    for row in &rows {
        assert_eq!(
            row.http_status,
            Some(200),
            "turn {}: {}",
            row.turn,
            row.error
        );
        assert_eq!(row.session, rows[0].session);
    }
    let context: Vec<u64> = rows.iter().map(|r| r.context_tokens.unwrap()).collect();
    assert!(
        context.windows(2).all(|w| w[0] < w[1]),
        "context lost while roaming: {context:?}"
    );
}

/// A node that has not yet received the previous turn answers 409; the runner waits and resends.
#[tokio::test(flavor = "multi_thread")]
async fn replication_lag_is_retried_and_counted() {
    let llama = FakeLlm::start().await.unwrap();
    let bed = FredBed::start().await;
    let (a, b) = bed
        // Local confirmation: the proxies read no other replica, so a node behind cannot copy
        // the turns it lacks and the runner's retries are what gets the turn through.
        .proxies(&[
            "--llama-url",
            &llama.url,
            "--sync-wait-ms",
            "0",
            "--fred-confirm",
            "local",
        ])
        .await;
    bed.set_lag(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let file = rewired(
        "roaming-two-nodes.yml",
        dir.path(),
        &[("8081", &a.url), ("8082", &b.url)],
    );
    let (outcome, rows) = run(&file, dir.path(), &["--mode", "raw"]).await;

    assert_eq!(rows.len(), 9);
    for row in &rows {
        assert_eq!(
            row.http_status,
            Some(200),
            "turn {}: {}",
            row.turn,
            row.error
        );
        assert!(row.retries <= scenario::LAG_RETRIES);
    }
    // Turn 3 is the first on node 2, sent as soon as turn 2 was answered on node 1: node 2
    // has not seen the session yet (404). Turn 5, back on node 1, finds it behind (409).
    for lagged in [2, 4] {
        assert!(rows[lagged].retries >= 1, "{:?}", rows[lagged]);
        assert!(rows[lagged].round_trip_ms >= scenario::LAG_BACKOFF.as_millis() as f64);
    }
    assert_eq!(rows[1].retries, 0, "same node, no lag");
    assert!(outcome.summaries[0].retries >= 1);
}

/// A failed turn is a row with its status and error, and ends that mode's run, not the others.
#[tokio::test(flavor = "multi_thread")]
async fn failed_turns_are_recorded_and_stop_the_mode() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = common::start_proxy(&["--llama-url", &llama.url]).await;
    llama.set(Behaviour::Fail);
    let out = tempfile::tempdir().unwrap();
    let file = scenario_file("sourdough.yml");
    let (outcome, rows) = run(
        &file,
        out.path(),
        &["--mode", "raw,client-side", "--url", &proxy.url],
    )
    .await;
    assert_eq!(rows.len(), 2, "one failed row per mode: {rows:?}");
    for row in &rows {
        assert_eq!((row.turn, row.http_status), (1, Some(502)), "{row:?}");
        assert!(row.error.starts_with("llm_failed"), "{}", row.error);
        assert_eq!(row.context_tokens, None);
    }
    for summary in &outcome.summaries {
        assert_eq!((summary.ok, summary.failed, summary.planned), (0, 1, 5));
        assert!(summary.error.as_deref().unwrap().starts_with("turn 1: 502"));
    }

    // No answer at all: no status, the transport's reason.
    let (_, rows) = run(
        &file,
        out.path(),
        &["--mode", "tokenized", "--url", "http://127.0.0.1:1"],
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].http_status, None);
    assert!(rows[0].error.contains("127.0.0.1:1"), "{}", rows[0].error);
}

/// Every answered turn records the proxy's split (its `Server-Timing`) and what it wrote to
/// the store (`x-discedge-store-bytes`): nothing for `client-side`, which stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_split_and_store_bytes_are_recorded() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = common::start_proxy(&["--llama-url", &llama.url]).await;
    let out = tempfile::tempdir().unwrap();
    let (_, rows) = run(
        &scenario_file("sourdough.yml"),
        out.path(),
        &["--mode", "raw,tokenized,client-side", "--url", &proxy.url],
    )
    .await;
    assert_eq!(rows.len(), 3 * 5);
    for row in &rows {
        assert_eq!(row.http_status, Some(200), "{row:?}");
        let split = [
            row.store_read_ms,
            row.policy_ms,
            row.llm_ms,
            row.store_write_ms,
        ];
        assert!(
            split.iter().all(|ms| ms.is_some_and(|ms| ms >= 0.0)),
            "{row:?}"
        );
        assert!(row.llm_ms.unwrap() <= row.round_trip_ms, "{row:?}");
        let bytes = row.store_bytes.expect("store bytes");
        match row.mode.as_str() {
            "client-side" => assert_eq!(bytes, 0, "{row:?}"),
            _ => assert!(bytes > 0, "{row:?}"),
        }
    }
}

/// CSVs written before the proxy-split columns existed still read, with those fields empty.
#[test]
fn csvs_without_the_proxy_split_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.csv");
    std::fs::write(
        &path,
        "timestamp,scenario,mode,node,session,turn,round_trip_ms,request_bytes,response_bytes,\
prompt_chars,context_tokens,prompt_n,prompt_ms,predicted_n,predicted_ms,tokens_cached,\
tokens_evaluated,http_status,retries,error\n\
2026-01-01T00:00:00.000Z,S,raw,local,abc,1,812.5,150,900,120,40,40,30.5,8,90.1,47,40,200,0,\n",
    )
    .unwrap();
    let rows = scenario::read_csv(&path).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.turn, row.round_trip_ms, row.prompt_n),
        (1, 812.5, Some(40))
    );
    assert_eq!(
        (row.store_read_ms, row.policy_ms, row.llm_ms),
        (None, None, None)
    );
    assert_eq!((row.store_write_ms, row.store_bytes), (None, None));
    assert_eq!(
        (row.reply_chars, row.expect.as_str(), row.recalled),
        (None, "", None)
    );
}

/// `--modes` is `--mode`, and any mode name goes through as given (`all` stays the four).
#[test]
fn modes_take_any_policy_name() {
    let out = Path::new("/tmp");
    let file = scenario_file("long-recall.yml");
    let asked = args(&file, out, &["--modes", "truncate,summarize"]);
    assert_eq!(asked.mode, ["truncate", "summarize"]);
    assert_eq!(args(&file, out, &[]).mode, ["all"]);
}

/// The long-recall scenario plants its facts early, passes a 2048-token window in the middle,
/// and asks for each fact at the end.
#[test]
fn long_recall_plants_facts_early_and_asks_late() {
    let s = Scenario::load(&scenario_file("long-recall.yml")).unwrap();
    assert!(s.turns() >= 44 && !s.roaming, "{} turns", s.turns());
    assert_eq!(s.checks(), 8);
    let leg = &s.legs[0];
    let asked: Vec<usize> = (0..leg.messages.len())
        .filter(|&i| !leg.expects[i].is_empty())
        .collect();
    assert!(asked.iter().all(|&i| i >= 35), "checks at turns {asked:?}");
    // Each fact is planted in turns 1-8, and not said again before it is asked for.
    for &i in &asked {
        let said: Vec<usize> = (0..i)
            .filter(|&j| {
                let message = leg.messages[j].to_lowercase();
                leg.expects[i]
                    .iter()
                    .any(|e| message.contains(&e.to_lowercase()))
            })
            .collect();
        assert!(
            !said.is_empty() && said.iter().all(|&j| j < 8),
            "turn {}: {:?} said in turns {said:?}",
            i + 1,
            leg.expects[i]
        );
        // The question does not give the answer away.
        assert_eq!(
            scenario::recalls(&leg.expects[i], &leg.messages[i]),
            Some(false)
        );
    }
}

/// Messages with `expect:` are checked against the reply: the FAKE model's fixed reply
/// mentions "fake model" and not "Biscuit"; plain messages carry no check.
#[tokio::test(flavor = "multi_thread")]
async fn planted_fact_checks_are_recorded() {
    let llama = FakeLlm::start().await.unwrap();
    let proxy = common::start_proxy(&["--llama-url", &llama.url]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.yml");
    std::fs::write(
        &file,
        "name: Checks\nmessages:\n  - My dog is called Biscuit.\n  - {say: What is my dog called?, expect: [Biscuit, Bisky]}\n  - {say: Who answers?, expect: [nobody, FAKE MODEL]}\n",
    )
    .unwrap();
    let (outcome, rows) = run(
        &file,
        dir.path(),
        &["--modes", "tokenized,client-side", "--url", &proxy.url],
    )
    .await;
    assert_eq!(rows.len(), 2 * 3);
    let reply = discedge_lab::fake_llm::REPLY.chars().count();
    for row in &rows {
        assert_eq!(row.http_status, Some(200), "{row:?}");
        assert_eq!(row.reply_chars, Some(reply), "{row:?}");
        let want = match row.turn {
            1 => ("", None),
            2 => ("Biscuit|Bisky", Some(false)),
            _ => ("nobody|FAKE MODEL", Some(true)),
        };
        assert_eq!((row.expect.as_str(), row.recalled), want, "{row:?}");
        let reply = if row.turn == 1 {
            ""
        } else {
            discedge_lab::fake_llm::REPLY
        };
        assert_eq!(row.reply, reply, "the reply is kept on checked turns only");
    }
    for summary in &outcome.summaries {
        assert_eq!((summary.checks, summary.recalled), (2, 1), "{summary:?}");
    }
}
