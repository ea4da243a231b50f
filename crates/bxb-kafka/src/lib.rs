//! Kafka plumbing shared by the gateway, the consumers and `bxbctl`.
//!
//! - [`KafkaArgs`]: brokers and security (TLS, SASL/SCRAM) as flags and `BXB_KAFKA_*` variables,
//!   turned into an rdkafka [`ClientConfig`]. Any other librdkafka property can be passed with
//!   `--kafka-option name=value`.
//! - [`headers`]: the record headers of an event (trace context, ingestion time) and the
//!   dead-letter headers.
//! - [`admin`]: idempotent topic creation.

pub mod admin;
pub mod headers;

use rdkafka::ClientConfig;

/// The topic events are published to.
pub const EVENTS_TOPIC: &str = "events";
/// The dead-letter topic of records no consumer can process.
pub const DLQ_TOPIC: &str = "events.dlq";

/// How to reach the Kafka cluster.
/// The broker of the local stack (`./dev/up`): the default of `BXB_KAFKA_BROKERS`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:19092";

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long = "kafka-brokers", env = "BXB_KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(long = "kafka-security-protocol", env = "BXB_KAFKA_SECURITY_PROTOCOL", default_value = "plaintext")]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[arg(long = "kafka-sasl-mechanism", env = "BXB_KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long = "kafka-sasl-username", env = "BXB_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (never printed).
    #[arg(long = "kafka-sasl-password", env = "BXB_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA certificates that sign the brokers' certificates.
    #[arg(long = "kafka-ssl-ca-location", env = "BXB_KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[arg(long = "kafka-ssl-certificate-location", env = "BXB_KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<String>,
    /// PEM client key, for mutual TLS.
    #[arg(long = "kafka-ssl-key-location", env = "BXB_KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<String>,
    /// Extra librdkafka properties, `name=value`, repeatable (env: comma-separated).
    #[arg(long = "kafka-option", env = "BXB_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_option)]
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected name=value, got {s:?}"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// A setting that cannot work, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("Kafka setting {setting}: {problem}")]
pub struct KafkaConfigError {
    pub setting: &'static str,
    pub problem: String,
}

impl KafkaArgs {
    /// Plaintext access to `brokers`, as the tests and the local stack use it.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            options: Vec::new(),
        }
    }

    /// The client configuration every producer, consumer and admin client starts from.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("security.protocol", self.security_protocol.as_str());
        if self.security_protocol.uses_sasl() {
            let mechanism = self.sasl_mechanism.as_deref().ok_or(KafkaConfigError {
                setting: "BXB_KAFKA_SASL_MECHANISM",
                problem: "required with a sasl_* security protocol".into(),
            })?;
            config.set("sasl.mechanism", mechanism);
            if mechanism != "GSSAPI" {
                let (Some(user), Some(password)) = (&self.sasl_username, &self.sasl_password) else {
                    return Err(KafkaConfigError {
                        setting: "BXB_KAFKA_SASL_USERNAME",
                        problem: format!("{mechanism} needs a user name and a password"),
                    });
                };
                config.set("sasl.username", user).set("sasl.password", password);
            }
        }
        for (key, value) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn scram_over_tls_sets_every_property() {
        let cli = Cli::try_parse_from([
            "x",
            "--kafka-security-protocol=sasl-ssl",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-sasl-username=bxb",
            "--kafka-sasl-password=secret",
            "--kafka-ssl-ca-location=/etc/ca.pem",
            "--kafka-option=client.id=gw",
        ])
        .unwrap();
        let config = cli.kafka.client_config().unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("bxb"));
        assert_eq!(config.get("sasl.password"), Some("secret"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(config.get("client.id"), Some("gw"));
    }

    #[test]
    fn sasl_without_credentials_names_the_setting() {
        let cli = Cli::try_parse_from(["x", "--kafka-security-protocol=sasl-plaintext", "--kafka-sasl-mechanism=PLAIN"]).unwrap();
        let error = cli.kafka.client_config().unwrap_err();
        assert_eq!(error.setting, "BXB_KAFKA_SASL_USERNAME");
    }
}
