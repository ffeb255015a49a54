//! The `wasmpbx` command line. Errors end as one line on stderr and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use wasmpbx::config::Config;
use wasmpbx::flip::FlipKind;
use wasmpbx::script::{Limits, ScriptEngine, ScriptHost};
use wasmpbx::simulate::{self, FlipScenario, Scenario};

// Every SIP message is parsed into and printed from many small strings: glibc's
// allocator was ~17 % of the host's CPU at 1 500 calls/s (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wasmpbx",
    version,
    about = "A WebAssembly-scriptable telephony platform"
)]
struct Cli {
    /// How log lines (on stderr) are written: text for people, JSON (one object per
    /// line, fields at the top level, a call's lines with `"span": {"name": "call",
    /// "session": …}`) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (on the embedded default configuration without --config).
    Run {
        /// The config file (TOML); without it, the embedded default on loopback.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a config that works on the LAN (detected address, generated admin token and
    /// demo passwords) and say what to do next.
    Init {
        /// The folder for the config; its paths (scripts, store, recordings) point here too.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The address to listen on and put in SDP; default: this machine's primary one.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        /// The SIP port (UDP and TCP).
        #[arg(long, default_value_t = 5060)]
        sip_port: u16,
        /// The HTTP port (admin API, /metrics, /phone, /ws).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Replace an existing wasmpbx.toml.
        #[arg(long)]
        force: bool,
    },
    /// Check a config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check and try out scripts.
    Script {
        #[command(subcommand)]
        command: ScriptCommand,
    },
    /// Call records.
    Cdr {
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// What a location's shadow script would have done, compared with its script.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
    /// The audit log of admin toggles (key-value changes and expiries).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum ShadowCommand {
    /// Events compared, agreements, divergences grouped by (serving → shadow actions)
    /// with example calls, shadow faults, and the counts by hour; per pair of script
    /// versions, the newest first.
    Report {
        /// The location.
        location: String,
        /// Only events at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_since)]
        since: Option<jiff::Timestamp>,
        /// Print JSON (as `GET /api/shadow/{location}` gives the pairs).
        #[arg(long)]
        json: bool,
        /// The config whose store to read; default: the embedded default's.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recent changes, newest first: who, what, the value before and after, the expiry;
    /// an aligned table, JSON (as `GET /api/audit` gives it) or CSV.
    List {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV, a header first.
        #[arg(long)]
        csv: bool,
        /// The config whose store to read; default: the embedded default's.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Read FILE as `run` would (certificates too) and print what it sets up, or the
    /// one-line error `run` would stop with.
    Check {
        /// The config file (TOML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CdrCommand {
    /// Recent calls, newest first: an aligned table (each call's flips under it), JSON or
    /// CSV, filtered like `GET /api/cdrs`.
    List(CdrListArgs),
}

#[derive(clap::Args)]
struct CdrListArgs {
    /// How many records.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print the records as JSON (as the API gives them).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV, a header first.
    #[arg(long)]
    csv: bool,
    /// Instead of records: why callers called — calls by location, hour and the
    /// intents engines posted for them.
    #[arg(long, conflicts_with = "csv")]
    intents: bool,
    /// Calls that started at or after this time (RFC 3339); with --intents, default:
    /// the last 24 hours.
    #[arg(long, value_parser = parse_since)]
    since: Option<jiff::Timestamp>,
    /// Calls that started before this time (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    until: Option<jiff::Timestamp>,
    /// Calls to this location's flip number.
    #[arg(long)]
    location: Option<String>,
    /// Calls from this number or extension (exactly).
    #[arg(long)]
    caller: Option<String>,
    /// Calls that ended so.
    #[arg(long, value_parser = ["answered", "abandoned", "failed"])]
    disposition: Option<String>,
    /// Only calls with a flip (--flipped), or without (--flipped false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    flipped: Option<bool>,
    /// The next page: the records after this session (the last one listed before).
    #[arg(long)]
    after: Option<String>,
    /// The config whose store to read; default: the embedded default's.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ScriptCommand {
    /// Validate a component against the WIT worlds and print what it exports.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON (name, hash, size, exports, WIT version, compile time).
        #[arg(long)]
        json: bool,
    },
    /// Run one call's routing decisions (or, with --flip, one flip decision) offline.
    Simulate(SimulateArgs),
    /// Write a minimal script project that builds on its own (a router forwarding to the
    /// location's return_number, or a flip policy), with its build recipe.
    New {
        /// The script's name (a letter, then letters, digits, '-' and '_'); the build
        /// writes NAME.wasm.
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: LangArg,
        /// What it exports.
        #[arg(long, value_enum, default_value_t = WorldArg::Router)]
        world: WorldArg,
        /// The project folder (created; must be empty if it exists); default: ./NAME.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the wasmpbx-guest SDK of a wasmpbx checkout (its guest-sdk folder);
        /// default: this build's checkout if it is still there, else the published crate.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Run recorded calls' decisions again, offline, in the world each script saw: on the
    /// versions that decided (they must come out the same), or on another script (what
    /// would have changed).
    Replay(ReplayArgs),
    /// Check a component, put it into the watched folder whole, and wait for the running
    /// server to load it; exits non-zero with the load error.
    Deploy {
        /// The component (.wasm).
        file: PathBuf,
        /// The watched folder; default: the config's scripts.dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The name to serve it by; default: the file's stem.
        #[arg(long)]
        name: Option<String>,
        /// The running server's config (its scripts folder, HTTP address and token);
        /// default: the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to wait for the server's load result, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// One call: its session id (as `cdr list` and the API name it).
    #[arg(long, conflicts_with_all = ["since", "location"])]
    cdr: Option<String>,
    /// Calls with decisions at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    since: Option<jiff::Timestamp>,
    /// Calls of this location.
    #[arg(long)]
    location: Option<String>,
    /// At most this many calls (the oldest first).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Run this component instead of the versions that decided.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Print JSON: the summary and every call step by step.
    #[arg(long)]
    json: bool,
    /// The config whose store (and limits, vars and users) to use; default: the
    /// embedded default's.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    #[value(alias = "javascript")]
    Js,
    #[value(alias = "py")]
    Python,
    C,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorldArg {
    Router,
    FlipPolicy,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The caller's number or extension.
    #[arg(long)]
    from: Option<String>,
    /// The dialled number: a location's flip number selects that location.
    #[arg(long)]
    to: Option<String>,
    /// The time of the call (RFC 3339, e.g. 2026-11-23T09:30:00+11:00); default now.
    #[arg(long)]
    at: Option<String>,
    /// Keys the caller presses; ',' separates the answers to successive gathers.
    #[arg(long, default_value = "")]
    digits: String,
    /// Config file for locations, users and limits; default: the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A key-value entry of the location, e.g. --kv override=closed (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    kv: Vec<String>,
    /// Make the next forward fail with this SIP status (repeatable).
    #[arg(long, value_name = "STATUS")]
    fail_forward: Vec<u16>,
    /// An engine's event, e.g. --event intent=billing, delivered while the call next
    /// waits for the caller (a prompt, speech or gather) (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    event: Vec<String>,
    /// Print JSON instead of a transcript.
    #[arg(long)]
    json: bool,
    /// Simulate a flip request instead of a call.
    #[arg(long, value_enum)]
    flip: Option<FlipArg>,
    /// Flip: the user whose call it is.
    #[arg(long)]
    user: Option<String>,
    /// Flip: the device asking (the new device for a pull, the current one for a push).
    #[arg(long)]
    device: Option<String>,
    /// Flip: the device in the call (default: --device for a push, "desk" for a pull).
    #[arg(long)]
    current_device: Option<String>,
    /// Flip: another registered device of the user (repeatable).
    #[arg(long)]
    other_device: Vec<String>,
    /// Flip: the call is an emergency call.
    #[arg(long)]
    emergency: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FlipArg {
    Push,
    Pull,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Run { .. });
    init_logging(quiet, cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run(config.as_deref()),
        Command::Init {
            dir,
            address,
            sip_port,
            http_port,
            force,
        } => init(wasmpbx::setup::InitOptions {
            dir,
            address,
            sip_port,
            http_port,
            force,
        }),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => wasmpbx::setup::check(&file).map(|summary| {
            print!("{summary}");
            ExitCode::SUCCESS
        }),
        Command::Script {
            command: ScriptCommand::Check { file, json },
        } => check(&file, json),
        Command::Script {
            command: ScriptCommand::Simulate(args),
        } => simulate(args),
        Command::Script {
            command: ScriptCommand::Replay(args),
        } => replay(args),
        Command::Script {
            command:
                ScriptCommand::New {
                    name,
                    lang,
                    world,
                    dir,
                    sdk_path,
                },
        } => new_script(name, lang, world, dir, sdk_path),
        Command::Script {
            command:
                ScriptCommand::Deploy {
                    file,
                    dir,
                    name,
                    config,
                    wait,
                },
        } => deploy(
            wasmpbx::deploy::DeployOptions {
                file,
                dir,
                name,
                wait: std::time::Duration::from_secs(wait),
            },
            config.as_deref(),
        ),
        Command::Cdr {
            command: CdrCommand::List(args),
        } => match args.intents {
            true => intents_list(args.since, args.json, args.config.as_deref()),
            false => cdr_list(args),
        },
        Command::Shadow {
            command:
                ShadowCommand::Report {
                    location,
                    since,
                    json,
                    config,
                },
        } => shadow_report(&location, since, json, config.as_deref()),
        Command::Audit {
            command:
                AuditCommand::List {
                    limit,
                    json,
                    csv,
                    config,
                },
        } => audit_list(limit, json, csv, config.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool, format: LogFormat) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // A call's lines carry its span as `"span": {"name": "call", "session": …}`; calls
        // do not nest, so the list of spans adds nothing.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// How long an idle thread of the blocking pool (script runs) is kept. Tokio's 10 s let
/// a lull of a few seconds end them, and the next burst paid for new threads and their
/// allocator heaps (page faults): measured at several percent of the host's CPU.
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(600);

fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(wasmpbx::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn new_script(
    name: String,
    lang: LangArg,
    world: WorldArg,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use wasmpbx::scaffold::{Language, NewScript, Sdk, World, create};
    let language = match lang {
        LangArg::Rust => Language::Rust,
        LangArg::Js => Language::JavaScript,
        LangArg::Python => Language::Python,
        LangArg::C => Language::C,
    };
    let world = match world {
        WorldArg::Router => World::Router,
        WorldArg::FlipPolicy => World::FlipPolicy,
    };
    let sdk = match sdk_path {
        Some(path) => Sdk::Path(
            std::path::absolute(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
        ),
        None => Sdk::default_for_this_build(),
    };
    let request = NewScript {
        name,
        language,
        world,
        dir,
        sdk: sdk.clone(),
    };
    let dir = create(&request)?;
    println!("created {} ({language:?}, {world:?})", dir.display());
    if language == Language::Rust {
        match sdk {
            Sdk::Path(path) => println!("the SDK: {}", path.display()),
            Sdk::Version(version) => println!(
                "the SDK: wasmpbx-guest {version} from crates.io (--sdk-path for a checkout's guest-sdk)"
            ),
        }
    }
    let wasm = format!("{}.wasm", request.name);
    println!("next:");
    println!("  cd {} && ./build.sh", dir.display());
    println!("  wasmpbx script check {wasm}");
    println!("  wasmpbx script deploy {wasm} --config YOUR_CONFIG");
    Ok(ExitCode::SUCCESS)
}

fn deploy(
    options: wasmpbx::deploy::DeployOptions,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    match wasmpbx::deploy::deploy(&options, &config)? {
        wasmpbx::deploy::Deployed::Loaded { name, hash } => {
            println!(
                "{name}: loaded by the server (version {})",
                &hash[..12.min(hash.len())]
            );
        }
        wasmpbx::deploy::Deployed::Unconfirmed { name, path, why } => {
            println!("{name}: put into {} (not confirmed: {why})", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init(options: wasmpbx::setup::InitOptions) -> anyhow::Result<ExitCode> {
    let written = wasmpbx::setup::init(&options)?;
    print!("{}", written.next_steps());
    Ok(ExitCode::SUCCESS)
}

fn check(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::embedded_default();
    // The user's cache, so checking a big guest again (JavaScript, Python) is quick.
    let engine = ScriptEngine::new(Limits::default(), user_cache_dir().as_deref())?;
    let host = ScriptHost::new(engine, simulate::offline_services(&config));
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("script");
    let script = host
        .engine
        .load(name, &bytes, &host.services)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if json {
        let out = serde_json::json!({
            "file": file, "name": script.name, "hash": script.hash, "size": script.size,
            "exports": script.exports.names(), "wit": script.wit_version, "compile_ms": script.compile_time.as_secs_f64() * 1000.0,
        });
        println!("{out}");
    } else {
        println!("{}: ok", file.display());
        println!("  name     {}", script.name);
        println!("  hash     {}", script.hash);
        println!("  size     {} bytes", script.size);
        for export in script.exports.names() {
            println!("  exports  wasmpbx:script/{export}@{}", script.wit_version);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `$XDG_CACHE_HOME/wasmpbx`, else `~/.cache/wasmpbx`; none without either.
fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("wasmpbx"))
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let at = match &args.at {
        Some(at) => parse_instant(at)?,
        None => wasmpbx::clock::Clock::now(&wasmpbx::clock::SystemClock),
    };
    if let Some(kind) = args.flip {
        let user = args.user.context("--flip needs --user")?;
        let device = args.device.context("--flip needs --device")?;
        let kind = match kind {
            FlipArg::Push => FlipKind::Push,
            FlipArg::Pull => FlipKind::Pull,
        };
        let current_device = args.current_device.unwrap_or_else(|| match kind {
            FlipKind::Push => device.clone(),
            FlipKind::Pull => "desk".into(),
        });
        let scenario = FlipScenario {
            user,
            kind,
            requesting_device: device,
            current_device,
            devices: args.other_device,
            emergency: args.emergency,
            at,
        };
        let result = simulate::simulate_flip(&args.file, &config, &scenario)?;
        if args.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            print!("{}", result.render());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(from), Some(to)) = (args.from, args.to) else {
        bail!("simulate needs --from and --to (or --flip for a flip decision)");
    };
    let pairs = |flag: &str, entries: &[String]| {
        entries
            .iter()
            .map(|entry| {
                entry
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--{flag} {entry:?}: expected NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let kv = pairs("kv", &args.kv)?;
    let events = pairs("event", &args.event)?;
    let scenario = Scenario {
        from,
        to,
        at,
        digits: args.digits,
        fail_forwards: args.fail_forward,
        kv,
        events,
    };
    let result = simulate::simulate_call(&args.file, &config, &scenario)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", result.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The store of the config at `config` (default: the embedded default's).
fn open_store(config: Option<&Path>) -> anyhow::Result<Arc<dyn wasmpbx::store::Store>> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let path = &config.store.path;
    if config.store.url.is_none() && !path.exists() {
        bail!(
            "store.path: {} does not exist (has the server run?)",
            path.display()
        );
    }
    wasmpbx::store::open(&config).map_err(|e| anyhow::anyhow!(e))
}

fn parse_since(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse()
        .map_err(|e| format!("not an RFC 3339 time with an offset: {e}"))
}

fn intents_list(
    since: Option<jiff::Timestamp>,
    json: bool,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let now = wasmpbx::clock::Clock::now(&wasmpbx::clock::SystemClock);
    let since = since.unwrap_or(now - jiff::SignedDuration::from_hours(24));
    let counts = wasmpbx::store::CdrStore::intents(store.as_ref(), None, since)?;
    if json {
        println!("{}", serde_json::to_value(&counts)?);
        return Ok(ExitCode::SUCCESS);
    }
    if counts.is_empty() {
        println!("no intents on calls since {since}");
    }
    for count in counts {
        println!(
            "{}  {}  {}  {} call{}",
            count.hour,
            count.location,
            count.intent,
            count.calls,
            if count.calls == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cdr_list(args: CdrListArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(args.config.as_deref())?;
    let query = wasmpbx::store::CdrQuery {
        limit: args.limit,
        since: args.since,
        until: args.until,
        location: args.location,
        caller: args.caller,
        disposition: args.disposition,
        flipped: args.flipped,
        after: args.after,
    };
    if let Some(after) = &query.after
        && wasmpbx::store::CdrStore::cdr(store.as_ref(), after)?.is_none()
    {
        bail!("--after {after}: no such record");
    }
    let records = wasmpbx::store::CdrStore::cdrs(store.as_ref(), &query)?;
    if args.json {
        println!("{}", serde_json::Value::Array(records));
    } else if args.csv {
        print!("{}", wasmpbx::records::csv(&records));
    } else {
        print!("{}", wasmpbx::records::table(&records));
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let store = open_store(args.config.as_deref())?;
    let options = wasmpbx::replay::ReplayOptions {
        cdr: args.cdr,
        since: args.since,
        location: args.location,
        limit: args.limit,
        script: args.script,
    };
    let replay = wasmpbx::replay::replay(&options, &config, store)?;
    if args.json {
        println!("{}", serde_json::to_string(&replay)?);
    } else {
        print!("{}", wasmpbx::replay::text(&replay));
    }
    // On the versions that decided, a difference means the recording missed something.
    if options.script.is_none() && replay.changed > 0 {
        eprintln!(
            "error: {} of {} decisions did not come out the same on the version that made them",
            replay.changed, replay.decisions
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn shadow_report(
    location: &str,
    since: Option<jiff::Timestamp>,
    json: bool,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let results = wasmpbx::store::ShadowStore::shadow_results(store.as_ref(), location, since)?;
    let pairs = wasmpbx::shadow::report(&results);
    if json {
        println!("{}", serde_json::to_string(&pairs)?);
    } else {
        print!("{}", wasmpbx::shadow::text(location, &pairs));
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_list(
    limit: usize,
    json: bool,
    csv: bool,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let entries = wasmpbx::store::KvStore::audit_log(store.as_ref(), limit)?;
    if json {
        println!("{}", serde_json::to_string(&entries)?);
    } else if csv {
        print!("{}", wasmpbx::records::audit_csv(&entries));
    } else {
        print!("{}", wasmpbx::records::audit_table(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 with an offset (`2026-11-23T09:30:00+11:00` or `…Z`).
fn parse_instant(text: &str) -> anyhow::Result<jiff::Timestamp> {
    text.parse::<jiff::Timestamp>()
        .map_err(|e| anyhow::anyhow!("--at {text:?}: not an RFC 3339 time with an offset: {e}"))
}
