use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = bxb_bench::BenchArgs::parse();
    let output = args.output.clone();
    let report = bxb_bench::run(args).await?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&output, serde_json::to_string_pretty(&report.to_json())? + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    println!("{}", report.table());
    println!("report: {}", output.display());
    Ok(())
}
