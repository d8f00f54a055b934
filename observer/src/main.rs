//! The `observer` binary: reads the command line and runs the command through the library.

use std::process::ExitCode;

use clap::Parser;
use observer::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The observer's own logs go to stderr; events go to the sink, never mixed.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("OBSERVER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Verify(args) => match observer::cli::verify::run(&args) {
            Ok((ok, report)) => {
                print!("{report}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("observer: {e}");
                ExitCode::from(2)
            }
        },
        Command::SealInit(args) => match observer::cli::seal_init::seal_init(&args) {
            Ok(key) => {
                println!("{}", *key);
                eprintln!(
                    "observer: sealing key made; lines are sealed from the next `observer run` \
                     on. Keep the verification key above OFF this host (it proves every \
                     epoch's seals): `observer verify --verify-key FILE LOG...`"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("observer: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Replay(args) => match observer::recording::replay::replay(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("observer: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Fingerprint(args) => match observer::cli::fingerprint::fingerprint_stdin(&args) {
            Ok(fp) => {
                println!("{fp}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("observer: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Run(args) => {
            let cfg = match args.validate() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("observer: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("observer: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(observer::run::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("observer: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
