//! Source and sink connectors of iDaaS: one module and one cargo feature per database family.
//!
//! [`ConnectionConfig`] is what a user registers; [`ConnectionConfig::validate`] checks it without I/O and
//! reports every bad field at once, and the family's `build` functions turn it into a [`idaas_core::Source`]
//! or [`idaas_core::Sink`].
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

pub mod config;
pub(crate) mod events;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use config::{ConnectionConfig, ConnectorKind};
