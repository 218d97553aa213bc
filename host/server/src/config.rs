//! `discedge serve`'s command line and environment: every setting an operator may need, none
//! hard-coded. (The other subcommands' flags are the lab's; the `discedge` crate joins them.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use discedge_core::policy::runtime::ChatTemplate;

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A redb file under --data-dir, durable across restarts.
    Embedded,
    /// Process memory: lost on exit (tests, demos).
    Memory,
    /// FReD, replicated to the other edge nodes (needs the --fred-* settings and --node-id).
    Fred,
}

/// Chat templates the policies render conversations with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TemplatePreset {
    /// `<|im_start|>ROLE\n...<|im_end|>\n` (Qwen, SmolLM).
    Chatml,
    /// Llama 3: `<|start_header_id|>ROLE<|end_header_id|>\n\n...<|eot_id|>`.
    Llama3,
    /// Give --template-bos, --template-prefix and --template-suffix yourself.
    Custom,
}

impl TemplatePreset {
    /// The preset's (bos, message prefix, message suffix); `None` for `custom`.
    pub fn parts(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Self::Chatml => Some(("", "<|im_start|>{role}\n", "<|im_end|>\n")),
            Self::Llama3 => Some((
                "<|begin_of_text|>",
                "<|start_header_id|>{role}<|end_header_id|>\n\n",
                "<|eot_id|>",
            )),
            Self::Custom => None,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
// `discedge serve`'s flags (each also an environment variable). (No doc comment: clap would
// show it as the subcommand's help instead of the variant's.)
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DISCEDGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL of the llama.cpp server.
    #[arg(
        long,
        env = "DISCEDGE_LLAMA_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub llama_url: String,
    /// The tokenizer for policies: `auto` reads the GGUF file llama-server names in /props
    /// and uses it once it gives llama-server's ids on a probe corpus (else /tokenize);
    /// `http` always asks llama-server; a path reads that GGUF (a copy of the served model).
    #[arg(long, env = "DISCEDGE_TOKENIZER", default_value = "auto")]
    pub tokenizer: discedge_core::gguf_tokenizer::TokenizerSource,
    #[arg(long, env = "DISCEDGE_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// Folder for the embedded store and the compiled-policy cache.
    #[arg(long, env = "DISCEDGE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Where compiled policies are cached (default: DATA_DIR/policy-cache).
    #[arg(long, env = "DISCEDGE_POLICY_CACHE_DIR")]
    pub policy_cache_dir: Option<PathBuf>,
    /// Folder of policy components: `NAME.wasm` serves mode NAME; watched for changes.
    #[arg(long, env = "DISCEDGE_PLUGINS_DIR", default_value = "plugins/dist")]
    pub plugins_dir: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub fred: FredArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "DISCEDGE_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Longest wait for llama-server on one request, in seconds.
    #[arg(long, env = "DISCEDGE_LLM_TIMEOUT_SECS", default_value_t = 300)]
    pub llm_timeout_secs: u64,
    /// Longest one policy call may take (host calls included), in milliseconds.
    #[arg(long, env = "DISCEDGE_POLICY_TIMEOUT_MS", default_value_t = 5000)]
    pub policy_timeout_ms: u64,
    /// Memory one policy instance may use, in MiB.
    #[arg(long, env = "DISCEDGE_POLICY_MEMORY_MIB", default_value_t = 64)]
    pub policy_memory_mib: usize,
    /// Policy instances alive at once (requests in flight beyond this get 503).
    #[arg(long, env = "DISCEDGE_POLICY_INSTANCES", default_value_t = 128)]
    pub policy_instances: u32,
    /// Completions a policy may ask the model for in one turn before its prompt (contract
    /// 0.2.0, e.g. `summarize`'s summary); together they get one `--llm-timeout-secs`.
    #[arg(long, env = "DISCEDGE_POLICY_COMPLETIONS", default_value_t = 4)]
    pub policy_completions: u32,
    /// How long a turn that arrives before its predecessor has replicated waits for it, in ms.
    #[arg(long, env = "DISCEDGE_SYNC_WAIT_MS", default_value_t = 2000)]
    pub sync_wait_ms: u64,
    /// Sessions idle longer than this many seconds are deleted when next seen (0: never).
    #[arg(long, env = "DISCEDGE_SESSION_IDLE_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_idle_secs: u64,
    /// Largest stored context of one session, in bytes (a turn beyond it gets 413).
    #[arg(long, env = "DISCEDGE_MAX_SESSION_BYTES", default_value_t = 16 << 20)]
    pub max_session_bytes: usize,
    /// Largest `prompt` of one request, in bytes.
    #[arg(long, env = "DISCEDGE_MAX_PROMPT_BYTES", default_value_t = 1 << 20)]
    pub max_prompt_bytes: usize,
    /// API keys as `KEY=USER` entries, comma-separated; when any are set, every request needs
    /// one and acts as its user. Prefer --api-keys-file to keep keys out of process listings.
    #[arg(long, env = "DISCEDGE_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File of `KEY=USER` lines (see --api-keys).
    #[arg(long, env = "DISCEDGE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// The operator's key: required by POST /admin/policies/reload, GET /metrics and GET
    /// /policies. Without it, /admin answers only on loopback, and /metrics and /policies are
    /// open unless API keys are set (then loopback only).
    #[arg(long, env = "DISCEDGE_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// Do not reload policies when the plugins folder changes (use POST /admin/policies/reload).
    #[arg(long, env = "DISCEDGE_NO_WATCH")]
    pub no_watch: bool,
}

/// What the proxy assumes about the model when building prompts.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    #[arg(
        long,
        env = "DISCEDGE_CHAT_TEMPLATE",
        value_enum,
        default_value = "chatml"
    )]
    pub chat_template: TemplatePreset,
    /// With --chat-template custom: text opening the conversation.
    #[arg(long, env = "DISCEDGE_TEMPLATE_BOS", default_value = "")]
    pub template_bos: String,
    /// With --chat-template custom: text before each message; `{role}` is the role.
    #[arg(long, env = "DISCEDGE_TEMPLATE_PREFIX")]
    pub template_prefix: Option<String>,
    /// With --chat-template custom: text after each message.
    #[arg(long, env = "DISCEDGE_TEMPLATE_SUFFIX")]
    pub template_suffix: Option<String>,
    /// System prompt for new sessions that do not send `system_prompt`.
    #[arg(long, env = "DISCEDGE_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    /// Context window when llama-server's /props does not tell.
    #[arg(long, env = "DISCEDGE_N_CTX", default_value_t = 2048)]
    pub n_ctx: u32,
    /// Tokens kept free for the reply when a request sets no positive `n_predict`.
    #[arg(long, env = "DISCEDGE_REPLY_BUDGET", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reply_budget: u32,
    /// `user_id` of requests that send none.
    #[arg(long, env = "DISCEDGE_DEFAULT_USER", default_value = "anonymous")]
    pub default_user: String,
    /// `mode` of requests that send none.
    #[arg(long, env = "DISCEDGE_DEFAULT_MODE", default_value = "raw")]
    pub default_mode: String,
}

