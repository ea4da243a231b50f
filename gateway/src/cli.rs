//! The command line of the `gateway` binary: serve (no subcommand) or manage the API key file.

use std::io::Write;
use std::path::PathBuf;

use uuid::Uuid;

use crate::auth::file;
use crate::config::GatewayConfig;

#[derive(Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Authenticated HTTP ingestion of usage events into Kafka",
    long_about = "Serves the ingestion API when run without a subcommand; `gateway api-key ...` manages the API key file.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: GatewayConfig,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage the API key file (see the gateway README for its format).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for an organization: stores its SHA-256 digest in the file (created if
    /// missing) and prints only the key on stdout. The key cannot be shown again.
    Create {
        #[arg(long = "organization-id")]
        organization_id: Uuid,
        #[arg(long = "file", env = "BXB_API_KEYS_FILE")]
        file: PathBuf,
    },
    /// Revoke a key by its id; running gateways refuse it after their next refresh.
    Revoke {
        #[arg(long = "key-id")]
        key_id: String,
        #[arg(long = "file", env = "BXB_API_KEYS_FILE")]
        file: PathBuf,
    },
    /// List the keys of the file: id, organization, created, revoked (never a key).
    List {
        #[arg(long = "file", env = "BXB_API_KEYS_FILE")]
        file: PathBuf,
    },
}

/// Runs an `api-key` subcommand, writing its result to `out` (stdout in the binary).
pub fn run_api_key_command(command: ApiKeyCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { organization_id, file } => {
            let created = file::create_key(&file, organization_id)?;
            // stdout holds only the key, so scripts can capture it: KEY=$(gateway api-key create ...).
            writeln!(out, "{}", created.key)?;
            eprintln!("created API key {} for organization {organization_id} in {}", created.key_id, file.display());
        }
        ApiKeyCommand::Revoke { key_id, file } => {
            file::revoke_key(&file, &key_id)?;
            eprintln!("revoked API key {key_id} in {}", file.display());
        }
        ApiKeyCommand::List { file } => {
            for entry in file::KeyFile::read(&file)?.keys {
                let revoked = entry.revoked_at.map_or_else(|| "-".to_owned(), |t| t.to_string());
                writeln!(out, "{}\t{}\t{}\t{}", entry.key_id, entry.organization_id, entry.created_at, revoked)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn no_subcommand_serves() {
        let cli = Cli::try_parse_from(["gateway", "--events-topic=t", "--max-batch-events=5"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!((cli.serve.events_topic.as_str(), cli.serve.limits.max_batch_events), ("t", 5));
    }

    #[test]
    fn create_prints_only_the_key_and_revoke_and_list_follow() {
        let path = std::env::temp_dir().join(format!("bxb-gateway-cli-{}-{}.json", std::process::id(), rand::random::<u32>()));
        let org = Uuid::new_v4();
        let file = path.to_str().unwrap();
        let cli = Cli::try_parse_from(["gateway", "api-key", "create", "--organization-id", &org.to_string(), "--file", file]).unwrap();
        let Some(Command::ApiKey(command)) = cli.command else { panic!("expected api-key") };
        let mut out = Vec::new();
        run_api_key_command(command, &mut out).unwrap();
        let stdout = String::from_utf8(out).unwrap();
        let key = stdout.strip_suffix('\n').unwrap();
        assert!(key.starts_with("bxb_") && !key.contains(char::is_whitespace), "{stdout:?}");

        let entries = file::KeyFile::read(&path).unwrap().keys;
        assert_eq!(entries[0].key_sha256, bxb_api_key::digest_to_hex(&bxb_api_key::digest(key)));
        let key_id = entries[0].key_id.clone();
        let cli = Cli::try_parse_from(["gateway", "api-key", "revoke", "--key-id", &key_id, "--file", file]).unwrap();
        let Some(Command::ApiKey(command)) = cli.command else { panic!("expected api-key") };
        run_api_key_command(command, &mut Vec::new()).unwrap();

        let mut out = Vec::new();
        run_api_key_command(ApiKeyCommand::List { file: path.clone() }, &mut out).unwrap();
        let listing = String::from_utf8(out).unwrap();
        assert!(listing.starts_with(&format!("{key_id}\t{org}\t")) && !listing.trim_end().ends_with('-'), "{listing}");
        assert!(!listing.contains(key));
        std::fs::remove_file(path).unwrap();
    }
}
