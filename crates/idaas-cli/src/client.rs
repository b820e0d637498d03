//! A blocking client of the server's Open API. It returns the answer's text as the server wrote it, so
//! `--json` prints it unchanged, and decodes it on demand.

use crate::output::pretty_json;
use idaas_engine::ErrorKind;
use idaas_server::{ErrorBody, ErrorDetail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The server the CLI talks to when neither `--server` nor `IDAAS_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:3030";

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take; a connection test or a pipeline creation talks to databases.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection to the server.
    #[error("cannot reach the iDaaS server at {server}; start it with 'idaas server' or pass --server")]
    Unreachable {
        /// The server URL.
        server: String,
    },
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error as the server described it; `None` when the body was not an API error.
        detail: Option<ErrorDetail>,
        /// What to print.
        message: String,
        /// The answer's body as the server wrote it.
        body: String,
    },
    /// The answer could not be understood, or the request could not be made.
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// The error's kind: the server's for an API error, `unreachable` when the server cannot be reached.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Api { detail: Some(d), .. } => d.kind,
            ClientError::Unreachable { .. } => ErrorKind::Unreachable,
            ClientError::Api { status, .. } if (400..500).contains(status) => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        }
    }

    /// The error as the API's JSON error body: the server's own when it sent one.
    pub fn to_json(&self) -> String {
        if let ClientError::Api { detail: Some(_), body, .. } = self {
            return pretty_json(body);
        }
        let kind = match self {
            ClientError::Unreachable { .. } => ErrorKind::Unreachable,
            _ => ErrorKind::Internal,
        };
        let body = ErrorBody { error: ErrorDetail { kind, message: self.to_string() } };
        serde_json::to_string_pretty(&body).unwrap_or_default()
    }
}

/// A successful answer.
pub struct Reply {
    /// The body as the server wrote it; empty for `204 No Content`.
    pub text: String,
}

impl Reply {
    /// Decodes the body.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.text)
            .map_err(|e| ClientError::Protocol(format!("cannot read the server's answer: {e}")))
    }
}

/// A client of one server.
pub struct Client {
    server: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `server` (`http://HOST:PORT`).
    pub fn new(server: &str) -> Result<Client, ClientError> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ClientError::Protocol(format!(
                "invalid server URL '{server}': expected http://HOST:PORT, e.g. {DEFAULT_SERVER}"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        Ok(Client { server, agent })
    }

    /// `GET /api/v1/<segments>`.
    pub fn get(&self, segments: &[&str]) -> Result<Reply, ClientError> {
        self.finish(self.agent.get(self.url(segments)).header("accept", "application/json").call())
    }

    /// `GET /api/v1/<segments>?<query>`.
    pub fn get_with_query(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Reply, ClientError> {
        let mut request = self.agent.get(self.url(segments)).header("accept", "application/json");
        for (name, value) in query {
            request = request.query(*name, *value);
        }
        self.finish(request.call())
    }

    /// `POST /api/v1/<segments>` with a JSON body.
    pub fn post_json(&self, segments: &[&str], body: &impl Serialize) -> Result<Reply, ClientError> {
        self.finish(self.agent.post(self.url(segments)).header("accept", "application/json").send_json(body))
    }

    /// `POST /api/v1/<segments>` without a body.
    pub fn post(&self, segments: &[&str]) -> Result<Reply, ClientError> {
        self.finish(self.agent.post(self.url(segments)).header("accept", "application/json").send_empty())
    }

    /// `DELETE /api/v1/<segments>`.
    pub fn delete(&self, segments: &[&str]) -> Result<Reply, ClientError> {
        self.finish(self.agent.delete(self.url(segments)).header("accept", "application/json").call())
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = format!("{}/api/v1", self.server);
        for segment in segments {
            url.push('/');
            url.push_str(&encode_segment(segment));
        }
        url
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, ClientError> {
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| self.transport_error(e))?;
        if (200..300).contains(&status) {
            return Ok(Reply { text });
        }
        let detail = serde_json::from_str::<ErrorBody>(&text).ok().map(|b| b.error);
        let message = match &detail {
            Some(d) => d.message.clone(),
            None => format!("the iDaaS server at {} answered HTTP {status}", self.server),
        };
        Err(ClientError::Api { status, detail, message, body: text })
    }

    fn transport_error(&self, err: ureq::Error) -> ClientError {
        match err {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                ClientError::Unreachable { server: self.server.clone() }
            }
            ureq::Error::Timeout(_) => ClientError::Protocol(format!(
                "the iDaaS server at {} did not answer within {} seconds",
                self.server,
                REQUEST_TIMEOUT.as_secs()
            )),
            other => ClientError::Protocol(format!(
                "request to the iDaaS server at {} failed: {other}",
                self.server
            )),
        }
    }
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters stay).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("crm.Customer"), "crm.Customer");
        assert_eq!(encode_segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode_segment("ü"), "%C3%BC");
        let client = Client::new("http://127.0.0.1:3030/").unwrap();
        assert_eq!(client.url(&["connections", "my db"]), "http://127.0.0.1:3030/api/v1/connections/my%20db");
    }

    #[test]
    fn bad_server_urls_are_refused() {
        assert!(Client::new("127.0.0.1:3030").is_err());
    }

    #[test]
    fn an_unreachable_server_says_how_to_fix_it() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = format!("http://127.0.0.1:{port}");
        let err = Client::new(&server).unwrap().get(&["connections"]).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the iDaaS server at {server}; start it with 'idaas server' or pass --server"
            )
        );
        let body: ErrorBody = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(body.error.kind, ErrorKind::Unreachable);
    }
}
