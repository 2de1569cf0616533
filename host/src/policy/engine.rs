//! The wasmtime side shared by every policy: one [`PolicyEngine`] (an
//! `Engine` with epoch interruption and the thread that ticks it, the
//! compiled-component cache, the runtime guest calls are driven on), and a
//! `Store` per plugin holding a [`PluginState`] with its memory limiter,
//! its clock, its log sink and an empty WASI context. Every guest call goes
//! through [`call`], which runs it under the policy's clock (see `driver`)
//! and turns traps and guest errors into [`PolicyError`]s.

use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::PolicyError;
use super::bindings::{host, types};
use super::cache::Cache;
use super::compile;
use super::driver::{self, Clock, Driver, Timed};
use super::limits::{MemoryLimitExceeded, PolicyLimiter, SandboxLimits};
use super::log::{GuestStream, LogSink, PluginLog};
use super::text::safe;

/// Epoch granularity: a deadline fires within one tick of its time.
const TICK: Duration = Duration::from_millis(10);

/// The wasmtime settings of every policy engine. Epoch interruption makes
/// a guest running wasm yield to the host's bound on its call (see
/// `driver`).
pub(crate) fn config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// The engine all policies run in.
pub(crate) struct PolicyEngine {
    engine: Engine,
    cache: Option<Cache>,
    limits: SandboxLimits,
    pub(crate) log: LogSink,
    driver: Arc<Driver>,
    /// Stops the ticker thread when dropped.
    _ticker: mpsc::Sender<()>,
}

impl PolicyEngine {
    /// An engine whose compiled components are cached in `cache_dir`, their
    /// entries keyed with the key in `cache_key` (see `cache`).
    pub(crate) fn new(
        cache_dir: Option<PathBuf>,
        cache_key: Option<PathBuf>,
        limits: SandboxLimits,
    ) -> Result<Self, PolicyError> {
        let engine = Engine::new(&config()).map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let driver = Driver::new()
            .map_err(|e| PolicyError::Engine(format!("failed to start the policy runtime: {e}")))?;
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
            cache: cache_dir.map(|dir| Cache::new(dir, cache_key)),
            limits,
            log: LogSink::default(),
            driver: Arc::new(driver),
            _ticker: stop,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `wasm` compiled: from the disk cache if a verified entry is there,
    /// else compiled (in-process if `builtin`, else in a bounded child
    /// process) and cached.
    pub(crate) fn component(
        &self,
        plugin: &str,
        wasm: &[u8],
        builtin: bool,
    ) -> Result<Component, PolicyError> {
        let load_error = |e: wasmtime::Error| PolicyError::Load {
            plugin: plugin.to_owned(),
            cause: safe(&format!("{e:#}")),
        };
        if let Some(cache) = &self.cache
            && let Some(artifact) = cache.get(&self.engine, plugin, wasm)
        {
            match deserialize(&self.engine, &artifact) {
                Ok(component) => return Ok(component),
                Err(e) => cache.rejected(&self.engine, plugin, wasm, &format!("{e:#}")),
            }
        }
        if builtin {
            let component = Component::new(&self.engine, wasm).map_err(load_error)?;
            if let Some(cache) = &self.cache {
                let artifact = component.serialize().map_err(load_error)?;
                cache.put(&self.engine, plugin, wasm, &artifact);
            }
            return Ok(component);
        }
        let artifact = compile::in_child(plugin, wasm, self.limits.compile_memory())?;
        let component = deserialize(&self.engine, &artifact).map_err(load_error)?;
        if let Some(cache) = &self.cache {
            cache.put(&self.engine, plugin, wasm, &artifact);
        }
        Ok(component)
    }

    /// Links `component` with `link` (plus WASI, with a context that grants
    /// nothing, if `wasi`) and instantiates it with `instantiate` in a fresh
    /// store carrying `data` for its imports. Instantiation runs guest code
    /// (start functions), under the same clock as any call.
    pub(crate) fn instantiate<T: Send + 'static, W>(
        &self,
        plugin: &str,
        component: &Component,
        wasi: bool,
        data: T,
        link: impl FnOnce(&mut Linker<PluginState<T>>) -> wasmtime::Result<()>,
        instantiate: impl AsyncFnOnce(
            &mut Store<PluginState<T>>,
            &Component,
            &Linker<PluginState<T>>,
        ) -> wasmtime::Result<W>,
    ) -> Result<(Store<PluginState<T>>, W), PolicyError> {
        let mut linker = Linker::new(&self.engine);
        let mut store = self.store(plugin, data);
        let instance = link(&mut linker)
            .and_then(|()| {
                if wasi {
                    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
                }
                Ok(())
            })
            .and_then(|()| {
                driver::run(&mut store, async |store| {
                    instantiate(store, component, &linker).await
                })
            })
            .map_err(|e| PolicyError::Load {
                plugin: plugin.to_owned(),
                cause: describe_trap(&e, store.data()),
            })?;
        Ok((store, instance))
    }

