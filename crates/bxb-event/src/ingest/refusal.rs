//! Why a body was refused: every problem by event index and field, plus the refusals that are
//! about the body as a whole. The codes are stable: the gateway answers with them and counts
//! rejected events by them.

use serde::Serialize;

/// One problem of one event: which event (0-based position in the body; 0 for a single event),
/// which field (empty when the event as a whole is wrong), a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub index: usize,
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(index: usize, field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { index, field: field.into(), code, message: message.into() }
    }
}

/// Why a body yields no events. Each variant is the client's mistake: retrying the same body
/// gets the same refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body is not JSON, or not of the expected shape.
    #[error("the body is not valid JSON of the expected shape: {0}")]
    InvalidJson(String),
    /// The batch holds more events than the limit of the context.
    #[error("the batch holds {events} events, at most {limit} are allowed")]
    BatchTooLarge { events: usize, limit: usize },
    /// Events break field rules; every problem is listed.
    #[error("{} problem(s) in the events", problems.len())]
    Invalid { problems: Vec<Problem> },
    /// An event names another organization than the one the body is parsed for. Outranks
    /// [`Refusal::Invalid`]: such events may not be sent at all.
    #[error("events may only name the organization they are sent for")]
    OrganizationMismatch { problems: Vec<Problem> },
}

impl Refusal {
    /// The stable code, the same the gateway answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::Invalid { .. } => "validation_failed",
            Self::OrganizationMismatch { .. } => "organization_mismatch",
        }
    }

    /// The problems by event and field (empty for refusals of the body as a whole).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems } | Self::OrganizationMismatch { problems } => problems,
            Self::InvalidJson(_) | Self::BatchTooLarge { .. } => &[],
        }
    }
}

/// A refused body, and how many events it held as far as they could be told apart (0 when the
/// body was never understood), for counting rejected events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{refusal}")]
pub struct Rejection {
    pub refusal: Refusal,
    pub events: usize,
}
