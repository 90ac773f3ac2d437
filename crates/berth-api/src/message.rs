//! Docker's JSON message streams (`jsonmessage.JSONMessage`): pull, push, load, import and
//! build progress, one JSON object a line.

use serde::{Deserialize, Serialize};

/// Bytes done and expected of a progress line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// The error of a failed stream (`errorDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub message: String,
}

/// One message of a stream; absent fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Structured results (`{"ID": …}` of a build, [`crate::image::PushResult`] of a push).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl JsonMessage {
    /// A `{"status": …}` line.
    pub fn status(s: impl Into<String>) -> Self {
        JsonMessage {
            status: Some(s.into()),
            ..Default::default()
        }
    }

    /// A `{"stream": …}` line (build output, load messages).
    pub fn stream(s: impl Into<String>) -> Self {
        JsonMessage {
            stream: Some(s.into()),
            ..Default::default()
        }
    }

    /// The last line of a failed stream: `errorDetail` (with `code` when given) and `error`.
    pub fn error(message: impl Into<String>, code: Option<i64>) -> Self {
        let message = message.into();
        JsonMessage {
            error_detail: Some(ErrorDetail {
                code,
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }

    /// An `{"aux": …}` line.
    pub fn aux(v: impl Serialize) -> Self {
        JsonMessage {
            aux: Some(serde_json::to_value(v).unwrap_or_default()),
            ..Default::default()
        }
    }

    /// The line as sent: JSON and `\r\n`.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.extend_from_slice(b"\r\n");
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            String::from_utf8(JsonMessage::status("x").to_line()).unwrap(),
            "{\"status\":\"x\"}\r\n"
        );
        let e = serde_json::to_value(JsonMessage::error("bad", None)).unwrap();
        assert_eq!(
            e,
            serde_json::json!({"errorDetail": {"message": "bad"}, "error": "bad"})
        );
        let p = JsonMessage {
            progress_detail: Some(ProgressDetail::default()),
            ..JsonMessage::status("Waiting")
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"status":"Waiting","progressDetail":{}}"#
        );
    }
}
