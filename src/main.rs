//! The `signpost` binary: CLI parsing, logging setup and exit codes over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use signpost::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "signpost",
    version,
    about = "Service discovery with a DNS interface"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (DNS and HTTP) on the configured store (embedded by default).
    Serve {
        /// Config file [default: config/signpost.toml, built-in defaults if it is absent]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// DNS address, UDP and TCP (repeatable); replaces dns.listen
        #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
        dns_listen: Vec<SocketAddr>,
        /// HTTP API address; replaces http.listen
        #[arg(long = "http-listen", value_name = "ADDR:PORT")]
        http_listen: Option<SocketAddr>,
        /// Folder of the embedded store; replaces registry.data_dir
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Log format on stderr; replaces log.format
        #[arg(long = "log-format", value_enum)]
        log_format: Option<LogFormat>,
        /// This replica's member name in etcd; replaces registry.etcd.name
        #[arg(long = "node-name", value_name = "NAME")]
        node_name: Option<String>,
    },
    /// Validate a config file and its zone files, then exit.
    CheckConfig {
        /// The config file to check
        file: PathBuf,
    },
    /// Write every registration of a store to stdout as JSON lines (the server must be stopped).
    Export {
        /// Config file [default: config/signpost.toml, built-in defaults if it is absent]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Folder of the embedded store; replaces registry.data_dir
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Register every instance of a JSON-lines file (from `export`) through the configured
    /// store (the server must be stopped).
    Import {
        /// The JSON-lines file (`-` for stdin)
        file: PathBuf,
        /// Config file [default: config/signpost.toml, built-in defaults if it is absent]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Folder of the embedded store; replaces registry.data_dir
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The config of `--config`, else `config/signpost.toml` when present, else the defaults.
fn load_config(config: &Option<PathBuf>) -> Result<Config, ExitCode> {
    match config {
        Some(p) => Config::load(p).map_err(fail),
        None => {
            let p = std::path::Path::new(config::DEFAULT_PATH);
            if p.exists() {
                Config::load(p).map_err(fail)
            } else {
                Ok(Config::default())
            }
        }
    }
}

/// The store a stopped server would open (`--config`, `--data-dir` as for `serve`), with a
/// runtime to drive it: `export` and `import` work on it directly. An embedded store must
/// exist already for `export` (`create` false), so a typo does not export an empty registry.
fn open_store(
    config: &Option<PathBuf>,
    data_dir: Option<PathBuf>,
    create: bool,
) -> Result<
    (
        std::sync::Arc<dyn signpost::store::Backend>,
        tokio::runtime::Runtime,
    ),
    ExitCode,
> {
    let mut cfg = load_config(config)?;
    if let Some(d) = data_dir {
        cfg.registry.data_dir = d;
    }
    let rt = tokio::runtime::Runtime::new().map_err(fail)?;
    if cfg.registry.backend == signpost::config::Backend::Etcd {
        return match rt.block_on(signpost::open_store(&cfg, false)) {
            Ok(s) => Ok((s, rt)),
            Err(e) => Err(fail(e)),
        };
    }
    let dir = &cfg.registry.data_dir;
    if !create && !dir.join("signpost.redb").exists() {
        return Err(fail(format!("no signpost store in {}", dir.display())));
    }
    match signpost::store::Embedded::open(dir) {
        Ok(s) => Ok((std::sync::Arc::new(s), rt)),
        Err(e) => Err(fail(format!(
            "{e} (a server running on this data dir holds it: stop it first)"
        ))),
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr closed: a log collector gone) is dropped.
        // By default the subscriber reports that failure with `eprintln!`, which panics on the
        // same closed stderr, killing whichever task logged: a SIGTERM handler that logged
        // never stopped the server.
        .log_internal_errors(false);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("signpost: error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match signpost::check_config(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok (domain {}, zones from {})",
                    file.display(),
                    cfg.dns.domain,
                    cfg.dns.zones_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Export { config, data_dir } => {
            let (store, rt) = match open_store(&config, data_dir, false) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match rt.block_on(signpost::store::export(store, &mut out)) {
                Ok(n) => {
                    eprintln!("signpost: exported {n} registrations");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Import {
            file,
            config,
            data_dir,
        } => {
            let mut input: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                match std::fs::File::open(&file) {
                    Ok(f) => Box::new(std::io::BufReader::new(f)),
                    Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
                }
            };
            let (store, rt) = match open_store(&config, data_dir, true) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match rt.block_on(signpost::store::import(store, &mut input)) {
                Ok(n) => {
                    eprintln!("signpost: imported {n} registrations");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{}: {e}", file.display())),
            }
        }
        Command::Serve {
            config,
            dns_listen,
            http_listen,
            data_dir,
            log_format,
            node_name,
        } => {
            let mut cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !dns_listen.is_empty() {
                cfg.dns.listen = dns_listen;
            }
            if let Some(a) = http_listen {
                cfg.http.listen = a;
            }
            if let Some(d) = data_dir {
                cfg.registry.data_dir = d;
            }
            if let Some(n) = node_name {
                cfg.registry.etcd.name = Some(n);
            }
            if let Some(f) = log_format {
                cfg.log.format = match f {
                    LogFormat::Human => signpost::config::LogFormat::Human,
                    LogFormat::Json => signpost::config::LogFormat::Json,
                };
            }
            if let Err(e) = cfg.validate() {
                return fail(e);
            }
            init_logs(cfg.log.format == signpost::config::LogFormat::Json);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            rt.block_on(async move {
                let token = CancellationToken::new();
                if let Err(e) = signpost::lifecycle::cancel_on_signals(token.clone()) {
                    return fail(e);
                }
                let running = match signpost::start(cfg, token).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                match running.wait().await {
                    Ok(()) => {
                        tracing::info!("stopped");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            })
        }
    }
}
