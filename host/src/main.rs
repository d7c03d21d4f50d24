//! The `siphost` binary: `run` the proxy, `check` a configuration, or call the admin
//! endpoint with `rpc`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use siphost::config::Config;
use siphost::proxy::hooks::{FilterHooks, NoFilters};
use siphost::proxy::{Proxy, ProxyHandle};
use siphost::transport::Transport;

#[derive(Parser)]
#[command(
    name = "siphost",
    version,
    about = "A SIP proxy host running WebAssembly filters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file: prints "config ok" or the first error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Call a JSON-RPC method on the admin endpoint (parameters are JSON, or strings).
    Rpc {
        /// Admin endpoint address.
        #[arg(long, default_value = "127.0.0.1:5081")]
        admin: SocketAddr,
        /// Print the result as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Bearer token ([admin].token); default: the SIPHOST_ADMIN_TOKEN environment variable.
        #[arg(long)]
        token: Option<String>,
        method: String,
        params: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("config error: {e}");
                    return ExitCode::from(2);
                }
            };
            siphost::admin::logging::init(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.process.worker_threads)
                .enable_all()
                .build();
            let result = runtime
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(run(config)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("siphost: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rpc {
            admin,
            json,
            token,
            method,
            params,
        } => {
            let token = token.or_else(|| std::env::var("SIPHOST_ADMIN_TOKEN").ok());
            let params = serde_json::Value::Array(
                params
                    .iter()
                    .map(|p| {
                        serde_json::from_str(p)
                            .unwrap_or_else(|_| serde_json::Value::String(p.clone()))
                    })
                    .collect(),
            );
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| {
                    rt.block_on(siphost::admin::client::call_with_token(
                        admin,
                        token.as_deref(),
                        &method,
                        params,
                    ))
                });
            match result {
                Ok(value) if json => {
                    match serde_json::to_string_pretty(&value) {
                        Ok(text) => println!("{text}"),
                        Err(_) => println!("{value}"),
                    }
                    ExitCode::SUCCESS
                }
                Ok(value) => {
                    print!("{}", siphost::admin::client::render_table(&value));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("siphost rpc: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let bound = Transport::bind(&config)
        .await
        .context("cannot bind the [[listen]] sockets")?;
    let (handle, commands) = ProxyHandle::channel();

    // Filter hooks: the tenants' sandboxed filters (their requests go out through the
    // proxy handle), or none without tenants.
    let mut router = siphost::admin::Router::new();
    let mut runtime_for_admin = None;
    let hooks: Arc<dyn FilterHooks> = if config.tenant.is_empty() {
        Arc::new(NoFilters)
    } else {
        let options = siphost::runtime::EngineOptions::default();
        let runtime = siphost::runtime::Runtime::new(&config.tenant, options)
            .context("cannot load the tenants' filters")?;
        runtime.set_request_sender(Arc::new(handle.clone()));
        runtime
            .start_registrations(&config.tenant)
            .await
            .context("cannot start the tenants' remote registrations")?;
        router = router.with_runtime(runtime.clone());
        runtime_for_admin = Some(runtime.clone());
        runtime
    };
    // Metrics: counted at the hook door, read from the proxy and tenants at scrape time.
    let runtime_for_flush = runtime_for_admin.clone();
    let metrics = siphost::admin::metrics::HostMetrics::new(
        handle.clone(),
        runtime_for_admin.clone(),
        &config.tenant,
    );
    if let Some(runtime) = runtime_for_admin
        && config.tenant.iter().any(|t| t.registrations.is_some())
    {
        metrics.set_registration_source(Arc::new(
            siphost::admin::registrations::RuntimeRegistrations(runtime),
        ));
    }
    let hooks = metrics.meter_hooks(hooks);
    siphost::admin::methods::register(&mut router, metrics.clone());
    if let Some(address) = config.admin.listen {
        siphost::admin::start(address, config.admin.token.clone(), router, metrics)
            .await
            .with_context(|| format!("cannot bind the admin endpoint {address}"))?;
    }

    for listener in bound.transport.listeners() {
        tracing::info!(transport = %listener.kind, address = %listener.local, "listening");
    }
    let credentials = siphost::access::table::CredentialTables::open(&config).await?;
    let proxy = Proxy::with_credentials(&config, bound, hooks, commands, &credentials)?;
    tokio::spawn(stop_on_signal(
        handle.clone(),
        Duration::from_millis(config.shutdown.grace_ms),
    ));
    tracing::info!("siphost ready");
    // On a worker thread, not the main thread: the worker that polls the sockets then runs
    // the core itself instead of waking another thread for every datagram.
    tokio::spawn(proxy.run())
        .await
        .context("the proxy core stopped abnormally")?;
    // A clean stop persists the registrations' last second of live state too.
    if let Some(runtime) = runtime_for_flush {
        runtime.flush_registrations().await;
    }
    Ok(())
}

/// SIGTERM or SIGINT: stop taking new transactions and let in-flight ones finish.
async fn stop_on_signal(handle: ProxyHandle, grace: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    handle.shutdown(grace).await;
}
