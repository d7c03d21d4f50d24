//! The shared wasmtime engine (pooling allocator, epoch ticker) and the on-disk
//! cache of compiled filters, checked on load.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::v0_1;
use super::imports::HostState;
use crate::runtime::FilterError;
use crate::runtime::epoch::EpochTicker;
use crate::runtime::instance::LoadSource;
use crate::runtime::state::lock;

/// Bytes of a freed instance's linear memory reset in place for reuse.
const KEEP_RESIDENT: usize = 1 << 20;
/// Length of the SHA-256 trailer of a cached artifact.
const TRAILER: usize = 32;

/// Sizing of the shared engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Filter instances that may exist at once (pool slots). Each tenant
    /// holds two per filter and worker (the live one and a spare), three for
    /// a moment during a swap or restart.
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
    pub(crate) ticker: Arc<EpochTicker>,
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
            .max_unused_warm_slots(instances.min(100))
            // A filter that times out on every message is re-instantiated as
            // often: reset its memory with memset rather than madvise, so
            // slot reuse takes no mm lock and sends no TLB shootdown to the
            // proxy's threads.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            // Data segments are copied in instead of mapped: no mmap per
            // instantiation (see KEEP_RESIDENT).
            .memory_init_cow(false)
            .wasm_component_model(true);
        // For profiling: /tmp/perf-<pid>.map names the filters' compiled
        // functions in `perf report`.
        if std::env::var_os("SIPHOST_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| FilterError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        add_sandbox_wasi(&mut linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        v0_1::FilterWithRegistrations::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |state| state)
        .map_err(|e| FilterError::Engine(e.to_string()))?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker = EpochTicker::spawn(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            cache_dir: options.cache_dir.clone(),
            compat,
            loaded: Mutex::new(HashMap::new()),
            ticker,
        })
    }

    /// Links a component: imports this host does not offer (filesystem,
    /// sockets, unknown interfaces) become stubs that trap when called.
    pub fn link(
        &self,
        component: &Component,
    ) -> wasmtime::Result<wasmtime::component::InstancePre<HostState>> {
        let mut linker = self.linker.clone();
        stub_unlinked_imports(&mut linker, component, &self.engine)?;
        linker.instantiate_pre(component)
    }

    /// Loads a component: from the artifact cache when this exact wasm was
    /// compiled by a compatible engine before, else compiled (and cached).
    pub fn load_component(
        &self,
        path: &Path,
    ) -> Result<(Component, String, LoadSource), FilterError> {
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
            match read_artifact(file) {
                // SAFETY: the bytes are exactly what this engine (same
                // compatibility hash) wrote for the wasm with this SHA-256,
                // checked against the artifact's own SHA-256 trailer just now,
                // so a truncated or corrupted file never reaches `deserialize`.
                Ok(bytes) => match unsafe { Component::deserialize(&self.engine, &bytes) } {
                    Ok(component) => return Ok((component, LoadSource::Cache)),
                    Err(e) => tracing::warn!(
                        file = %file.display(),
                        "stale filter artifact, recompiling: {e}"
                    ),
                },
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    "filter artifact fails its check, recompiling: {e}"
                ),
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

/// The interfaces [`add_sandbox_wasi`] and the WIT bindings link, by name without version:
/// the linker matches any compatible 0.2.x version a guest asks for.
const LINKED_INTERFACES: &[&str] = &[
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Defines a trapping stub for every function (and a placeholder for every resource) of
/// each imported interface this host does not link: filesystem, sockets, unknown
/// interfaces. Unlike wasmtime's `define_unknown_imports_as_traps`, which matches names
/// exactly, an interface linked at another compatible version (a guest's
/// `wasi:random/insecure-seed@0.2.6` against the host's 0.2.12) is left to the linker's
/// version matching instead of being shadowed by a stub.
fn stub_unlinked_imports(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;

    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let base = name.split('@').next().unwrap_or(name);
        if base.starts_with("siphost:filter/") || LINKED_INTERFACES.contains(&base) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        let mut stubs = linker.instance(name)?;
        for (item, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let full = format!("{name}#{item}");
                    stubs.func_new(item, move |_, _, _, _| {
                        Err(wasmtime::format_err!("{full}: not available to filters"))
                    })?;
                }
                ComponentItem::Resource(_) => {
                    stubs.resource(item, ResourceType::host::<()>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
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
        self.ticker.stop();
    }
}

/// Reads a cached artifact and checks it against its SHA-256 trailer.
fn read_artifact(file: &Path) -> Result<Vec<u8>, ArtifactError> {
    let mut bytes = std::fs::read(file)?;
    if bytes.len() < TRAILER {
        return Err(ArtifactError::Truncated);
    }
    let body = bytes.len() - TRAILER;
    if Sha256::digest(&bytes[..body]).as_slice() != &bytes[body..] {
        return Err(ArtifactError::HashMismatch);
    }
    bytes.truncate(body);
    Ok(bytes)
}

/// Why a cached artifact is not used.
#[derive(Debug, thiserror::Error)]
enum ArtifactError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("shorter than its checksum")]
    Truncated,
    #[error("its SHA-256 does not match its content")]
    HashMismatch,
}

/// Writes the artifact with its SHA-256 as a trailer, through a temporary file
/// and a rename; the directory is created private to the user.
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
    let mut checked = Vec::with_capacity(artifact.len() + TRAILER);
    checked.extend_from_slice(artifact);
    checked.extend_from_slice(&Sha256::digest(artifact));
    std::fs::write(&tmp, &checked)?;
    std::fs::rename(&tmp, file)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
