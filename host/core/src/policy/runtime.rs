//! Host glue for policy components: the engine, the sandbox each call's store gets, and
//! linking a component once. The per-call state and host imports are `call`'s, the calls
//! `instance`'s. Nothing here knows about HTTP or sessions.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

pub use super::call::{CallFailure, HostServices};
use super::call::{CallState, InstanceSlot, add_to_linker, instantiate_failure};
pub use super::contract::{
    Answer, ChatTemplate, CompletionRequest, PolicyError, PolicyInfo, Prepared, Prompt, Reply,
    Settings, Step, TurnInput,
};
use super::contract::{Exports, Version};
pub use super::instance::PolicyInstance;

/// Limits every policy call runs under, so a faulty policy cannot stall or starve the node.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall time for one call, host imports included.
    pub call_timeout: Duration,
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Policy instances alive at once (the pooling allocator's size).
    pub instances: u32,
    /// Completions a policy may ask for in one turn (contract 0.2.0), so a policy that asks
    /// for ever cannot hold a turn for ever.
    pub completions_per_turn: u32,
    /// Time all of a turn's policy completions may take together.
    pub completions_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            instances: 128,
            completions_per_turn: 4,
            completions_time: Duration::from_secs(120),
        }
    }
}

/// The only clock a policy sees: always zero. A policy's output must depend on its inputs
/// alone, so every node computes the same prompt from the same session.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The seed of every `wasi:random` source a policy sees, fixed like its clock: std's hash maps
/// draw their keys from it, and a map that iterated in another order on another node could
/// make a different prompt or record from the same session.
const RANDOM_SEED: u128 = 0x6469_7363_6564_6765_2d70_6f6c_6963_7921;

/// The bytes a policy's random sources cycle through: SHA-256 blocks counted up from
/// [`RANDOM_SEED`], so they look random to a guest but are the same on every node and run.
fn random_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        use sha2::Digest;
        (0u32..32)
            .flat_map(|block| {
                let mut h = sha2::Sha256::new();
                h.update(RANDOM_SEED.to_le_bytes());
                h.update(block.to_le_bytes());
                h.finalize().to_vec()
            })
            .collect()
    })
}

/// How often the epoch ticker fires; the call timeout is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes of a policy's stderr kept for error reports (panic messages).
const STDERR_BYTES: usize = 8 * 1024;

/// One wasmtime engine and linker shared by every policy, set up once per process.
pub struct PolicyRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
    /// Instances alive now. Counted here too, not only by the pooling allocator: without
    /// pooling (on-demand allocation) nothing else would bound them.
    live: Arc<AtomicU32>,
}

impl PolicyRuntime {
    /// Builds the engine (pooling allocator when the machine allows it, epoch interruption for
    /// timeouts) and starts the epoch ticker thread.
    pub fn new(limits: Limits) -> anyhow::Result<Arc<Self>> {
        let engine = match Engine::new(&config(&limits, true)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                Engine::new(&config(&limits, false)).map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        add_to_linker(&mut linker)?;
        let weak = engine.weak();
        thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            live: Arc::default(),
        }))
    }

    /// The wasmtime engine, for compiling components with the runtime's settings.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits every policy call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Links a compiled component against the host once, so each call only instantiates, and
    /// finds which contract version it was built for and where its functions are.
    pub fn prepare_component(&self, component: &Component) -> anyhow::Result<PolicyPre> {
        let exports = Exports::find(component)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(PolicyPre { pre, exports })
    }

    /// A fresh store and instance for one call (or one prepare/commit pair).
    pub fn instantiate(
        &self,
        pre: &PolicyPre,
        policy: Arc<str>,
        services: Arc<dyn HostServices>,
    ) -> Result<PolicyInstance, CallFailure> {
        let slot = InstanceSlot::take(&self.live, self.limits.instances)?;
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(random_bytes().to_vec()))
            .insecure_random(Deterministic::new(random_bytes().to_vec()))
            .insecure_random_seed(RANDOM_SEED)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .build();
        let state = CallState {
            policy,
            services,
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            deadline: Instant::now() + self.limits.call_timeout,
            call_timeout: self.limits.call_timeout,
            host_timed_out: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.ticks());
        let instance = pre
            .pre
            .instantiate(&mut store)
            .map_err(|e| instantiate_failure(&store, e))?;
        Ok(PolicyInstance::new(
            store,
            instance,
            pre.exports.clone(),
            self.ticks(),
            slot,
        ))
    }

    fn ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

fn config(limits: &Limits, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances * 4)
            .total_memories(limits.instances * 2)
            .total_tables(limits.instances * 4)
            .max_memory_size(limits.memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A component linked against the host, ready to instantiate: see
/// [`PolicyRuntime::prepare_component`].
#[derive(Clone)]
pub struct PolicyPre {
    pre: InstancePre<CallState>,
    exports: Exports,
}

impl PolicyPre {
    /// Whether the component exports the optional `history` interface (`render`).
    pub fn has_history(&self) -> bool {
        self.exports.render.is_some()
    }

    /// The contract version the component was built for.
    pub fn contract(&self) -> Version {
        self.exports.version
    }
}
