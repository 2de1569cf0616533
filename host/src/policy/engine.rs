//! The wasmtime side shared by every policy: one [`PolicyEngine`] (an
//! `Engine` with epoch interruption and the thread that ticks it), and a
//! `Store` per plugin holding a [`PluginState`] with its memory limit.
//! Every guest call goes through [`call`], which arms the deadline and
//! turns traps and guest errors into [`PolicyError`]s.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use super::PolicyError;
use super::bindings::{host, types};
use super::cache;

/// How long one guest call may run before it is interrupted.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Epoch granularity: a deadline fires within one tick of its time.
const TICK: Duration = Duration::from_millis(10);
/// Linear memory a plugin may grow to (a Rust policy needs a few MiB; this
/// leaves room for interpreted-language policies and 100k-test suites).
const MEMORY_LIMIT: usize = 256 << 20;
/// Longest log message shown; the rest is cut.
const MAX_LOG_MESSAGE: usize = 4096;

/// The engine all policies run in.
pub(crate) struct PolicyEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Stops the ticker thread when dropped.
    _ticker: mpsc::Sender<()>,
}

impl PolicyEngine {
    pub(crate) fn new(cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
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
            _ticker: stop,
        })
    }

    /// Compiles `wasm`, or loads it from the disk cache.
    fn component(&self, plugin: &str, wasm: &[u8]) -> Result<Component, PolicyError> {
        cache::load(&self.engine, plugin, wasm, self.cache_dir.as_deref()).map_err(|e| {
            PolicyError::Load {
                plugin: plugin.to_owned(),
                cause: format!("{e:#}"),
            }
        })
    }

    /// Compiles (or loads) `wasm`, links it with `link` and instantiates it
    /// with `instantiate` in a fresh store carrying `data` for its imports.
    pub(crate) fn instantiate<T: Send, W>(
        &self,
        plugin: &str,
        wasm: &[u8],
        data: T,
        link: impl FnOnce(&mut Linker<PluginState<T>>) -> wasmtime::Result<()>,
        instantiate: impl FnOnce(
            &mut Store<PluginState<T>>,
            &Component,
            &Linker<PluginState<T>>,
        ) -> wasmtime::Result<W>,
    ) -> Result<(Store<PluginState<T>>, W), PolicyError> {
        let component = self.component(plugin, wasm)?;
        let mut linker = Linker::new(&self.engine);
        let mut store = self.store(plugin, data);
        let instance = link(&mut linker)
            .and_then(|()| instantiate(&mut store, &component, &linker))
            .map_err(|e| PolicyError::Load {
                plugin: plugin.to_owned(),
                cause: format!("{e:#}"),
            })?;
        Ok((store, instance))
    }

    fn store<T: Send>(&self, plugin: &str, data: T) -> Store<PluginState<T>> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            PluginState {
                plugin: plugin.to_owned(),
                limits,
                data,
            },
        );
        store.limiter(|state| &mut state.limits);
        // Instantiation runs guest code too (start functions).
        arm_deadline(&mut store);
        store
    }
}

/// What the host keeps for one plugin instance: its name (for log lines and
/// errors), its limits, and whatever its world's imports need (`()` for
/// most, the output directory for reporters).
pub(crate) struct PluginState<T> {
    pub(crate) plugin: String,
    limits: StoreLimits,
    pub(crate) data: T,
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
        eprintln!("[{}] {level}: {}", self.plugin, sanitize(&message));
    }
}

/// Makes guest text safe to print on a terminal: control characters (escape
/// sequences could rewrite the screen) are shown escaped, length is capped.
fn sanitize(message: &str) -> String {
    let mut shown: String = message
        .chars()
        .take(MAX_LOG_MESSAGE)
        .flat_map(|c| match c {
            '\n' | '\t' => vec![c],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect();
    if message.chars().nth(MAX_LOG_MESSAGE).is_some() {
        shown.push_str(" [truncated]");
    }
    shown
}

/// Runs one guest call under [`CALL_DEADLINE`]. A trap (deadline, memory,
/// panic) and an `Err` the guest returns both become errors naming the plugin
/// and `func`.
pub(crate) fn call<T, R>(
    store: &mut Store<PluginState<T>>,
    func: &'static str,
    f: impl FnOnce(&mut Store<PluginState<T>>) -> wasmtime::Result<Result<R, String>>,
) -> Result<R, PolicyError> {
    arm_deadline(store);
    let result = f(store);
    let plugin = || store.data().plugin.clone();
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(PolicyError::Failed {
            plugin: plugin(),
            func,
            message,
        }),
        Err(e) => Err(PolicyError::Trapped {
            plugin: plugin(),
            func,
            cause: describe_trap(&e),
        }),
    }
}

fn arm_deadline<T>(store: &mut Store<T>) {
    store.set_epoch_deadline((CALL_DEADLINE.as_millis() / TICK.as_millis()) as u64);
}

fn describe_trap(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("exceeded its {}s deadline", CALL_DEADLINE.as_secs()),
        Some(Trap::UnreachableCodeReached) => "panicked (wasm `unreachable`)".to_owned(),
        _ => format!("{e:#}"),
    }
}
