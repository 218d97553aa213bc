//! The `discedge` command: one command line over the crates by job. `serve` is the server's;
//! `bench`, `scenario` and `report` are the lab's; `policy` is the policy author's kit.

use clap::{Parser, Subcommand};

/// `discedge`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "discedge",
    version,
    about = "Context proxy for LLMs at the edge"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
/// The subcommands: the server's `serve`, the lab's three and the kit's `policy`.
pub enum Command {
    /// Run the proxy.
    Serve(Box<discedge_server::config::ServeArgs>),
    /// Time the policy step (instantiate + prepare + commit) of each loaded policy and print figures.
    Bench(discedge_lab::args::BenchArgs),
    /// Drive a scripted conversation (a scenario YAML) through proxies and log one CSV row per turn.
    Scenario(discedge_lab::args::ScenarioArgs),
    /// Turn scenario CSVs into a Markdown table (report.md, also printed) and SVG plots.
    Report(discedge_lab::args::ReportArgs),
    /// Write, check and try context policies: `policy new`, `policy check`, `policy test`.
    Policy(discedge_kit::args::PolicyArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn bench_only_takes_each_figure_and_nothing_else() {
        for figure in ["policy", "latency", "stream", "swap", "bytes"] {
            let cli = Cli::try_parse_from(["discedge", "bench", "--only", figure]).unwrap();
            let Command::Bench(args) = cli.command else {
                panic!("not bench")
            };
            assert_eq!(args.only, [figure]);
        }
        assert!(Cli::try_parse_from(["discedge", "bench", "--only", "nope"]).is_err());
        let help = Cli::command()
            .find_subcommand_mut("bench")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("stream"), "{help}");
    }
}
