//! `outrigger-routes`: parses the arguments, runs the command, maps the outcome to an exit code
//! (0 ok, 2 usage or input error, 3 `analyze` found something, 1 cannot write).

use std::process::ExitCode;

use clap::Parser as _;
use outrigger_mesh::cli::{self, Cli};
use outrigger_mesh::names::INPUT_ERROR_EXIT_CODE;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(INPUT_ERROR_EXIT_CODE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli::run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}", cli::describe(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
