//! Rust errors → the Python exception hierarchy of `d_engine._errors`.
//!
//! Every `d_engine::Error` variant maps to the class with the same
//! `dengine.v1.ErrorCode` name the gRPC clients raise, so code written
//! against `d_engine.Client` handles embedded errors unchanged.

use d_engine::{Error, ErrorCode, StartError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS
        .get_or_try_init(py, || {
            PyModule::import(py, "d_engine._errors").map(|m| m.unbind())
        })
        .map(|m| m.bind(py))
}

/// The `ErrorCode` name of a Rust client error (as in `dengine.v1.ErrorCode`);
/// a canceled watch is named by its cancel code.
fn code_name(e: &Error) -> &'static str {
    match e.code() {
        ErrorCode::NotLeader => "NOT_LEADER",
        ErrorCode::NoLeader => "NO_LEADER",
        ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
        ErrorCode::Overloaded => "OVERLOADED",
        ErrorCode::Timeout => "TIMEOUT",
        ErrorCode::ShuttingDown => "SHUTTING_DOWN",
        ErrorCode::Storage => "STORAGE",
        ErrorCode::ChangeInProgress => "CHANGE_IN_PROGRESS",
        ErrorCode::Compacted => "COMPACTED",
        ErrorCode::Unauthenticated => "UNAUTHENTICATED",
        ErrorCode::PermissionDenied => "PERMISSION_DENIED",
        ErrorCode::UnknownNode => "UNKNOWN_NODE",
        ErrorCode::NoSpace => "NO_SPACE",
        ErrorCode::LeaseNotFound => "LEASE_NOT_FOUND",
        ErrorCode::NotHeld => "NOT_HELD",
        ErrorCode::Unavailable => "UNAVAILABLE",
        ErrorCode::Internal => "INTERNAL",
        ErrorCode::ClientClosed => "CLOSED",
    }
}

/// An exception of `d_engine._errors` by code name (`error_for_code`).
pub fn coded(py: Python<'_>, code: &str, message: String) -> PyErr {
    let built = errors_module(py).and_then(|m| {
        let exc = m
            .getattr("error_for_code")?
            .call1((code, message.clone()))?;
        Ok(PyErr::from_value(exc))
    });
    built.unwrap_or_else(|e| {
        PyRuntimeError::new_err(format!(
            "{code}: {message} (and d_engine._errors failed: {e})"
        ))
    })
}

/// Converts a Rust client error (call with the GIL held).
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    if let Error::NotLeader {
        leader_id,
        leader_addr,
    } = &e
    {
        let built = errors_module(py).and_then(|m| {
            let exc =
                m.getattr("NotLeader")?
                    .call1((e.to_string(), *leader_id, leader_addr.clone()))?;
            Ok(PyErr::from_value(exc))
        });
        if let Ok(err) = built {
            return err;
        }
    }
    let err = coded(py, code_name(&e), e.to_string());
    if let Error::WatchCanceled(c) = &e {
        // Where to resume (and, for Compacted, the oldest revision left),
        // as the gRPC clients' watch errors carry them.
        let v = err.value(py);
        if c.resume_revision > 0 {
            let _ = v.setattr("resume_revision", c.resume_revision);
        }
        if c.compact_revision > 0 && c.code == ErrorCode::Compacted {
            let _ = v.setattr("compact_revision", c.compact_revision);
        }
    }
    err
}

/// Converts an engine start failure: configuration problems are
/// `InvalidArgument`, storage problems (including "data dir in use by
/// another d-engine process") are `StorageError`.
pub fn start_to_py(py: Python<'_>, e: StartError) -> PyErr {
    let code = match &e {
        StartError::Config(_) => "INVALID_ARGUMENT",
        StartError::Storage(_) => "STORAGE",
        _ => "INTERNAL",
    };
    coded(py, code, format!("cannot start the engine: {e}"))
}

/// `ClientClosed`: the engine was stopped.
pub fn closed(py: Python<'_>) -> PyErr {
    coded(
        py,
        "CLOSED",
        "the engine is stopped (EmbeddedEngine.stop() was called)".to_string(),
    )
}
