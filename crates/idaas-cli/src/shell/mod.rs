//! `idaas shell`: the interactive shell of the brief. JavaScript (QuickJS) with a prelude of the brief's
//! functions (`createConnection`, `create_pipeline(...).readFrom(...).writeTo(...).start()`,
//! `my_pipeline.stats()`, ...), catalogue commands (`show tables`, `peek t 5`, ...), and every alias of the
//! server as a global. It is a client of the Open API only; see `docs/shell.md`.
//!
//! - [`input`]: statements, commands, mending the brief's typos, password redaction;
//! - [`js`]: the engine, its natives and error sentences; `prelude.js` is the JavaScript side;
//! - [`repl`]: the prompt (history, completion, multi-line input); [`render`], [`progress`], [`style`]: output.

mod api;
mod input;
mod js;
mod progress;
mod render;
mod repl;
mod style;

use crate::client::Client;
use api::Api;
use clap::Args;
use input::{Command, Repaired};
use js::{Io, Js, Outcome, Parse};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use style::Style;

/// Arguments of `idaas shell` (plus the global `--server` and `--json`).
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Run these statements and commands, print their results, and exit (1 on the first error).
    #[arg(long, value_name = "CODE", conflicts_with = "file")]
    eval: Option<String>,
    /// Run this script, statement by statement as if typed, and exit (1 on the first error).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Raised by Ctrl-C; user code and waits check it.
static INTERRUPT: AtomicBool = AtomicBool::new(false);
/// A second Ctrl-C ends a script at once (the first may be waiting on the server).
static SCRIPT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    if INTERRUPT.swap(true, Ordering::SeqCst) && SCRIPT.load(Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

fn catch_interrupts() {
    // SAFETY: the handler only touches atomics and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
    }
}

