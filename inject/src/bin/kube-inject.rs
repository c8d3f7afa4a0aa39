//! `kube-inject`: injects the sidecar into Kubernetes manifests offline, with the same engine as
//! the webhook; `kube-inject check` explains, per workload, whether and why it would be injected.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use outrigger_inject::config_source::{ConfigPaths, load_config};
use outrigger_inject::manifest::{self, Options};
use outrigger_runtime::logging::{self, LogFormat, Logging};

#[derive(Debug, Parser)]
#[command(
    name = "kube-inject",
    version,
    about = "Inject the Outrigger sidecar into Kubernetes manifests offline"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
    /// Write the result here instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report, per workload, whether it would be injected, with which templates and why.
    Check {
        #[command(flatten)]
        common: Common,
        /// Output format.
        #[arg(long = "output", short = 'o', value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
struct Common {
    /// Manifest file to read (repeatable; `-` for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Directory with config.yaml, values.yaml and mesh.yaml (absent files: embedded defaults).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// values.yaml to use instead of the directory's.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// mesh.yaml to use instead of the directory's.
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// Revision written to istio.io/rev.
    #[arg(long)]
    revision: Option<String>,
    /// Put the proxy in initContainers as a native sidecar (`--native-sidecars=false` forces classic).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    native_sidecars: Option<bool>,
    /// Log format on stderr (stdout carries the YAML): text or json (filter: RUST_LOG, default warn).
    #[arg(long, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Some(Command::Check { common, .. }) => common.log_format,
        None => cli.common.log_format,
    };
    let directives = std::env::var(logging::FILTER_ENV).ok();
    logging::init(Logging {
        format,
        directives: directives.as_deref(),
        default: "warn",
        file: None,
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-inject: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Check { common, format }) => {
            let (text, config, opts) = prepare(&common)?;
            let reports = manifest::check_stream(&text, &opts, &config)?;
            let rendered = match format {
                Format::Table => manifest::render_table(&reports),
                Format::Json => manifest::render_json(&reports) + "\n",
            };
            write_out(None, &rendered)?;
            // The report is printed either way; scripts and CI gates still see the refusal.
            let refused = reports.iter().filter(|r| r.verdict == "error").count();
            if refused > 0 {
                bail!("{refused} workload(s) would be refused by the injector (see ERROR above)");
            }
            Ok(())
        }
        None => {
            let (text, config, opts) = prepare(&cli.common)?;
            let injected = manifest::inject_stream(&text, &opts, &config)?;
            for note in &injected.skipped {
                eprintln!("{note}");
            }
            write_out(cli.output.as_ref(), &injected.output)
        }
    }
}

fn prepare(common: &Common) -> Result<(String, outrigger_inject::Config, Options)> {
    if common.files.is_empty() {
        bail!("no input: give one or more manifests with -f FILE (or -f - for stdin)");
    }
    let config = load_config(&ConfigPaths {
        dir: common.config_dir.clone(),
        values: common.values.clone(),
        mesh: common.mesh.clone(),
    })
    .context("loading the injector configuration")?;
    let mut text = String::new();
    for file in &common.files {
        let piece = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        // A byte order mark starts a file, not the stream they are joined into (kubectl
        // accepts one in each file it reads).
        let piece = piece.strip_prefix('\u{feff}').unwrap_or(&piece);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        if !text.is_empty() && !piece.starts_with("---") {
            text.push_str("---\n");
        }
        text.push_str(piece);
    }
    let opts = Options {
        revision: common.revision.clone(),
        native_sidecars: common.native_sidecars,
    };
    Ok((text, config, opts))
}

fn write_out(path: Option<&PathBuf>, text: &str) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing stdout")
        }
    }
}
