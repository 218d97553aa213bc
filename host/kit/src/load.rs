//! A policy file loaded as the proxy loads it, and the tokenizers the kit can give it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use discedge_core::policy::{
    HostServices, Limits, LoadedPolicy, PolicyRegistry, PolicyRuntime, policy_name,
};

use crate::args::LimitArgs;

/// A policy ready to call, in a runtime with the proxy's limits.
pub struct Opened {
    pub runtime: Arc<PolicyRuntime>,
    pub policy: Arc<LoadedPolicy>,
}

/// Compiles, links and smoke-calls `file` through the proxy's own registry code, so what
/// loads here loads in `discedge serve` with the same limits.
pub fn open(
    file: &Path,
    limits: &LimitArgs,
    services: Arc<dyn HostServices>,
) -> anyhow::Result<Opened> {
    anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
    let runtime = PolicyRuntime::new(Limits {
        call_timeout: Duration::from_millis(limits.policy_timeout_ms),
        memory_bytes: limits.policy_memory_mib << 20,
        ..Limits::default()
    })?;
    let dir = file.parent().unwrap_or(Path::new(".")).to_owned();
    let registry = PolicyRegistry::new(
        runtime.clone(),
        dir,
        limits.policy_cache_dir.clone().or_else(default_cache_dir),
        services,
    );
    // The mode the proxy would serve it as, or `policy` for a name it would skip.
    let name = policy_name(file).unwrap_or_else(|| "policy".into());
    let policy = registry
        .load_file(&name, file)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("the proxy would refuse {}", file.display()))?;
    Ok(Opened {
        runtime,
        policy: Arc::new(policy),
    })
}

/// `~/.cache/discedge/policy-cache`, where the scripts keep DisCEdge's other downloads.
fn default_cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/discedge/policy-cache"))
}

/// A real model's tokenizer read from its GGUF, as a policy's host services.
pub struct GgufTokenizer(pub discedge_tokenizer::Tokenizer);

impl GgufTokenizer {
    /// Reads the tokenizer of the GGUF at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        discedge_tokenizer::Tokenizer::from_gguf(path)
            .map(Self)
            .with_context(|| format!("cannot read a tokenizer from {}", path.display()))
    }
}

impl HostServices for GgufTokenizer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        Ok(self.0.tokenize(text, parse_special))
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        Ok(self.0.detokenize(tokens))
    }
}