/// Runs the shell: a script (`--eval`, `-f`, or standard input when it is not a terminal) or the prompt.
pub fn run(args: ShellArgs, server: &str, json: bool) -> anyhow::Result<ExitCode> {
    let script = match (&args.eval, &args.file) {
        (Some(code), _) => Some(code.clone()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the script {}: {e}; check the path", path.display())
        })?),
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            Some(text)
        }
        (None, None) => None,
    };
    let interactive = script.is_none();
    SCRIPT.store(!interactive, Ordering::SeqCst);
    catch_interrupts();
    let io = Rc::new(Io {
        out: std::cell::RefCell::new(Box::new(std::io::stdout())),
        err: std::cell::RefCell::new(Box::new(std::io::stderr())),
        json,
        interactive,
        style: Style::detect(json),
    });
    let client: Rc<dyn Api> = Rc::new(Client::new(server)?);
    let session = Rc::new(Session { js: Rc::new(Js::new(client, io.clone(), &INTERRUPT)?), io });
    let loaded = session.js.load_aliases();
    match script {
        Some(text) => {
            if let Err(outcome) = loaded {
                session.report(&outcome, None);
                return Ok(ExitCode::FAILURE);
            }
            session.notes();
            Ok(match session.run_text(&text, true) {
                Flow::Continue | Flow::Exit => ExitCode::SUCCESS,
                Flow::Failed => ExitCode::FAILURE,
                Flow::Interrupted => ExitCode::from(130),
            })
        }
        None => {
            match loaded {
                Ok(notes) => {
                    session.io.out(&format!(
                        "iDaaS shell on {server}. Type help for examples, exit (or Ctrl-D) to leave.\n"
                    ));
                    for note in notes {
                        session.io.err(&session.io.style.note(&note));
                    }
                }
                Err(outcome) => session.report(&outcome, None),
            }
            repl::run(&session)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the caller does after some input ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read more.
    Continue,
    /// `exit` was typed.
    Exit,
    /// A statement failed (scripts stop there).
    Failed,
    /// Ctrl-C.
    Interrupted,
}

/// The engine and where it prints.
pub struct Session {
    js: Rc<Js>,
    io: Rc<Io>,
}

impl Session {
    /// Runs input statement by statement. A script stops at the first failure; the prompt goes on.
    pub fn run_text(&self, text: &str, script: bool) -> Flow {
        let mut chunks: std::collections::VecDeque<input::Chunk> = input::split(text).into();
        let mut flow = Flow::Continue;
        while let Some(chunk) = chunks.pop_front() {
            let outcome = match input::command(&chunk.text) {
                Some(Command::Exit) => return Flow::Exit,
                Some(Command::Usage(usage)) => {
                    Outcome::Failed { message: usage, kind: "invalid_input".into() }
                }
                Some(Command::Js(call)) => self.js.run(&call, &self.io),
                None => {
                    let mut code = chunk.text.clone();
                    if code.trim_start().starts_with('.') && self.js.has_last_result() {
                        code = format!("_{}", code.trim_start());
                    }
                    match self.js.parses(&code) {
                        Parse::Ok => self.js.run(&code, &self.io),
                        Parse::Incomplete if !chunks.is_empty() => {
                            // `var x =` on one line and its value on the next.
                            let next = chunks.pop_front().expect("not empty");
                            let text = format!("{code}\n{}", next.text);
                            chunks.push_front(input::Chunk { text, line: chunk.line, ..next });
                            continue;
                        }
                        _ if !chunk.mended => match self.mend(&code, chunk.line) {
                            Some(mended) => {
                                // Mended text may hold several statements: run them one by one.
                                for sub in mended.into_iter().rev() {
                                    chunks.push_front(sub);
                                }
                                continue;
                            }
                            None => self.js.run(&code, &self.io),
                        },
                        _ => self.js.run(&code, &self.io),
                    }
                }
            };
            self.notes();
            match outcome {
                Outcome::Done => {}
                Outcome::Failed { .. } => {
                    self.report(&outcome, script.then_some(chunk.line));
                    flow = Flow::Failed;
                    if script {
                        return flow;
                    }
                }
                Outcome::Interrupted => {
                    self.report(&outcome, None);
                    return Flow::Interrupted;
                }
            }
        }
        flow
    }

    /// Code that does not parse, mended when the brief's typos are all that is wrong (saying what was
    /// changed), as statements to run; `None` when it cannot be mended, so that its syntax error is reported.
    fn mend(&self, code: &str, line: usize) -> Option<Vec<input::Chunk>> {
        let Repaired { text, notes } = input::repair(code, line)?;
        let statements = input::split(&text);
        if !statements
            .iter()
            .all(|c| input::command(&c.text).is_some() || self.js.parses(&c.text) == Parse::Ok)
        {
            return None;
        }
        self.io.err(&self.io.style.note(&format!("read the input leniently: {}", notes.join("; "))));
        Some(
            statements
                .into_iter()
                .map(|c| input::Chunk { line: line + c.line - 1, mended: true, ..c })
                .collect(),
        )
    }

    /// Prints notes the prelude gathered (aliases that could not become globals).
    fn notes(&self) {
        for note in self.js.take_notes() {
            self.io.err(&self.io.style.note(&note));
        }
    }

    /// Prints a failure: one sentence on standard error, or the API's error JSON with `--json`.
    fn report(&self, outcome: &Outcome, line: Option<usize>) {
        let (message, kind) = match outcome {
            Outcome::Failed { message, kind } => (message.as_str(), kind.as_str()),
            Outcome::Interrupted => ("interrupted", "invalid_input"),
            Outcome::Done => return,
        };
        let message = match line {
            Some(n) => format!("line {n}: {message}"),
            None => message.to_owned(),
        };
        if self.io.json {
            let body = serde_json::json!({"error": {"kind": kind, "message": message}});
            self.io.err(&format!("{}\n", serde_json::to_string_pretty(&body).unwrap_or_default()));
        } else {
            self.io.err(&self.io.style.error(&message));
        }
    }

    /// True when the prompt should read another line before running `text`.
    pub fn needs_more(&self, text: &str) -> bool {
        let chunks = input::split(text);
        let Some(last) = chunks.last() else { return false };
        if !last.complete {
            return true;
        }
        // Brackets balance: an empty line runs a statement that still looks unfinished (`var x =`), so that
        // the parser can say what is wrong instead of the prompt waiting forever.
        if input::command(&last.text).is_some() || text.ends_with('\n') {
            return false;
        }
        self.js.parses(&last.text) == Parse::Incomplete
    }
}

#[cfg(test)]
mod tests;
