//! Fetching a writer schema by id: `GET {url}/schemas/ids/{id}`, every failure sorted by what it
//! says about the registry, none of them about the record.
//!
//! schema_registry_converter's decoder is not used for this: it treats every status but 502 and
//! 503 (a 404, but also a 500, a 504, a 401) and every body it cannot parse as permanent, caches
//! that error per schema id for the life of the process, and so turned a misconfigured or
//! briefly broken registry into dead-lettered good records that a fixed registry never healed.

use serde::Deserialize;

use super::RegistryArgs;

/// The largest registry answer read; a schema is a few kilobytes, and a wrong URL must not make
/// a consumer buffer whatever a web server sends.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How much of an error body is kept for the log.
const MAX_ERROR_BODY_BYTES: usize = 512;

/// Why the registry did not give the schema of an id. Never the record's fault: the record is
/// retried, not dead-lettered, whichever it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// 404: the registry does not know the id. An empty registry (an in-memory one after a
    /// restart), a wrong URL or path, or a producer that registered its schema elsewhere.
    #[error("the schema registry does not know schema id {id} (404): {body}")]
    NotFound { id: u32, body: String },
    /// 401 or 403: the registry refuses the consumer's credentials.
    #[error("the schema registry refused the request for schema id {id} ({status}); check BXB_SCHEMA_REGISTRY_USERNAME and BXB_SCHEMA_REGISTRY_PASSWORD: {body}")]
    Refused { id: u32, status: u16, body: String },
    /// Any other status that is not a success (500, 502, 503, 504, ...).
    #[error("the schema registry answered {status} for schema id {id}: {body}")]
    Status { id: u32, status: u16, body: String },
    /// A success whose body is not a registry's answer (not JSON, no `schema`, too large): a
    /// URL that points at something other than the registry's API.
    #[error("the schema registry's answer for schema id {id} is not a schema: {message}")]
    InvalidResponse { id: u32, message: String },
    /// The registry could not be reached or did not answer in time.
    #[error("the schema registry is unreachable (schema id {id}): {message}")]
    Unreachable { id: u32, message: String },
}

impl LookupError {
    /// The schema id that was looked up.
    pub fn schema_id(&self) -> u32 {
        match self {
            Self::NotFound { id, .. }
            | Self::Refused { id, .. }
            | Self::Status { id, .. }
            | Self::InvalidResponse { id, .. }
            | Self::Unreachable { id, .. } => *id,
        }
    }

    /// A stable, low-cardinality name of the failure, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Refused { .. } => "refused",
            Self::Status { .. } => "status",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Unreachable { .. } => "unreachable",
        }
    }
}

/// What the registry holds under an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Registered {
    /// An Avro schema, as text.
    Avro(String),
    /// A schema the consumers cannot read as Avro: another schema type, or one that refers to
    /// schemas of other subjects. The message says which.
    Unreadable(String),
}

/// The answer of `GET /schemas/ids/{id}` (Confluent's API; Apicurio's `ccompat` answers the same).
#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// The HTTP side of the decoder.
#[derive(Clone)]
pub(crate) struct SchemaFetcher {
    url: String,
    username: Option<String>,
    password: Option<String>,
    http: reqwest::Client,
}

impl SchemaFetcher {
    pub fn new(args: &RegistryArgs, http: reqwest::Client) -> Self {
        let url = args.url.trim_end_matches('/').to_owned();
        Self { url, username: args.username.clone(), password: args.password.clone(), http }
    }

    pub async fn fetch(&self, id: u32) -> Result<Registered, LookupError> {
        let mut request = self
            .http
            .get(format!("{}/schemas/ids/{id}", self.url))
            .header("accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_deref());
        }
        let unreachable = |e: reqwest::Error| LookupError::Unreachable { id, message: error_chain(&e) };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                if status == 200 {
                    return Err(LookupError::InvalidResponse { id, message: format!("more than {MAX_RESPONSE_BYTES} bytes") });
                }
                break;
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200 => parse_answer(id, &body),
            404 => Err(LookupError::NotFound { id, body: excerpt(&body) }),
            401 | 403 => Err(LookupError::Refused { id, status, body: excerpt(&body) }),
            _ => Err(LookupError::Status { id, status, body: excerpt(&body) }),
        }
    }
}

fn parse_answer(id: u32, body: &[u8]) -> Result<Registered, LookupError> {
    let answer: SchemaAnswer = serde_json::from_slice(body)
        .map_err(|e| LookupError::InvalidResponse { id, message: format!("{e}; the body begins {:?}", excerpt(body)) })?;
    match answer.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => return Ok(Registered::Unreadable(format!("schema id {id} is a {other} schema, not Avro"))),
    }
    if !answer.references.is_empty() {
        return Ok(Registered::Unreadable(format!(
            "schema id {id} refers to {} schemas of other subjects; the consumers read only self-contained schemas",
            answer.references.len()
        )));
    }
    Ok(Registered::Avro(answer.schema))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY_BYTES)]);
    text.trim().to_owned()
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_a_schema_only_with_a_schema_field() {
        let avro = parse_answer(7, br#"{"schema":"{\"type\":\"string\"}"}"#).unwrap();
        assert_eq!(avro, Registered::Avro(r#"{"type":"string"}"#.into()));
        assert_eq!(
            parse_answer(7, br#"{"schema":"\"long\"","schemaType":"AVRO","references":[]}"#).unwrap(),
            Registered::Avro("\"long\"".into())
        );
        for garbage in [&b"<html>It works!</html>"[..], b"{}", b"", b"[]", br#"{"schema": 5}"#] {
            let error = parse_answer(7, garbage).unwrap_err();
            assert_eq!(error.kind(), "invalid_response", "{garbage:?}");
            assert_eq!(error.schema_id(), 7);
        }
    }

    #[test]
    fn another_schema_type_or_references_are_unreadable_not_a_registry_failure() {
        let protobuf = parse_answer(3, br#"{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}"#).unwrap();
        assert!(matches!(protobuf, Registered::Unreadable(m) if m.contains("PROTOBUF")));
        let referring = parse_answer(3, br#"{"schema":"{}","references":[{"name":"x","subject":"s","version":1}]}"#).unwrap();
        assert!(matches!(referring, Registered::Unreadable(m) if m.contains("refers to 1")));
    }
}
