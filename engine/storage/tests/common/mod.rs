//! Helpers shared by this crate's property-based tests.

/// `PROPTEST_CASES` if set, else the CI-sized default.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