    fn store<T: Send>(&self, plugin: &str, data: T) -> Store<PluginState<T>> {
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
                limiter: PolicyLimiter::new(self.limits.memory_bytes),
                clock: Clock::new(self.limits.deadline, self.limits.budget),
                driver: self.driver.clone(),
                wasi,
                table: ResourceTable::new(),
                data,
            },
        );
        store.limiter(|state| &mut state.limiter);
        // At every tick: stop a call past its end, else let the driver
        // check its timeout.
        store.epoch_deadline_callback(|store| {
            Ok(if store.data().clock.past_end() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }
}

/// What the host keeps for one plugin instance: its log (which knows its
/// name), its memory limiter and clock, its WASI context, and whatever its
/// world's imports need (`()` for most, the output directory for reporters).
pub(crate) struct PluginState<T> {
    pub(crate) log: PluginLog,
    limiter: PolicyLimiter,
    clock: Clock,
    driver: Arc<Driver>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) data: T,
}

impl<T> PluginState<T> {
    pub(crate) fn plugin(&self) -> &str {
        self.log.plugin()
    }
}

impl<T> Timed for PluginState<T> {
    fn clock(&mut self) -> &mut Clock {
        &mut self.clock
    }

    fn driver(&self) -> &Arc<Driver> {
        &self.driver
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

/// Runs one guest call under the policy's clock. A trap (deadline, budget,
/// memory, stack, panic) and an `Err` the guest returns both become errors
/// naming the plugin and `func`.
pub(crate) fn call<T: Send, R>(
    store: &mut Store<PluginState<T>>,
    func: &'static str,
    f: impl AsyncFnOnce(&mut Store<PluginState<T>>) -> wasmtime::Result<Result<R, String>>,
) -> Result<R, PolicyError> {
    let result = driver::run(store, f);
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
            cause: describe_trap(&e, store.data()),
        }),
    }
}

/// Loads an artifact.
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime runs an artifact's native code as it is. This one
    // is either what this very binary just compiled in its child process
    // and handed over on a pipe only the two of them hold, or a cache
    // entry whose HMAC under this user's key verified (see `cache`).
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize(engine, artifact)
    }
}

/// A trap in words a CI admin understands; anything else as wasmtime says
/// it, made safe (it may quote the guest).
fn describe_trap<T>(e: &wasmtime::Error, state: &PluginState<T>) -> String {
    if let Some(limit) = e.downcast_ref::<MemoryLimitExceeded>() {
        return limit.to_string();
    }
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return format!("exited with status {} (wasi:cli/exit)", exit.0);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => state.clock.interrupted(),
        Some(Trap::UnreachableCodeReached) => "panicked (wasm `unreachable`)".to_owned(),
        Some(Trap::StackOverflow) => "overflowed its stack (recursion too deep)".to_owned(),
        Some(Trap::CannotEnterComponent) => {
            "can't be called again after an earlier failure".to_owned()
        }
        Some(trap) => format!("trapped: {trap}"),
        None => safe(&format!("{e:#}")),
    }
}
