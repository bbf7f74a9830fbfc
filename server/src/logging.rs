//! Structured logs with `tracing-subscriber`: human-readable text or one
//! JSON object per line, to stderr, filtered by `--log` / `DENGINE_LOG`
//! (EnvFilter syntax, e.g. `info` or `d_engine=debug,info`).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Fails (naming the flag) on a bad filter.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| {
        format!("invalid --log / DENGINE_LOG filter '{filter}': {e} (example: info or d_engine=debug,info)")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    res.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
