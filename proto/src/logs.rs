//! How both binaries write their log lines: the format's name, where it is chosen
//! (`RACKPOINT_LOG_FORMAT`, over a node's `log_format`), and its parsing. The binaries build
//! their `tracing` subscribers from it.

use serde::{Deserialize, Serialize};

/// The environment variable that picks the log format of `rackpoint` and `rackpoint-store`
/// (`text` or `json`); for a node it overrides `node.toml`'s `log_format`.
pub const LOG_FORMAT_ENV: &str = "RACKPOINT_LOG_FORMAT";

/// The format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its spans (the request
    /// id among them), for log shippers.
    Json,
}

/// A log format name that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{LOG_FORMAT_ENV}={0:?} is not a log format (text or json)")]
pub struct UnknownLogFormat(pub String);

impl LogFormat {
    /// `text` or `json` (any case, surrounding blanks ignored).
    pub fn parse(name: &str) -> Result<Self, UnknownLogFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(name.to_owned())),
        }
    }

    /// The format `RACKPOINT_LOG_FORMAT`'s value `env` asks for, else `configured`, else text.
    pub fn chosen(
        env: Option<&str>,
        configured: Option<LogFormat>,
    ) -> Result<Self, UnknownLogFormat> {
        match env {
            Some(name) => Self::parse(name),
            None => Ok(configured.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_config_and_text_is_the_default() {
        assert_eq!(LogFormat::chosen(None, None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::chosen(None, Some(LogFormat::Json)), Ok(LogFormat::Json));
        assert_eq!(LogFormat::chosen(Some(" JSON "), None), Ok(LogFormat::Json));
        assert_eq!(LogFormat::chosen(Some("text"), Some(LogFormat::Json)), Ok(LogFormat::Text));
        assert_eq!(LogFormat::chosen(Some("xml"), None), Err(UnknownLogFormat("xml".into())));
    }
}
