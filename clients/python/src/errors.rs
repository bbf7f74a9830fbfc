//! Rust errors → the Python exception hierarchy of `d_engine._errors`.
//!
//! Every `d_engine::Error` variant maps to the class with the same
//! `dengine.v1.ErrorCode` name the gRPC clients raise, so code written
//! against `d_engine.Client` handles embedded errors unchanged.

use d_engine::{Error, StartError};
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

/// The `ErrorCode` name of a Rust client error (as in `dengine.v1.ErrorCode`).
fn code_name(e: &Error) -> &'static str {
    match e {
        Error::NotLeader { .. } => "NOT_LEADER",
        Error::NoLeader(_) => "NO_LEADER",
        Error::InvalidArgument(_) => "INVALID_ARGUMENT",
        Error::Overloaded(_) => "OVERLOADED",
        Error::Timeout(_) => "TIMEOUT",
        Error::ShuttingDown(_) => "SHUTTING_DOWN",
        Error::Storage(_) => "STORAGE",
        Error::ChangeInProgress(_) => "CHANGE_IN_PROGRESS",
        Error::Compacted(_) => "COMPACTED",
        Error::Unauthenticated(_) => "UNAUTHENTICATED",
        Error::PermissionDenied(_) => "PERMISSION_DENIED",
        Error::UnknownNode(_) => "UNKNOWN_NODE",
        Error::NoSpace(_) => "NO_SPACE",
        Error::LeaseNotFound(_) => "LEASE_NOT_FOUND",
        Error::NotHeld(_) => "NOT_HELD",
        Error::Unavailable(_) => "UNAVAILABLE",
        Error::Internal(_) => "INTERNAL",
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
    coded(py, code_name(&e), e.to_string())
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
