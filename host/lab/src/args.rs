//! The lab subcommands' command lines (`discedge bench`, `scenario`, `report`); the
//! `discedge` crate puts them next to `serve` under one command.

use std::path::PathBuf;

use discedge_server::config::ModelArgs;

// `discedge bench`: which figures, how many runs, and the model settings they assume. (No doc
// comment: clap would show it as the subcommand's help instead of the variant's.)
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, env = "DISCEDGE_PLUGINS_DIR", default_value = "plugins/dist")]
    pub plugins_dir: PathBuf,
    /// Tokens of stored context to time the policies with.
    #[arg(long, default_value_t = 2000)]
    pub context_tokens: usize,
    /// Timed repetitions per policy.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Timed requests per mode and concurrency level through the proxy.
    #[arg(long, default_value_t = 320)]
    pub requests: usize,
    /// Stored-context sizes (tokens) for the policy-step figures.
    #[arg(long, value_delimiter = ',', default_value = "100,2000,8000")]
    pub sizes: Vec<usize>,
    /// Numbers of concurrent sessions for the latency figures.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Only these figures; default: all.
    #[arg(long, value_delimiter = ',',
          value_parser = ["policy", "latency", "stream", "swap", "bytes"])]
    pub only: Vec<String>,
    /// The latency figures' FAKE llama-server tokenizes with this GGUF (e.g. SmolLM2's) and
    /// names it in /props, so the proxy tokenizes locally as next to a real llama-server;
    /// default: the fake's byte tokenizer, asked over HTTP.
    #[arg(long, env = "DISCEDGE_BENCH_FAKE_MODEL")]
    pub fake_model: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `discedge scenario`: the paper's experiment as one command, with no questions asked.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Scenario YAML: `name`, `model_name`, `user_id`, and `messages` or roaming `locations`.
    pub file: PathBuf,
    /// Modes to run, each as a new session: comma-separated policy names (any mode the
    /// proxy serves, e.g. `truncate,summarize`), or `all` (raw, tokenized, truncate,
    /// client-side).
    #[arg(
        long,
        visible_alias = "modes",
        value_delimiter = ',',
        default_value = "all"
    )]
    pub mode: Vec<String>,
    /// A running proxy that gets every turn (base URL or `.../completion`), in place of the
    /// file's `api_url`s. With neither, a proxy runs in this process on a temporary store.
    #[arg(long)]
    pub url: Option<String>,
    /// llama-server for the in-process proxy.
    #[arg(
        long,
        env = "DISCEDGE_LLAMA_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub llama_url: String,
    /// Folder the CSV is written to.
    #[arg(long, default_value = "scenario-out")]
    pub out: PathBuf,
    /// `n_predict` of every turn.
    #[arg(long, default_value_t = 64)]
    pub n_predict: u32,
    /// Policies for the in-process proxy.
    #[arg(long, env = "DISCEDGE_PLUGINS_DIR", default_value = "plugins/dist")]
    pub plugins_dir: PathBuf,
    /// Compiled-policy cache for the in-process proxy (default: inside its temporary folder,
    /// so policies are compiled on every run).
    #[arg(long, env = "DISCEDGE_POLICY_CACHE_DIR")]
    pub policy_cache_dir: Option<PathBuf>,
    /// Longest wait for one reply, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// `discedge report DIR`: the experiment report from the CSVs of one or more scenario runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Folder holding the scenario CSVs (every `*.csv` in it, not its subfolders).
    pub dir: PathBuf,
    /// Folder for report.md and the plots (default: DIR).
    #[arg(long)]
    pub out: Option<PathBuf>,
}
