//! The client subcommands. Each one makes its requests through [`Client`] and prints either the API's JSON
//! (`--json`) or a plain-text rendering of it.

pub mod connection;
pub mod pipeline;

use crate::client::{Client, Reply};
use crate::output::pretty_json;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What every client subcommand runs with.
pub struct Context {
    /// The server's client.
    pub client: Client,
    /// Print the API's JSON instead of text.
    pub json: bool,
}

impl Context {
    /// Prints an answer: its JSON as the server wrote it with `--json`, `render` of it otherwise.
    pub fn show<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        render: impl FnOnce(T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            self.print(reply, String::new);
        } else {
            print!("{}", render(reply.parse()?));
        }
        Ok(())
    }

    /// Prints an answer already decoded: its JSON with `--json`, `render()` otherwise.
    pub fn print(&self, reply: &Reply, render: impl FnOnce() -> String) {
        if self.json {
            println!("{}", pretty_json(&reply.text));
        } else {
            print!("{}", render());
        }
    }

    /// Prints the confirmation of an operation without an answer body (`204 No Content`); nothing with
    /// `--json`, since the API sends nothing.
    pub fn done(&self, message: &str) {
        if !self.json {
            println!("{message}");
        }
    }
}

/// The name serde gives a unit enum variant (`initial_and_cdc`), for printing.
pub(crate) fn serde_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "-".to_owned(),
    }
}
