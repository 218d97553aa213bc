//! Wires the parts together for `discedge serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use clap::Parser;
use discedge_core::auth::ApiKeys;

use crate::config::{ServeArgs, ServeCli, ServeCommand, StoreKind};
use discedge_core::llm::{BlockingTokenizer, LlamaServer, LlmBackend};
use discedge_core::policy::{self, Limits, PolicyRegistry, PolicyRuntime};
use discedge_core::session::{Proxy, TurnDefaults};
use discedge_core::store::{ContextStore, EmbeddedStore, MemoryStore};
use discedge_fred::FredStore;

/// A proxy ready to serve, and what must live as long as it does.
pub struct Node {
    pub proxy: Arc<Proxy>,
    /// Reloads policies on file changes while alive.
    pub watcher: Option<notify::RecommendedWatcher>,
    /// Follows turns other nodes commit (roamed turns, `--warm-up`) while alive.
    pub warm: Option<AbortOnDrop>,
}

/// A background task that ends with its owner.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the store, starts the policy runtime and loads the plugins folder.
pub async fn build(args: &ServeArgs) -> anyhow::Result<Node> {
    let store: Arc<dyn ContextStore> = match args.store {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open(&args.data_dir)?),
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Fred => {
            let config = args.fred.config().map_err(anyhow::Error::msg)?;
            Arc::new(FredStore::connect(&config).await?)
        }
    };
    let llm: Arc<dyn LlmBackend> = Arc::new(
        LlamaServer::new(&args.llama_url, args.llm_timeout())
            .with_tokenizer(args.tokenizer.clone()),
    );
    // Read and check the model's tokenizer now rather than on the first turn.
    tokio::spawn({
        let llm = llm.clone();
        async move { llm.prepare_tokenizer().await }
    });
    let services = Arc::new(BlockingTokenizer::new(
        llm.clone(),
        tokio::runtime::Handle::current(),
    ));
    let runtime = PolicyRuntime::new(Limits {
        call_timeout: Duration::from_millis(args.policy_timeout_ms),
        memory_bytes: args.policy_memory_mib << 20,
        instances: args.policy_instances,
        completions_per_turn: args.policy_completions,
        completions_time: args.llm_timeout(),
    })?;
    let registry = Arc::new(PolicyRegistry::new(
        runtime,
        args.plugins_dir.clone(),
        Some(
            args.policy_cache_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("policy-cache")),
        ),
        services.clone(),
    ));
    let loading = registry.clone();
    let report = tokio::task::spawn_blocking(move || loading.reload()).await?;
    for (file, why) in &report.failed {
        tracing::warn!("{file}: {why}");
    }
    if registry.is_empty() {
        tracing::warn!(
            dir = %args.plugins_dir.display(),
            "no policies loaded: build them with scripts/build-plugins.sh; /health answers 503 until then"
        );
    }
    let watcher = if args.no_watch {
        None
    } else {
        std::fs::create_dir_all(&args.plugins_dir).ok();
        Some(policy::watch(registry.clone()).context("cannot watch the plugins folder")?)
    };
    let defaults = TurnDefaults {
        template: args.model.template().map_err(anyhow::Error::msg)?,
        system_prompt: args.model.system_prompt.clone(),
        n_ctx: args.model.n_ctx,
        reply_budget: args.model.reply_budget,
        user_id: args.model.default_user.clone(),
        mode: args.model.default_mode.clone(),
        sync_wait: Duration::from_millis(args.sync_wait_ms),
        session_idle: (args.session_idle_secs > 0)
            .then(|| Duration::from_secs(args.session_idle_secs)),
        max_session_bytes: args.max_session_bytes,
        max_prompt_bytes: args.max_prompt_bytes,
    };
    let mut keys = args.api_keys.clone().unwrap_or_default();
    if let Some(file) = &args.api_keys_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read API keys {}", file.display()))?;
        keys.push('\n');
        keys.push_str(&text);
    }
    let mut proxy = Proxy::new(store, llm, registry, services, defaults);
    proxy.api_keys = ApiKeys::parse(&keys).map_err(anyhow::Error::msg)?;
    if let Some(key) = &args.operator_key {
        proxy.api_keys = proxy
            .api_keys
            .with_operator_key(key)
            .map_err(anyhow::Error::msg)?;
    }
    if !proxy.api_keys.is_empty() {
        tracing::info!("API keys required");
    }
    let proxy = Arc::new(proxy);
    if !(args.fred.warm_up_rate > 0.0) {
        anyhow::bail!("--warm-up-rate must be above 0 (warm-ups per second)");
    }
    let warm = match proxy.store.remote_turns() {
        Some(remote) => {
            let rate = args.fred.warm_up_rate;
            let run =
                discedge_core::session::run_warm_up(proxy.clone(), remote, args.fred.warm_up, rate);
            Some(AbortOnDrop(tokio::spawn(run)))
        }
        None if args.fred.warm_up => {
            anyhow::bail!("--warm-up needs the trigger feed: --store fred --fred-trigger-listen")
        }
        None => None,
    };
    Ok(Node {
        proxy,
        watcher,
        warm,
    })
}

/// A node serving on a free loopback port inside this process (tests, benchmarks,
/// `discedge scenario`): the node, the address it answers on, and the server task.
pub struct LocalServer {
    pub node: Node,
    pub addr: std::net::SocketAddr,
    pub server: tokio::task::JoinHandle<()>,
}

/// Starts a node from a full `discedge serve ...` command line, serving on 127.0.0.1 at a
/// free port, exactly as `discedge serve` would serve it.
pub async fn start_local(argv: &[&str]) -> anyhow::Result<LocalServer> {
    let ServeCommand::Serve(args) = ServeCli::try_parse_from(argv)?.command;
    let node = build(&args).await?;
    let app = crate::api::router(node.proxy.clone(), args.max_body_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) =
            axum::serve(crate::api::no_delay(listener), crate::api::with_peers(app)).await
        {
            tracing::error!("in-process server stopped: {e}");
        }
    });
    Ok(LocalServer { node, addr, server })
}

/// Runs the HTTP server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node = build(&args).await?;
    let app = crate::api::router(node.proxy.clone(), args.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        llama = %args.llama_url,
        store = node.proxy.store.kind(),
        policies = ?node.proxy.policies.names(),
        "discedge serving"
    );
    axum::serve(crate::api::no_delay(listener), crate::api::with_peers(app))
        .with_graceful_shutdown(shutdown())
        .await?;
    node.proxy.store.close().await;
    drop(node);
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
