//! The error taxonomy every service uses, mapped once to `tonic::Status`.
//!
//! Codes are chosen on purpose: `Unavailable` means retry, `FailedPrecondition`
//! means refetch and decide again, `ResourceExhausted` means back off.
//! Internal errors are logged with their cause and reach clients only as
//! "internal error".

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(Violations),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when to retry.
    #[error("throttled: {message}")]
    Throttled { message: String, retry_after: std::time::Duration },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A concurrent request got there first; retrying is safe.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A call to another service failed; its status passes through unchanged
    /// unless it is a server fault, which is masked.
    #[error("upstream call failed: {0}")]
    Upstream(#[from] Status),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.add(field, description);
        Error::InvalidArgument(v)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    pub fn denied(why: impl Into<String>) -> Self {
        Error::PermissionDenied(why.into())
    }

    pub fn precondition(why: impl Into<String>) -> Self {
        Error::FailedPrecondition(why.into())
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidArgument(violations) => violations.into_status(),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Throttled { message, retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::Upstream(status) => match status.code() {
                Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => {
                    tracing::error!(code = ?status.code(), message = status.message(), "upstream call failed");
                    Status::internal("internal error")
                }
                Code::DeadlineExceeded | Code::Cancelled => Status::unavailable(status.message()),
                // Client-facing codes pass through whole, field violations included.
                _ => status,
            },
            Error::Database(db) => {
                tracing::error!(error = %db, "database error");
                if is_transient(&db) {
                    Status::unavailable("database busy, retry")
                } else {
                    Status::internal("internal error")
                }
            }
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn is_transient(err: &sea_orm::DbErr) -> bool {
    let text = err.to_string();
    text.contains("database is locked") || text.contains("pool timed out") || text.contains("Connection")
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// Field violations collected while validating a request, so that a client
/// learns of every bad field in one answer.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the outcome of a field check.
    pub fn check<T>(&mut self, result: std::result::Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(&e.field, e.description);
                None
            }
        }
    }

    /// A required id in canonical form; empty (and recorded) when bad, which
    /// `finish` then reports.
    pub fn id(&mut self, field: &str, raw: &str) -> String {
        self.check(crate::ids::parse_id(field, raw)).unwrap_or_default()
    }

    /// An optional id: `None` when empty (or bad, which is recorded).
    pub fn optional_id(&mut self, field: &str, raw: &str) -> Option<String> {
        self.check(crate::ids::parse_optional_id(field, raw)).flatten()
    }

    /// `page_size` (0 means `default`, else 1..=max) and `page_token`.
    pub fn page(&mut self, size: i32, token: &str, default: u64, max: u64) -> Page {
        Page {
            limit: self.check(crate::ids::page_size("page_size", size, default, max)).unwrap_or(default),
            after: self.check(crate::ids::decode_page_token("page_token", token)).flatten(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was wrong.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self)) }
    }

    fn into_status(self) -> Status {
        let message = self.0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
        Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid argument: {message}"),
            ErrorDetails::with_bad_request(self.0),
        )
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// How many items to return.
    pub limit: u64,
    /// The decoded page token: where the previous page ended.
    pub after: Option<String>,
}

/// Maps a unique-constraint violation to ALREADY_EXISTS with `message`;
/// any other error passes through.
pub fn duplicate_as(message: impl Into<String>) -> impl FnOnce(sea_orm::DbErr) -> Error {
    let message = message.into();
    move |err| if is_unique_violation(&err) { Error::AlreadyExists(message) } else { Error::Database(err) }
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: &str, description: impl Into<String>) -> Self {
        Self { field: field.to_string(), description: description.into() }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::invalid(&e.field, e.description)
    }
}
