//! # Schemas
//!
//! [`TableSchema`] describes a table the way every connector understands it: columns with a portable
//! [`DataType`], the source's own declared type, nullability, default and the primary key. Sinks map a
//! [`DataType`] to their own types by the table in `docs/type-mapping.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Character set of a text column, where it matters for decoding raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// UTF-8 (`utf8mb4`, `utf8mb3`, PostgreSQL's `UTF8`).
    #[default]
    Utf8,
    /// MySQL's `latin1` (Windows-1252).
    Latin1,
    /// ASCII.
    Ascii,
    /// Any other character set: the source converts to UTF-8 before we see it.
    Other,
}

/// The portable type of a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataType {
    /// Boolean.
    Bool,
    /// Integer of `bytes` bytes (1, 2, 3, 4 or 8).
    Int {
        /// Storage width in bytes.
        bytes: u8,
        /// True for unsigned.
        unsigned: bool,
    },
    /// Exact decimal.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
        /// True for MySQL's (deprecated) unsigned decimals.
        unsigned: bool,
    },
    /// 4-byte float.
    Float,
    /// 8-byte float.
    Double,
    /// Fixed-length text of `length` characters.
    Char {
        /// Length in characters.
        length: u32,
        /// Character set.
        charset: Charset,
    },
    /// Variable-length text of at most `length` characters.
    Varchar {
        /// Maximum length in characters.
        length: u32,
        /// Character set.
        charset: Charset,
    },
    /// Long text; `max_bytes` is the declared storage limit (255, 65535, 16M, 4G).
    Text {
        /// Maximum length in bytes.
        max_bytes: u64,
        /// Character set.
        charset: Charset,
    },
    /// Fixed-length binary.
    Binary {
        /// Length in bytes.
        length: u32,
    },
    /// Variable-length binary.
    Varbinary {
        /// Maximum length in bytes.
        length: u32,
    },
    /// Binary large object; `max_bytes` as for [`DataType::Text`].
    Blob {
        /// Maximum length in bytes.
        max_bytes: u64,
    },
    /// Date.
    Date,
    /// Time of day / duration with `fsp` fractional digits.
    Time {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// Date and time without time zone.
    DateTime {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// Instant (MySQL `TIMESTAMP`, PostgreSQL `timestamptz`).
    Timestamp {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// MySQL `YEAR`.
    Year,
    /// Enum with its labels in declared order.
    Enum {
        /// The labels.
        labels: Vec<String>,
    },
    /// Set with its members in declared order.
    Set {
        /// The members.
        members: Vec<String>,
    },
    /// Bit string of `bits` bits (1 to 64).
    Bit {
        /// Width in bits.
        bits: u8,
    },
    /// JSON document.
    Json,
    /// UUID.
    Uuid,
    /// A type no mapping knows; `name` is the source's declaration.
    Other {
        /// The source's type name.
        name: String,
    },
}

impl DataType {
    /// True for the text types whose values are [`crate::Value::Text`].
    pub fn is_text(&self) -> bool {
        matches!(self, DataType::Char { .. } | DataType::Varchar { .. } | DataType::Text { .. })
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Portable type.
    pub data_type: DataType,
    /// The source's declaration, e.g. `decimal(12,2) unsigned`.
    pub source_type: String,
    /// True when NULL is allowed.
    pub nullable: bool,
    /// The default as the source prints it (an SQL expression or literal), if any.
    pub default: Option<String>,
    /// The collation of a text column (`utf8mb4_bin`), which decides which values are equal as keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
}

/// A table's name: database (MySQL) or database + schema (PostgreSQL), and table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    /// Database (MySQL) or schema (PostgreSQL) holding the table.
    pub namespace: String,
    /// Table name.
    pub name: String,
}

impl TableRef {
    /// A table reference.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// A table's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: TableRef,
    /// Columns in ordinal order.
    pub columns: Vec<ColumnSchema>,
    /// Primary-key column names in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// Increases by one on every schema change a pipeline sees.
    pub version: u64,
}

impl TableSchema {
    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indexes of the primary-key columns, in key order.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.primary_key.iter().filter_map(|k| self.column_index(k)).collect()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}
