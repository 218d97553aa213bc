//! `discedge scenario FILE.yml`: the paper's experiment as one command. It walks a scripted
//! conversation once per mode, each time as a new session, through running proxies (`--url`,
//! or the roaming file's `api_url`s) or through a proxy it starts in this process, so that a
//! researcher needs only a llama-server. It asks nothing on stdin, shows a progress bar, writes
//! one CSV row per turn and prints a summary per mode.

mod client;
pub mod file;
pub mod record;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::ScenarioArgs;
pub use client::{CLIENT_SIDE, LAG_BACKOFF, LAG_RETRIES};
use discedge_server::serve::Node;
pub use file::{Leg, Scenario, recalls};
pub use record::{ModeSummary, Row, read_csv};

/// The modes `--mode all` runs, in the order of the paper's comparison.
pub const ALL_MODES: [&str; 4] = ["raw", "tokenized", "truncate", CLIENT_SIDE];

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub csv: PathBuf,
    pub summaries: Vec<ModeSummary>,
}

/// Runs a scenario. Failed turns are results (recorded, summarised), not errors: the error
/// cases are a bad file or arguments, a proxy that cannot start, or a CSV that cannot be written.
pub async fn run(args: ScenarioArgs) -> anyhow::Result<Outcome> {
    let scenario = Scenario::load(&args.file)?;
    let modes = modes(&args.mode)?;
    println!(
        "scenario {:?}{}: {} turns{}, nodes {}, modes {}, n_predict {}",
        scenario.name,
        scenario
            .model_name
            .as_ref()
            .map_or(String::new(), |m| format!(" ({m})")),
        scenario.turns(),
        match scenario.checks() {
            0 => String::new(),
            n => format!(" ({n} planted-fact checks)"),
        },
        scenario.nodes().join(", "),
        modes.join(", "),
        args.n_predict,
    );
    let (urls, local) = targets(&args, &scenario, &modes).await?;
    let mut log = record::CsvLog::create(&args.out, &scenario.slug())?;
    if let Some(local) = &local {
        println!(
            "in-process proxy {} -> llama-server {}",
            local.url, args.llama_url
        );
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    let progress = progress_bar((scenario.turns() * modes.len()) as u64);
    let mut summaries = Vec::new();
    for mode in &modes {
        let mut session = client::Session::new(
            &http,
            &scenario.name,
            mode,
            scenario.user_id.as_deref(),
            args.n_predict,
        );
        let mut rows = Vec::new();
        'walk: for (leg, url) in scenario.legs.iter().zip(&urls) {
            for (message, expect) in leg.messages.iter().zip(&leg.expects) {
                progress.set_message(format!("{mode}, turn {} on {}", session.turn + 1, leg.node));
                let row = session.send(url, &leg.node, message, expect).await;
                log.write(&row)?;
                progress.inc(1);
                let failed = !row.ok();
                rows.push(row);
                if failed {
                    break 'walk;
                }
            }
        }
        let mut summary = ModeSummary::of(mode, scenario.turns(), &rows);
        summary.checks = scenario.checks();
        if let Some(error) = &summary.error {
            progress.suspend(|| eprintln!("{mode} stopped at {error}"));
            progress.inc((scenario.turns() - rows.len()) as u64);
        }
        summaries.push(summary);
    }
    progress.finish_and_clear();
    drop(local);

    println!();
    record::print_summary(&summaries);
    println!("\nCSV: {}", log.path.display());
    Ok(Outcome {
        csv: log.path,
        summaries,
    })
}

/// `--mode` values, with `all` expanded and repeats dropped.
fn modes(asked: &[String]) -> anyhow::Result<Vec<String>> {
    let mut modes: Vec<String> = Vec::new();
    for mode in asked.iter().map(|m| m.trim()) {
        let expanded = match mode {
            "" => bail!("--mode has an empty name"),
            "all" => ALL_MODES.to_vec(),
            one => vec![one],
        };
        for m in expanded {
            if !modes.iter().any(|known| known == m) {
                modes.push(m.to_owned());
            }
        }
    }
    Ok(modes)
}

/// The `/completion` URL for each leg, and the in-process proxy if one is needed.
async fn targets(
    args: &ScenarioArgs,
    scenario: &Scenario,
    modes: &[String],
) -> anyhow::Result<(Vec<String>, Option<LocalProxy>)> {
    if let Some(url) = &args.url {
        let url = completion_url(url);
        return Ok((vec![url; scenario.legs.len()], None));
    }
    if scenario.roaming {
        let urls = scenario
            .legs
            .iter()
            .map(|leg| {
                leg.api_url.as_deref().map(completion_url).with_context(|| {
                    format!(
                        "location {:?} has no api_url: add one, or give --url",
                        leg.node
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok((urls, None));
    }
    let local = LocalProxy::start(args, modes).await?;
    Ok((vec![local.url.clone()], Some(local)))
}

/// Accepts a proxy's base URL or its full `/completion` URL.
fn completion_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.ends_with("/completion") {
        url.to_owned()
    } else {
        format!("{url}/completion")
    }
}

/// On stderr; indicatif draws nothing when stderr is not a terminal.
fn progress_bar(turns: u64) -> ProgressBar {
    let bar = ProgressBar::new(turns);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} turns  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A proxy on the embedded store in a temporary folder, served on a free loopback port, as
/// `discedge serve` would run it. Stops and removes its folder when dropped.
struct LocalProxy {
    url: String,
    node: Node,
    data: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl LocalProxy {
    async fn start(args: &ScenarioArgs, modes: &[String]) -> anyhow::Result<Self> {
        let data = std::env::temp_dir().join(format!(
            "discedge-scenario-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let data_arg = data.display().to_string();
        let plugins = args.plugins_dir.display().to_string();
        let cache = args
            .policy_cache_dir
            .as_ref()
            .map(|d| d.display().to_string());
        let mut argv = vec![
            "discedge",
            "serve",
            "--store",
            "embedded",
            "--no-watch",
            "--data-dir",
            &data_arg,
            "--plugins-dir",
            &plugins,
            "--llama-url",
            &args.llama_url,
        ];
        if let Some(cache) = &cache {
            argv.extend(["--policy-cache-dir", cache]);
        }
        let local = match discedge_server::serve::start_local(&argv).await {
            Ok(local) => local,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&data);
                return Err(e.context("cannot start the in-process proxy"));
            }
        };
        // From here on, dropping `proxy` cleans up, whatever fails next.
        let (node, server) = (local.node, local.server);
        let url = format!("http://{}/completion", local.addr);
        let proxy = Self {
            url,
            node,
            data,
            server,
        };
        let loaded = proxy.node.proxy.policies.names();
        if let Some(missing) = modes.iter().find(|m| !loaded.contains(m)) {
            bail!(
                "mode {missing:?} has no policy in {} (loaded: {loaded:?}); build them with scripts/build-plugins.sh",
                args.plugins_dir.display()
            );
        }
        Ok(proxy)
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
