use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = bxb_chaos::ChaosArgs::parse();
    let output = args.output.clone();
    let report = match bxb_chaos::run::run(args).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&report) {
        Ok(json) => {
            if let Err(error) = std::fs::write(&output, json + "\n") {
                eprintln!("chaos: writing {}: {error}", output.display());
            }
        }
        Err(error) => eprintln!("chaos: report: {error}"),
    }
    for line in report.lines() {
        println!("{line}");
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
