//! Context policies: WebAssembly components chosen per request by `mode`, loaded from a
//! folder (`NAME.wasm` serves mode `NAME`) and swapped while the proxy runs.
//!
//! Requests take an `Arc` of the policy they start with, so a swap never disturbs a request in
//! flight: it finishes on the old version while the next request gets the new one.

mod call;
mod completion;
mod contract;
mod instance;
pub mod runtime;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub use completion::{Driven, answer, completion_body, policy_reply, prepare_blocking};
pub use contract::{SPOKEN as CONTRACT_VERSIONS, Version as ContractVersion};
pub use runtime::{CallFailure, HostServices, Limits, PolicyInstance, PolicyPre, PolicyRuntime};
pub use watch::watch;

/// A policy ready to serve: compiled, linked, and asked for its info.
pub struct LoadedPolicy {
    pub name: Arc<str>,
    pub info: runtime::PolicyInfo,
    /// SHA-256 (hex) of the `.wasm` file; tells versions apart in replies and `/policies`.
    pub sha256: String,
    pub path: PathBuf,
    pre: PolicyPre,
}

impl LoadedPolicy {
    /// A fresh instance for one request.
    pub fn instantiate(
        &self,
        runtime: &PolicyRuntime,
        services: Arc<dyn HostServices>,
    ) -> Result<PolicyInstance, CallFailure> {
        runtime.instantiate(&self.pre, self.name.clone(), services)
    }

    /// Whether the policy exports the optional `history` interface, so a stored session can be
    /// shown as chat messages ([`PolicyInstance::render`]).
    pub fn has_history(&self) -> bool {
        self.pre.has_history()
    }

    /// The contract version the component was built for.
    pub fn contract(&self) -> ContractVersion {
        self.pre.contract()
    }

    /// `name@version+hash`, short enough for a header.
    pub fn label(&self) -> String {
        format!("{}@{}+{}", self.name, self.info.version, &self.sha256[..12])
    }
}

/// What `GET /policies` shows for one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub name: String,
    pub version: String,
    pub description: String,
    pub stores_context: bool,
    /// Whether the policy can show a stored session as chat messages (the `history` export).
    pub history: bool,
    /// The `discedge:policy` contract version the component was built for ("0.2.0", "0.1.0").
    pub contract: &'static str,
    pub sha256: String,
    pub path: String,
}

/// What one reload did, for logs and the admin endpoint.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    /// File name -> why it was not loaded; the previous version (if any) keeps serving.
    pub failed: BTreeMap<String, String>,
}

/// Policies by mode name, swapped atomically as files come and go.
pub struct PolicyRegistry {
    runtime: Arc<PolicyRuntime>,
    dir: PathBuf,
    /// Where compiled components are cached (`None`: compile every time).
    cache_dir: Option<PathBuf>,
    services: Arc<dyn HostServices>,
    policies: ArcSwap<HashMap<String, Arc<LoadedPolicy>>>,
    /// Policy versions loaded since start (first loads and swaps).
    loads: std::sync::atomic::AtomicU64,
    /// One reload at a time (watcher and admin endpoint may race).
    reloading: Mutex<()>,
}

impl PolicyRegistry {
    /// `services` is only used for the smoke call made while loading.
    pub fn new(
        runtime: Arc<PolicyRuntime>,
        dir: PathBuf,
        cache_dir: Option<PathBuf>,
        services: Arc<dyn HostServices>,
    ) -> Self {
        Self {
            runtime,
            dir,
            cache_dir,
            services,
            policies: ArcSwap::from_pointee(HashMap::new()),
            loads: Default::default(),
            reloading: Mutex::new(()),
        }
    }

    /// The runtime the policies run in, shared with whoever instantiates them.
    pub fn runtime(&self) -> &Arc<PolicyRuntime> {
        &self.runtime
    }

