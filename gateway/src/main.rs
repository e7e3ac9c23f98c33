//! The `egress-gateway` binary: argument parsing and wiring only.

use std::process::ExitCode;

use clap::Parser;
use egress_gateway::args::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    egress_runtime::log::init(args.log_format);
    let result = match args.command {
        Command::Policy(command) => {
            egress_gateway::policy_cli::run(command, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Run(run) => runtime(run.worker_threads).and_then(|rt| {
            rt.block_on(egress_gateway::run(
                *run,
                egress_gateway::DevOptions::default(),
            ))
            .map(|()| 0)
        }),
        Command::Dev(dev) => {
            runtime(None).and_then(|rt| rt.block_on(egress_gateway::dev::dev(dev)).map(|()| 0))
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads.max(1));
    }
    Ok(builder.enable_all().build()?)
}
