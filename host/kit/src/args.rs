//! `discedge policy`'s command lines; the `discedge` crate puts them next to `serve`.

use std::path::PathBuf;

use discedge_server::config::ModelArgs;

/// `discedge policy SUBCOMMAND`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The kit's three steps: write a project, check the component, play a conversation.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Write a ready policy project (Rust or Python) that builds to a component in one command.
    New(NewArgs),
    /// Load a component as the proxy does and check the contract on generated sessions;
    /// exits non-zero on a violation.
    Check(CheckArgs),
    /// Play a scenario YAML through a policy, printing each turn's prompt and stored record.
    Test(TestArgs),
}

/// The language of a new policy project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

// `discedge policy new`. (No doc comment: clap would show it instead of the variant's.)
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The policy's name, which is also its mode: lowercase letters, digits and `-`.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Folder to create the project in (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust only: the guest SDK (`plugins/sdk` of a DisCEdge clone) the project depends on;
    /// default: the one this binary was built from.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// The limits a policy runs under, as `discedge serve` sets them.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Wall time for one policy call.
    #[arg(long, env = "DISCEDGE_POLICY_TIMEOUT_MS", default_value_t = 5000)]
    pub policy_timeout_ms: u64,
    /// Linear memory per policy instance.
    #[arg(long, env = "DISCEDGE_POLICY_MEMORY_MIB", default_value_t = 64)]
    pub policy_memory_mib: usize,
    /// Where compiled components are kept, as the proxy's `--policy-cache-dir` (default:
    /// ~/.cache/discedge/policy-cache; compiling a Python policy takes seconds).
    #[arg(long, env = "DISCEDGE_POLICY_CACHE_DIR")]
    pub policy_cache_dir: Option<PathBuf>,
}

// `discedge policy check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The policy component (`.wasm`).
    pub file: PathBuf,
    /// Also try these user messages (repeatable), e.g. inputs your policy treats specially.
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// Check with this model's tokenizer (a GGUF file) instead of the FAKE byte tokenizer.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

// `discedge policy test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The policy component (`.wasm`).
    pub file: PathBuf,
    /// The conversation: a scenario YAML (`name` and `messages`, or roaming `locations`,
    /// walked in order as one session).
    pub script: PathBuf,
    /// A real llama-server: its model answers and its tokenizer counts. Default: the FAKE
    /// llama-server (fixed replies, one token per byte).
    #[arg(long, env = "DISCEDGE_LLAMA_URL")]
    pub llama_url: Option<String>,
    /// With the FAKE llama-server: tokenize with this model's GGUF instead of bytes.
    #[arg(long, conflicts_with = "llama_url")]
    pub gguf: Option<PathBuf>,
    /// Pretend the model's window is this many tokens (default: what the server says, else
    /// --n-ctx).
    #[arg(long)]
    pub window: Option<u32>,
    /// `n_predict` of every turn (also the reply budget the policy is told).
    #[arg(long, default_value_t = 64)]
    pub n_predict: u32,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}