/// How to reach this node's FReD (with `--store fred`).
#[derive(Debug, Clone, clap::Args)]
pub struct FredArgs {
    /// `HOST:PORT` of the FReD node's client API.
    #[arg(long, env = "DISCEDGE_FRED_ADDR")]
    pub fred_addr: Option<String>,
    /// Client certificate (PEM); its CN is this proxy's FReD user.
    #[arg(long, env = "DISCEDGE_FRED_CERT")]
    pub fred_cert: Option<PathBuf>,
    #[arg(long, env = "DISCEDGE_FRED_KEY")]
    pub fred_key: Option<PathBuf>,
    /// CA certificate (PEM) the FReD node's certificate must chain to.
    #[arg(long, env = "DISCEDGE_FRED_CA")]
    pub fred_ca: Option<PathBuf>,
    /// Name to check the FReD node's certificate against (default: the host of --fred-addr).
    #[arg(long, env = "DISCEDGE_FRED_TLS_NAME")]
    pub fred_tls_name: Option<String>,
    #[arg(long, env = "DISCEDGE_FRED_KEYGROUP", default_value = "discedge")]
    pub fred_keygroup: String,
    /// The id of the FReD node this proxy talks to.
    #[arg(long, env = "DISCEDGE_NODE_ID")]
    pub node_id: Option<String>,
    /// Keygroup expiry in seconds on each replica (0: never).
    #[arg(long, env = "DISCEDGE_FRED_EXPIRY", default_value_t = 0)]
    pub fred_expiry: i64,
    /// Nodes to replicate to: `all` (every node FReD knows), `none`, or a comma-separated list.
    #[arg(long, env = "DISCEDGE_FRED_REPLICAS", default_value = "all")]
    pub fred_replicas: String,
    /// Comma-separated FReD users (other proxies' certificate CNs) to grant read, write and
    /// replica roles on the keygroup.
    #[arg(long, env = "DISCEDGE_FRED_GRANT", value_delimiter = ',')]
    pub fred_grant: Vec<String>,
    /// Longest wait for one FReD call, in milliseconds.
    #[arg(long, env = "DISCEDGE_FRED_TIMEOUT_MS", default_value_t = 5000)]
    pub fred_timeout_ms: u64,
    /// How a committed turn is confirmed before the client gets its 200: `replicas` reads the
    /// turn back on every replica (one more round trip, in parallel; a turn acknowledged while
    /// all replicas answer is never dropped by a concurrent write of the same turn; a node
    /// behind the client copies the turns it lacks from them), `local` on this node only
    /// (faster, no reads of other replicas; see the README for the window it leaves).
    #[arg(
        long,
        env = "DISCEDGE_FRED_CONFIRM",
        value_enum,
        default_value = "replicas"
    )]
    pub fred_confirm: discedge_fred::Confirm,
    /// Serve FReD's trigger API here (mutual TLS with --fred-cert/--fred-key/--fred-ca) and
    /// register it on the FReD node, so replicated turns reach this proxy's cache as they are
    /// stored and a roamed turn needs no read. Needs the ConfigureTrigger role.
    #[arg(long, env = "DISCEDGE_FRED_TRIGGER_LISTEN")]
    pub fred_trigger_listen: Option<std::net::SocketAddr>,
    /// `HOST:PORT` the FReD node dials for the trigger feed (default: --fred-trigger-listen;
    /// the proxy's certificate must name HOST).
    #[arg(long, env = "DISCEDGE_FRED_TRIGGER_ADVERTISE")]
    pub fred_trigger_advertise: Option<String>,
    /// Roaming warm-up: when the trigger feed brings a turn another node committed, send the
    /// session's next prompt prefix to this node's llama-server (no generation), so a client
    /// that roams here is served from its prompt cache. Only while no real turn is at the
    /// model; a real turn cancels it. Off by default: every replica warms every turn, which
    /// multiplies prefill work by the number of replicas. Needs --fred-trigger-listen.
    #[arg(long, env = "DISCEDGE_WARM_UP")]
    pub warm_up: bool,
    /// Most warm-ups started per second (--warm-up).
    #[arg(long, env = "DISCEDGE_WARM_UP_RATE", default_value_t = 4.0)]
    pub warm_up_rate: f64,
}