    /// The folder the policies are loaded (and watched) from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current version of a policy, held for the whole request.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPolicy>> {
        self.policies.load().get(name).cloned()
    }

    /// The modes served, sorted, for `/health` and error messages.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.policies.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// Policy versions loaded since start (first loads and swaps), for metrics.
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// No policy loaded: the node cannot serve a turn yet.
    pub fn is_empty(&self) -> bool {
        self.policies.load().is_empty()
    }

    /// What `GET /policies` shows of each loaded policy.
    pub fn list(&self) -> Vec<PolicySummary> {
        let mut list: Vec<PolicySummary> = self
            .policies
            .load()
            .values()
            .map(|p| PolicySummary {
                name: p.name.to_string(),
                version: p.info.version.clone(),
                description: p.info.description.clone(),
                stores_context: p.info.stores_context,
                history: p.has_history(),
                contract: p.contract().as_str(),
                sha256: p.sha256.clone(),
                path: p.path.display().to_string(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Brings the registry in line with the folder: loads new and changed `.wasm` files, drops
    /// policies whose file is gone, and keeps the old version of any file that fails to load.
    /// Blocking (compiles): call from a blocking thread.
    pub fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().unwrap();
        let mut report = ReloadReport::default();
        let current = self.policies.load_full();
        let mut next = HashMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                report.failed.insert(
                    self.dir.display().to_string(),
                    format!("cannot read folder: {e}"),
                );
                return report;
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Some(name) = policy_name(&path) else {
                continue;
            };
            let result = std::fs::read(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|bytes| {
                    let sha256 = hex::encode(Sha256::digest(&bytes));
                    match current.get(&name) {
                        Some(old) if old.sha256 == sha256 => Ok(None),
                        _ => self.load(&name, &path, &bytes, sha256).map(Some),
                    }
                });
            match result {
                Ok(Some(policy)) => {
                    tracing::info!(policy = %policy.label(), "policy loaded");
                    report.loaded.push(name.clone());
                    self.loads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    next.insert(name, Arc::new(policy));
                }
                Ok(None) => {
                    report.unchanged.push(name.clone());
                    next.insert(name.clone(), current[&name].clone());
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), "policy not loaded: {why}");
                    report.failed.insert(path.display().to_string(), why);
                    if let Some(old) = current.get(&name) {
                        next.insert(name, old.clone());
                    }
                }
            }
        }
        report.removed = current
            .keys()
            .filter(|name| !next.contains_key(*name))
            .cloned()
            .collect();
        report.removed.sort();
        for name in &report.removed {
            tracing::info!(policy = %name, "policy removed");
        }
        self.policies.store(Arc::new(next));
        report
    }

    /// Loads one component file as mode `name` exactly as [`reload`](Self::reload) loads the
    /// folder's files (compiled or cached copy, linked, smoke-called), without serving it: for
    /// tools that check a policy before it is deployed. Blocking (compiles).
    pub fn load_file(&self, name: &str, path: &Path) -> Result<LoadedPolicy, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        self.load(name, path, &bytes, sha256)
    }

    /// Compiles (or loads precompiled), links, checks the `history` export if there is one, and
    /// smoke-calls `info` before anything can use it.
    fn load(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        sha256: String,
    ) -> Result<LoadedPolicy, String> {
        if !bytes.starts_with(b"\0asm") {
            return Err("not a WebAssembly component (no \\0asm header)".into());
        }
        let component = self.compile(bytes, &sha256)?;
        let pre = self
            .runtime
            .prepare_component(&component)
            .map_err(|e| {
                let engine = self.runtime.engine();
                let exports: Vec<String> =
                    component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect();
                format!(
                    "does not fit the host, which speaks {CONTRACT_VERSIONS}: {e} (the component exports {})",
                    exports.join(", ")
                )
            })?;
        let name: Arc<str> = Arc::from(name);
        let info = self
            .runtime
            .instantiate(&pre, name.clone(), self.services.clone())
            .and_then(|mut instance| {
                instance.check_exports()?;
                instance.info()
            })
            .map_err(|e| format!("smoke call failed: {e}"))?;
        Ok(LoadedPolicy {
            name,
            info,
            sha256,
            path: path.to_owned(),
            pre,
        })
    }

    /// Compiling takes tens of milliseconds; a cached precompiled copy loads in about 0.1 ms.
    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, String> {
        let engine = self.runtime.engine();
        let cached = self.cache_dir.as_ref().map(|dir| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
        });
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (the name carries its compatibility hash) into our own cache folder.
            match unsafe { Component::deserialize_file(engine, file) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(file = %file.display(), "ignoring bad cache entry: {e}"),
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| format!("does not compile: {e:#}"))?;
        if let Some(file) = cached
            && let Err(e) = write_cache(&component, &file)
        {
            tracing::warn!(file = %file.display(), "cannot cache compiled policy: {e}");
        }
        Ok(component)
    }
}

fn write_cache(component: &Component, file: &Path) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, file).map_err(|e| e.to_string())
}

/// `raw.wasm` -> `raw`; other files (and names a client could not type as a mode) are ignored.
pub fn policy_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" || !path.is_file() {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && stem.len() <= 64
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| stem.to_owned())
}

/// A policy's token prompt must leave the model room to answer and use only ids it knows;
/// a policy is untrusted code, and its mistakes must not pass for the client's. The proxy
/// checks every token prompt with it, and `discedge policy check` applies the same rule.
pub fn check_token_prompt(ids: &[u32], n_ctx: u32, vocab: Option<u32>) -> Result<(), String> {
    if ids.len() >= n_ctx as usize {
        return Err(format!(
            "produced a prompt of {} tokens; the model's window is {n_ctx}",
            ids.len()
        ));
    }
    if let Some((bad, vocab)) =
        vocab.and_then(|v| ids.iter().find(|&&id| id >= v).map(|bad| (bad, v)))
    {
        return Err(format!(
            "produced token id {bad}, outside the model's vocabulary of {vocab}"
        ));
    }
    Ok(())
}
