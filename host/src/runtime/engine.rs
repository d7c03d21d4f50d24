//! The shared wasmtime engine (pooling allocator, epoch ticker) and the
//! on-disk cache of compiled filters, so a restart does not recompile.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::FilterError;
use super::bindings::v0_1;
use super::host::HostState;
use super::state::lock;

/// One epoch tick; CPU limits are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Sizing of the shared engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Filter instances that may exist at once (pool slots). A hot swap holds
    /// two instances of a filter for a moment.
    pub max_instances: u32,
    /// Largest linear memory any filter may have (the pool's hard ceiling).
    pub max_memory_bytes: usize,
    /// Where compiled artifacts are kept; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 2000,
            max_memory_bytes: 64 << 20,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$SIPHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/siphost/filters`, else
/// `$HOME/.cache/siphost/filters`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SIPHOST_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("siphost").join("filters"));
    }
    std::env::var_os("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache")
            .join("siphost")
            .join("filters")
    })
}

/// The engine, the linker with every import, and the artifact cache.
pub struct FilterEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// Hex of `Engine::precompile_compatibility_hash()`: artifacts from another
    /// wasmtime version or configuration never match.
    compat: String,
    /// Components already in memory by wasm SHA-256: tenants running the
    /// same filter share its compiled code.
    loaded: Mutex<HashMap<String, Component>>,
    ticker_stop: Arc<AtomicBool>,
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    Cache,
    Compiled,
}

impl FilterEngine {
    pub fn new(options: &EngineOptions) -> Result<Self, FilterError> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = options.max_instances.max(1);
        pool.total_component_instances(instances)
            // A wasip2 component holds a few core instances (main module and
            // adapter shims) and tables; memories are one per filter.
            .total_core_instances(instances.saturating_mul(4))
            .total_tables(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .max_memories_per_component(2)
            .max_memory_size(options.max_memory_bytes)
            .max_unused_warm_slots(instances.min(100));
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| FilterError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        add_sandbox_wasi(&mut linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        v0_1::Filter::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| FilterError::Engine(e.to_string()))?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), ticker_stop.clone())?;
        Ok(Self {
            engine,
            linker,
            cache_dir: options.cache_dir.clone(),
            compat,
            loaded: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    /// Links a component: imports this host does not offer (filesystem,
    /// sockets, unknown interfaces) become stubs that trap when called.
    pub fn link(
        &self,
        component: &Component,
    ) -> wasmtime::Result<wasmtime::component::InstancePre<HostState>> {
        let mut linker = self.linker.clone();
        linker.define_unknown_imports_as_traps(component)?;
        linker.instantiate_pre(component)
    }

    /// Loads a component: from the artifact cache when this exact wasm was
    /// compiled by a compatible engine before, else compiled (and cached).
    pub fn load(&self, path: &Path) -> Result<(Component, String, LoadSource), FilterError> {
        let wasm = std::fs::read(path)
            .map_err(|e| FilterError::Load(format!("{}: {e}", path.display())))?;
        let digest = hex(&Sha256::digest(&wasm));
        if let Some(component) = lock(&self.loaded).get(&digest) {
            return Ok((component.clone(), digest, LoadSource::Cache));
        }
        let (component, source) = self.compile_or_read_cache(path, &wasm, &digest)?;
        lock(&self.loaded).insert(digest.clone(), component.clone());
        Ok((component, digest, source))
    }

    fn compile_or_read_cache(
        &self,
        path: &Path,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, LoadSource), FilterError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{digest}.cwasm", self.compat)));
        if let Some(file) = cached.as_deref()
            && file.exists()
        {
            // SAFETY: artifacts are only read from the operator's cache
            // directory, written by this engine (same compatibility hash) for
            // the wasm with this SHA-256; the directory is as trusted as the
            // binary itself.
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(component) => return Ok((component, LoadSource::Cache)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "stale filter artifact, recompiling: {e}")
                }
            }
        }
        let artifact = self
            .engine
            .precompile_component(wasm)
            .map_err(|e| FilterError::Compile(format!("{}: {e:#}", path.display())))?;
        if let Some(file) = cached.as_deref()
            && let Err(e) = store_artifact(file, &artifact)
        {
            tracing::warn!(file = %file.display(), "cannot cache filter artifact: {e}");
        }
        // SAFETY: `artifact` was produced by `precompile_component` on this
        // very engine a moment ago.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }
            .map_err(|e| FilterError::Compile(format!("{}: {e:#}", path.display())))?;
        Ok((component, LoadSource::Compiled))
    }
}

/// The WASI 0.2 subset a Rust std guest needs: clocks, random, cli (args and
/// environment empty, stdio sinks), io. No filesystem, no sockets: a filter
/// importing them gets trapping stubs (see `FilterEngine::link`).
///
/// Blocking WASI calls (blocking stream writes/reads/flushes, poll, pollable
/// block/ready) trap instead: wasmtime-wasi's sync versions enter a tokio
/// runtime, which panics on the proxy's worker threads, and a filter must not
/// block the proxy anyway. Stream handles are dropped synchronously for the
/// same reason.
fn add_sandbox_wasi(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::{HasData, Resource, ResourceTable, ResourceType};
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
    use wasmtime_wasi::random::WasiRandom;

    struct Table;
    impl HasData for Table {
        type Data<'a> = &'a mut ResourceTable;
    }

    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    sync::io::error::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;

    l.allow_shadowing(true);
    let trap = |name: &'static str| {
        move |_: wasmtime::StoreContextMut<'_, HostState>,
              _: wasmtime::component::types::ComponentFunc,
              _: &[wasmtime::component::Val],
              _: &mut [wasmtime::component::Val]| {
            Err(wasmtime::format_err!(
                "{name}: blocking WASI calls are not available to filters"
            ))
        }
    };
    let mut streams = l.instance("wasi:io/streams@0.2.12")?;
    for name in [
        "[method]output-stream.blocking-write-and-flush",
        "[method]output-stream.blocking-write-zeroes-and-flush",
        "[method]output-stream.blocking-flush",
        "[method]output-stream.blocking-splice",
        "[method]input-stream.blocking-read",
        "[method]input-stream.blocking-skip",
    ] {
        streams.func_new(name, trap(name))?;
    }
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<DynInputStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    let mut poll = l.instance("wasi:io/poll@0.2.12")?;
    for name in ["poll", "[method]pollable.block", "[method]pollable.ready"] {
        poll.func_new(name, trap(name))?;
    }
    l.allow_shadowing(false);
    Ok(())
}

impl Drop for FilterEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), FilterError> {
    std::thread::Builder::new()
        .name("siphost-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| FilterError::Engine(format!("epoch ticker thread: {e}")))
}

/// Writes through a temporary file and a rename, so a reader never sees half
/// an artifact; the directory is created private to the user.
fn store_artifact(file: &Path, artifact: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, artifact)?;
    std::fs::rename(&tmp, file)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
