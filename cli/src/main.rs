//! `quarry`: AutoML on tabular data from the command line.

mod args;
mod client;
mod evaluate;
mod explain;
mod export;
mod final_model;
mod fit;
mod forecast;
mod memory;
mod output;
mod predict;
mod prepare;
mod profile;
mod registry_cmd;
mod remote_args;
mod report;
mod serve;
mod serving_cmd;
mod tls;
mod train;
mod worker_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    memory::install_probe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUARRY_LOG")
                // A `gpu` build probes for a GPU once; on a machine without one, wgpu and
                // burn's device thread log the failed probe as errors, though MLP trials then
                // train on the CPU as intended (`QUARRY_LOG=info` shows the fallback).
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,wgpu_hal=off,cubecl_common=off")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Fit(mut a) => registry_cmd::resolve_data(&mut a.data, &a.store).and_then(|()| fit::run(a)),
        Command::Predict(a) => predict::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Train(a) => train::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Export(a) => export::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Worker(a) => worker_cmd::run(a),
        Command::Submit(mut a) => {
            registry_cmd::resolve_data(&mut a.fit.data, &a.fit.store).and_then(|()| client::submit(a))
        }
        Command::Jobs(a) => client::jobs(a),
        Command::Status(a) => client::status(a),
        Command::Leaderboard(a) => client::leaderboard(a),
        Command::Download(a) => client::download(a),
        Command::ServeModel(a) => serving_cmd::serve_model(a),
        Command::Drift(a) => serving_cmd::drift(a),
        Command::Data(a) => registry_cmd::data(a),
        Command::Models(a) => registry_cmd::models(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole cause chain, outermost first.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}
