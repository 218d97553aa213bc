//! Error messages that keep their causes. Its own module so that the LLM client and the
//! stores (which use it) and the domain error (which knows their errors) do not import
//! each other.

/// An error with all its causes, for messages that must say what really went wrong
/// (e.g. "connection refused" under "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
