//! One policy call's side of the host: the store's per-call state, the host imports it
//! answers (for every contract version), and why a call fails. Apart from the engine
//! (`runtime`) and the calls themselves (`instance`), so each depends on this and not on the
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::contract::{self, LogLevel, PolicyError};

/// What a policy may ask of the outside world, provided by the proxy (llama-server) or a test.
pub trait HostServices: Send + Sync + 'static {
    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, String>;
    fn detokenize(&self, tokens: &[u32]) -> Result<String, String>;

    /// [`tokenize`](Self::tokenize), given up after `within`: the policy's deadline only
    /// interrupts wasm, so a host call that can block must bound itself (override this).
    fn tokenize_within(
        &self,
        text: &str,
        parse_special: bool,
        within: Duration,
    ) -> Result<Vec<u32>, String> {
        let _ = within;
        self.tokenize(text, parse_special)
    }

    /// [`detokenize`](Self::detokenize), given up after `within`; see
    /// [`tokenize_within`](Self::tokenize_within).
    fn detokenize_within(&self, tokens: &[u32], within: Duration) -> Result<String, String> {
        let _ = within;
        self.detokenize(tokens)
    }

    /// Whether every call answers at once, without waiting on I/O (a tokenizer in memory):
    /// then a policy call may run right on an async worker, with no hand-off to another
    /// thread (see [`crate::blocking::run_short`]).
    fn answers_in_place(&self) -> bool {
        false
    }
}

/// One of the runtime's `instances` slots, given back when the instance is dropped.
pub(super) struct InstanceSlot(Arc<AtomicU32>);

impl InstanceSlot {
    pub(super) fn take(live: &Arc<AtomicU32>, limit: u32) -> Result<Self, CallFailure> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .map_err(|_| CallFailure::Busy(format!("all {limit} policy instances are in use")))?;
        Ok(Self(live.clone()))
    }
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-call state: the store's data. Never shared between calls, so a trap poisons nothing else.
pub struct CallState {
    pub(super) policy: Arc<str>,
    pub(super) services: Arc<dyn HostServices>,
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) stderr: MemoryOutputPipe,
    pub(super) call_timeout: Duration,
    /// When the current call's time is up; host calls get only what is left of it.
    pub(super) deadline: Instant,
    /// Set when a host call failed for lack of time: the call's outcome, whatever the guest
    /// did next (the epoch trap may or may not have fired by the time it returns).
    pub(super) host_timed_out: Option<String>,
}

impl CallState {
    /// Runs a host call within what is left of the policy call's time.
    fn bounded<T>(
        &mut self,
        call: &str,
        run: impl FnOnce(&dyn HostServices, Duration) -> Result<T, String>,
    ) -> Result<T, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            Err("no time left".to_owned())
        } else {
            run(&*self.services, left)
        };
        result.map_err(|e| {
            if Instant::now() >= self.deadline {
                let timeout = format!(
                    "{call} did not finish within the policy's time ({} ms): {e}",
                    self.call_timeout.as_millis()
                );
                self.host_timed_out = Some(timeout.clone());
                timeout
            } else {
                e
            }
        })
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The host imports, whichever contract version the guest called them through.
impl CallState {
    fn host_log(&mut self, level: LogLevel, message: &str) {
        let policy = &*self.policy;
        match level {
            LogLevel::Trace => tracing::trace!(policy, "{message}"),
            LogLevel::Debug => tracing::debug!(policy, "{message}"),
            LogLevel::Info => tracing::info!(policy, "{message}"),
            LogLevel::Warn => tracing::warn!(policy, "{message}"),
            LogLevel::Error => tracing::error!(policy, "{message}"),
        }
    }

    fn host_tokenize(&mut self, text: &str, parse_special: bool) -> Result<Vec<u32>, String> {
        self.bounded("tokenize", |services, within| {
            services.tokenize_within(text, parse_special, within)
        })
    }

    fn host_detokenize(&mut self, tokens: &[u32]) -> Result<String, String> {
        self.bounded("detokenize", |services, within| {
            services.detokenize_within(tokens, within)
        })
    }
}

/// Why a policy call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// The policy declined with one of the contract's errors.
    #[error("{0:?}")]
    Declined(PolicyError),
    /// The policy trapped (panic, timeout, memory limit) or could not be instantiated.
    #[error("{0}")]
    Trapped(String),
    /// Every policy instance (`Limits::instances`) is in use: not the policy's fault, and it
    /// passes as turns finish.
    #[error("{0}")]
    Busy(String),
}

/// Describes a trap with whatever the guest wrote to stderr (a panic message, say).
pub(super) fn failure(store: &Store<CallState>, error: wasmtime::Error) -> CallFailure {
    let what = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "timed out".to_owned(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {error:#}"),
    };
    let stderr = store.data().stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    match stderr.trim() {
        "" => CallFailure::Trapped(what),
        text => CallFailure::Trapped(format!("{what}: {text}")),
    }
}

/// An instantiation that failed: busy when the pooling allocator ran out of one of its pools
/// (a component may use more core instances or memories than the count above assumes).
pub(super) fn instantiate_failure(store: &Store<CallState>, error: wasmtime::Error) -> CallFailure {
    if error
        .chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        return CallFailure::Busy(format!("{error:#}"));
    }
    failure(store, error)
}

/// Links the host's imports of every spoken version (WASI is linked by the runtime).
pub fn add_to_linker(linker: &mut Linker<CallState>) -> anyhow::Result<()> {
    contract::ContextPolicy::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    contract::v0_1::ContextPolicy::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
}

impl contract::discedge::policy::types::Host for CallState {}

impl contract::discedge::policy::host::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.host_log(level, &message);
    }

    fn tokenize(&mut self, text: String, parse_special: bool) -> Result<Vec<u32>, String> {
        self.host_tokenize(&text, parse_special)
    }

    fn detokenize(&mut self, tokens: Vec<u32>) -> Result<String, String> {
        self.host_detokenize(&tokens)
    }
}

impl contract::v0_1::discedge::policy::host::Host for CallState {
    fn log(&mut self, level: contract::v0_1::discedge::policy::host::LogLevel, message: String) {
        use contract::v0_1::discedge::policy::host::LogLevel as Old;
        let level = match level {
            Old::Trace => LogLevel::Trace,
            Old::Debug => LogLevel::Debug,
            Old::Info => LogLevel::Info,
            Old::Warn => LogLevel::Warn,
            Old::Error => LogLevel::Error,
        };
        self.host_log(level, &message);
    }

    fn tokenize(&mut self, text: String, parse_special: bool) -> Result<Vec<u32>, String> {
        self.host_tokenize(&text, parse_special)
    }

    fn detokenize(&mut self, tokens: Vec<u32>) -> Result<String, String> {
        self.host_detokenize(&tokens)
    }
}
