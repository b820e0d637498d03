//! The few answer types the server adds to the engine's API types.

use idaas_core::{CheckItem, CheckReport};
use serde::{Deserialize, Serialize};

/// The answer of `POST /api/v1/connections/{alias}/test`: the engine's [`CheckReport`] plus its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// True when every check item is fine ([`CheckReport::ok`]).
    pub ok: bool,
    /// Server version as it reports itself.
    pub server_version: Option<String>,
    /// The findings.
    pub items: Vec<CheckItem>,
}

impl From<CheckReport> for CheckResult {
    fn from(report: CheckReport) -> Self {
        CheckResult { ok: report.ok(), server_version: report.server_version, items: report.items }
    }
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}