impl FredArgs {
    /// The FReD settings, or which required one is missing.
    pub fn config(&self) -> Result<discedge_fred::FredConfig, String> {
        let missing = |flag: &str| format!("--store fred needs {flag}");
        Ok(discedge_fred::FredConfig {
            addr: self
                .fred_addr
                .clone()
                .ok_or_else(|| missing("--fred-addr"))?,
            tls_name: self.fred_tls_name.clone(),
            cert: self
                .fred_cert
                .clone()
                .ok_or_else(|| missing("--fred-cert"))?,
            key: self.fred_key.clone().ok_or_else(|| missing("--fred-key"))?,
            ca: self.fred_ca.clone().ok_or_else(|| missing("--fred-ca"))?,
            keygroup: self.fred_keygroup.clone(),
            node_id: self.node_id.clone().ok_or_else(|| missing("--node-id"))?,
            expiry: self.fred_expiry,
            replicas: match self.fred_replicas.as_str() {
                "all" => None,
                "none" => Some(Vec::new()),
                list => Some(
                    list.split(',')
                        .map(|n| n.trim().to_owned())
                        .filter(|n| !n.is_empty())
                        .collect(),
                ),
            },
            grant: self
                .fred_grant
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect(),
            timeout: Duration::from_millis(self.fred_timeout_ms),
            confirm: self.fred_confirm,
            feed: match (self.fred_trigger_listen, &self.fred_trigger_advertise) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err("--fred-trigger-advertise needs --fred-trigger-listen".into());
                }
                (Some(listen), advertise) => {
                    if advertise.is_none() && listen.ip().is_unspecified() {
                        return Err(format!(
                            "--fred-trigger-listen {listen} listens on every address: give the one FReD should dial with --fred-trigger-advertise"
                        ));
                    }
                    Some(discedge_fred::FeedConfig {
                        listen,
                        advertise: advertise.clone().unwrap_or_else(|| listen.to_string()),
                    })
                }
            },
        })
    }
}

impl ModelArgs {
    /// The template record handed to policies.
    pub fn template(&self) -> Result<ChatTemplate, String> {
        let (bos, prefix, suffix) = match self.chat_template.parts() {
            Some(parts) => parts,
            None => {
                let (Some(prefix), Some(suffix)) = (&self.template_prefix, &self.template_suffix)
                else {
                    return Err(
                        "--chat-template custom needs --template-prefix and --template-suffix"
                            .into(),
                    );
                };
                return Ok(ChatTemplate {
                    bos: self.template_bos.clone(),
                    message_prefix: prefix.clone(),
                    message_suffix: suffix.clone(),
                });
            }
        };
        Ok(ChatTemplate {
            bos: bos.into(),
            message_prefix: prefix.into(),
            message_suffix: suffix.into(),
        })
    }
}

impl ServeArgs {
    /// How long a call to llama-server may take.
    pub fn llm_timeout(&self) -> Duration {
        Duration::from_secs(self.llm_timeout_secs)
    }
}

/// The command line of `discedge serve` alone, for in-process proxies started from an argv
/// (`serve::start_local`); the `discedge` command parses the same flags.
#[derive(Debug, Parser)]
#[command(name = "discedge")]
pub struct ServeCli {
    #[command(subcommand)]
    pub command: ServeCommand,
}

/// The one subcommand of [`ServeCli`].
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Run the proxy.
    Serve(Box<ServeArgs>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every `discedge serve` flag is in the README's configuration tables (their rows start
    /// with the flags).
    #[test]
    fn the_readme_names_every_serve_flag() {
        let rows: String = include_str!("../../../README.md")
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .map(|l| l.split(" | ").next().unwrap_or_default())
            .collect();
        let cli = ServeCli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let missing: Vec<String> = serve
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| *long != "help")
            .map(|long| format!("--{long}"))
            .filter(|flag| !rows.contains(&format!("`{flag}")))
            .collect();
        assert!(missing.is_empty(), "README.md misses {missing:?}");
    }
}
