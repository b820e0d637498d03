//! The one door from the shell to the server: a request of the Open API, answered with the body's text.

use crate::client::{Client, ClientError};
use serde_json::Value;

/// Makes Open API requests (`/api/v1/<segments>`). The real one is [`Client`]; tests use canned answers.
pub trait Api {
    /// Sends `method` to `/api/v1/<segments>` with an optional JSON body and query parameters and returns the
    /// answer's body (empty for `204 No Content`).
    fn call(
        &self,
        method: &str,
        segments: &[String],
        body: Option<&Value>,
        query: &[(String, String)],
    ) -> Result<String, ClientError>;
}

impl Api for Client {
    fn call(
        &self,
        method: &str,
        segments: &[String],
        body: Option<&Value>,
        query: &[(String, String)],
    ) -> Result<String, ClientError> {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let reply = match (method, body) {
            ("GET", _) if !query.is_empty() => {
                let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.get_with_query(&segments, &query)?
            }
            ("GET", _) => self.get(&segments)?,
            ("POST", Some(body)) => self.post_json(&segments, body)?,
            ("POST", None) => self.post(&segments)?,
            ("DELETE", _) => self.delete(&segments)?,
            (other, _) => {
                return Err(ClientError::Protocol(format!("the shell cannot send {other} requests")));
            }
        };
        Ok(reply.text)
    }
}
