//! `outrigger-routes`: arguments (clap) and the commands, writing to any `Write` so tests and
//! `main` share them. `main` only maps the outcome to an exit code.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{LoadError, ProxyError, error_chain};
use crate::explain::{self, RequestError};
use crate::names::{ANALYZE_FOUND_EXIT_CODE, INPUT_ERROR_EXIT_CODE};
use crate::resolve::{ProxyId, resolve};
use crate::snapshot::Snapshot;
use crate::validate::{Finding, Severity};

/// Istio's routing API resolved for one proxy, explained and analysed, offline.
#[derive(Debug, Parser)]
#[command(name = "outrigger-routes", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the ProxyConfig of one pod (the file `outrigger-proxy run --config-file` loads).
    Build {
        /// Files or directories of multi-document YAML; `-` for stdin.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The pod, NAMESPACE/POD.
        #[arg(long = "for", value_name = "NAMESPACE/POD")]
        proxy: String,
        /// Output file; `-` for stdout.
        #[arg(short = 'o', long = "output", default_value = "-")]
        output: PathBuf,
        /// json (default) or yaml; the default follows the extension of the output file.
        #[arg(long)]
        format: Option<Format>,
    },
    /// Explain what the proxy of a pod does with one request.
    Explain {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The pod sending the request, NAMESPACE/POD.
        #[arg(long = "from", value_name = "NAMESPACE/POD")]
        proxy: String,
        /// A request header, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// text (default) or json.
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: ExplainFormat,
        /// 'METHOD URL', e.g. 'GET http://catalog:8080/items'.
        request: String,
    },
    /// Print validation errors and configuration mistakes; exit 3 when there are any.
    Analyze {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// text (default) or json.
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: ExplainFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

/// Why a command failed. All are input errors (exit code 2) but `Write`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read the inputs")]
    Load(#[from] LoadError),
    #[error("invalid resources (Istio would refuse them):\n{}", .0.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Finding>),
    #[error("cannot choose the proxy")]
    Proxy(#[from] ProxyError),
    #[error("cannot read the request")]
    Request(#[from] RequestError),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Write { .. } => 1,
            _ => INPUT_ERROR_EXIT_CODE,
        }
    }
}

fn load_valid(files: &[PathBuf]) -> Result<Snapshot, CliError> {
    let snapshot = Snapshot::load(files)?;
    let errors: Vec<Finding> = crate::analyze::analyze(&snapshot)
        .into_iter()
        .filter(|f| f.severity == Severity::Error && f.code == "IST0106")
        .collect();
    if !errors.is_empty() {
        return Err(CliError::Invalid(errors));
    }
    Ok(snapshot)
}

fn write_error(path: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Write {
        path: path.to_owned(),
        source,
    }
}

/// Runs a command; returns the exit code (0, or 3 for `analyze` with findings).
pub fn run(cli: Cli, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<u8, CliError> {
    match cli.command {
        Command::Build {
            files,
            proxy,
            output,
            format,
        } => {
            let snapshot = load_valid(&files)?;
            for note in &snapshot.notes {
                let _ = writeln!(stderr, "note: {note}");
            }
            let id = ProxyId::from_pod(&snapshot, &proxy)?;
            let config = resolve(&snapshot, &id);
            let yaml = match format {
                Some(format) => format == Format::Yaml,
                None => output
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml"),
            };
            let mut text = if yaml {
                serde_yaml_ng::to_string(&config).expect("a ProxyConfig always serializes")
            } else {
                serde_json::to_string_pretty(&config).expect("a ProxyConfig always serializes")
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let path = output.display().to_string();
            if path == "-" {
                stdout
                    .write_all(text.as_bytes())
                    .map_err(write_error("stdout"))?;
            } else {
                std::fs::write(&output, text).map_err(write_error(&path))?;
            }
            Ok(0)
        }
        Command::Explain {
            files,
            proxy,
            headers,
            output,
            request,
        } => {
            let snapshot = load_valid(&files)?;
            let id = ProxyId::from_pod(&snapshot, &proxy)?;
            let parsed = explain::parse_request(&request, &headers)?;
            let config = resolve(&snapshot, &id);
            let answer = explain::explain(&config, &parsed);
            let text = match output {
                ExplainFormat::Json => {
                    let mut text = serde_json::to_string_pretty(&answer)
                        .expect("an Explanation always serializes");
                    text.push('\n');
                    text
                }
                ExplainFormat::Text => explain::render_text(&answer),
            };
            stdout
                .write_all(text.as_bytes())
                .map_err(write_error("stdout"))?;
            Ok(0)
        }
        Command::Analyze { files, output } => {
            let snapshot = Snapshot::load(&files)?;
            let findings = crate::analyze::analyze(&snapshot);
            let text = match output {
                ExplainFormat::Json => {
                    let mut text =
                        serde_json::to_string_pretty(&findings).expect("findings always serialize");
                    text.push('\n');
                    text
                }
                ExplainFormat::Text if findings.is_empty() => {
                    "✔ No validation issues found when analyzing the inputs.\n".to_owned()
                }
                ExplainFormat::Text => findings.iter().map(|f| format!("{f}\n")).collect(),
            };
            stdout
                .write_all(text.as_bytes())
                .map_err(write_error("stdout"))?;
            Ok(if findings.is_empty() {
                0
            } else {
                ANALYZE_FOUND_EXIT_CODE
            })
        }
    }
}

/// The message `main` prints for an error.
pub fn describe(err: &CliError) -> String {
    format!("outrigger-routes: {}", error_chain(err))
}
