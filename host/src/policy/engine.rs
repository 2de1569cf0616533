//! The wasmtime side shared by every policy: one [`PolicyEngine`] (an
//! `Engine` with epoch interruption and the thread that ticks it), and a
//! `Store` per plugin holding a [`PluginState`] with its limits, its log
//! sink and an empty WASI context. Every guest call goes through [`call`],
//! which arms the deadline and turns traps and guest errors into
//! [`PolicyError`]s.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PolicyError;
use super::bindings::{host, types};
use super::cache;
use super::log::{GuestStream, LogSink, PluginLog};
use super::text::safe;

/// Epoch granularity: a deadline fires within one tick of its time.
const TICK: Duration = Duration::from_millis(10);
/// Core instances one plugin may create (a component made by wit-component
/// has a handful: the module, its shims, the WASI adapter).
const MAX_INSTANCES: usize = 64;
/// Tables and memories per plugin, and elements per table.
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The limits every guest call runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandboxLimits {
    /// Bytes each linear memory of a plugin may grow to.
    pub memory_bytes: usize,
    /// How long one guest call may run before it is interrupted.
    pub deadline: Duration,
}

impl Default for SandboxLimits {
    /// 256 MiB leaves room for interpreted-language policies and 100k-test
    /// suites (a Rust policy needs a few MiB); 5 s is far more than any
    /// sane policy call takes.
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(5),
        }
    }
}

/// The engine all policies run in.
pub(crate) struct PolicyEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    limits: SandboxLimits,
    pub(crate) log: LogSink,
    /// Stops the ticker thread when dropped.
    _ticker: mpsc::Sender<()>,
}

impl PolicyEngine {
    pub(crate) fn new(
        cache_dir: Option<PathBuf>,
        limits: SandboxLimits,
    ) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PolicyError::Engine(format!("failed to start the epoch thread: {e}")))?;
        Ok(PolicyEngine {
            engine,
            cache_dir,
            limits,
            log: LogSink::default(),
            _ticker: stop,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `wasm`, or loads it from the disk cache.
    pub(crate) fn component(&self, plugin: &str, wasm: &[u8]) -> Result<Component, PolicyError> {
        cache::load(&self.engine, plugin, wasm, self.cache_dir.as_deref()).map_err(|e| {
            PolicyError::Load {
                plugin: plugin.to_owned(),
                cause: safe(&format!("{e:#}")),
            }
        })
    }

    /// Links `component` with `link` (plus WASI, with a context that grants
    /// nothing, if `wasi`) and instantiates it with `instantiate` in a fresh
    /// store carrying `data` for its imports.
    pub(crate) fn instantiate<T: Send + 'static, W>(
        &self,
        plugin: &str,
        component: &Component,
        wasi: bool,
        data: T,
        link: impl FnOnce(&mut Linker<PluginState<T>>) -> wasmtime::Result<()>,
        instantiate: impl FnOnce(
            &mut Store<PluginState<T>>,
            &Component,
            &Linker<PluginState<T>>,
        ) -> wasmtime::Result<W>,
    ) -> Result<(Store<PluginState<T>>, W), PolicyError> {
        let mut linker = Linker::new(&self.engine);
        let mut store = self.store(plugin, data);
        let linked = link(&mut linker).and_then(|()| {
            if wasi {
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            }
            Ok(())
        });
        let instance = linked
            .and_then(|()| instantiate(&mut store, component, &linker))
            .map_err(|e| PolicyError::Load {
                plugin: plugin.to_owned(),
                cause: describe_trap(&e, &self.limits),
            })?;
        Ok((store, instance))
    }

    fn store<T: Send>(&self, plugin: &str, data: T) -> Store<PluginState<T>> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(MAX_INSTANCES)
            .tables(MAX_TABLES)
            .memories(MAX_MEMORIES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        let log = PluginLog::new(plugin, self.log.clone());
        // Deny by default: no preopened directories, environment, args,
        // stdin or network; stdout and stderr become log lines.
        let wasi = WasiCtx::builder()
            .stdout(GuestStream::new(log.clone(), "stdout"))
            .stderr(GuestStream::new(log.clone(), "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut store = Store::new(
            &self.engine,
            PluginState {
                log,
                limits,
                sandbox: self.limits,
                wasi,
                table: ResourceTable::new(),
                data,
            },
        );
        store.limiter(|state| &mut state.limits);
        // Instantiation runs guest code too (start functions).
        arm_deadline(&mut store);
        store
    }
}

/// What the host keeps for one plugin instance: its log (which knows its
/// name), its limits, its WASI context, and whatever its world's imports
/// need (`()` for most, the output directory for reporters).
pub(crate) struct PluginState<T> {
    pub(crate) log: PluginLog,
    limits: StoreLimits,
    sandbox: SandboxLimits,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) data: T,
}

impl<T> PluginState<T> {
    pub(crate) fn plugin(&self) -> &str {
        self.log.plugin()
    }
}

impl<T: Send> WasiView for PluginState<T> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `types` declares no functions; linking it only needs the trait.
impl<T> types::Host for PluginState<T> {}

impl<T> host::Host for PluginState<T> {
    fn log(&mut self, level: host::Level, message: String) {
        let level = match level {
            host::Level::Trace | host::Level::Debug => return,
            host::Level::Info => "info",
            host::Level::Warn => "warning",
            host::Level::Error => "error",
        };
        self.log.line(level, &message);
    }
}

/// Runs one guest call under the deadline. A trap (deadline, memory, stack,
/// panic) and an `Err` the guest returns both become errors naming the
/// plugin and `func`.
pub(crate) fn call<T, R>(
    store: &mut Store<PluginState<T>>,
    func: &'static str,
    f: impl FnOnce(&mut Store<PluginState<T>>) -> wasmtime::Result<Result<R, String>>,
) -> Result<R, PolicyError> {
    arm_deadline(store);
    let result = f(store);
    let plugin = || store.data().plugin().to_owned();
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(PolicyError::Failed {
            plugin: plugin(),
            func,
            message: safe(&message),
        }),
        Err(e) => Err(PolicyError::Trapped {
            plugin: plugin(),
            func,
            cause: describe_trap(&e, &store.data().sandbox),
        }),
    }
}

fn arm_deadline<T>(store: &mut Store<PluginState<T>>) {
    let ticks = store.data().sandbox.deadline.as_millis() / TICK.as_millis();
    store.set_epoch_deadline((ticks as u64).max(1));
}

/// A trap in words a CI admin understands; anything else as wasmtime says
/// it, shortened.
fn describe_trap(e: &wasmtime::Error, limits: &SandboxLimits) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "exceeded its {}s deadline (interrupted)",
            limits.deadline.as_secs_f64()
        ),
        Some(Trap::UnreachableCodeReached) => "panicked (wasm `unreachable`)".to_owned(),
        Some(Trap::StackOverflow) => "overflowed its stack (recursion too deep)".to_owned(),
        Some(Trap::CannotEnterComponent) => {
            "can't be called again after an earlier failure".to_owned()
        }
        Some(trap) => format!("trapped: {trap}"),
        // The memory limiter's refusal is an error, not a `Trap`.
        None if format!("{e:#}").contains("forcing trap when growing memory") => format!(
            "exceeded its memory limit of {} MiB",
            limits.memory_bytes >> 20
        ),
        None => safe(&format!("{e:#}")),
    }
}
