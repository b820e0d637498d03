//! The prompt: line editing with history (passwords redacted before they are saved), tab completion of
//! functions, aliases, tables and columns, and multi-line input until the statement is complete.

use super::{Flow, Session, input};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Context, Editor};
use std::path::PathBuf;
use std::rc::Rc;

/// The most lines the history file keeps.
const HISTORY_SIZE: usize = 2000;

/// `$XDG_STATE_HOME/idaas/shell_history`, or `~/.local/state/idaas/shell_history`.
pub fn history_path() -> Option<PathBuf> {
    let state =
        std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("idaas").join("shell_history"))
}

/// Creates the history file readable by its owner only, so that nothing typed is shown to others.
fn prepare_history(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

struct Helper {
    session: Rc<Session>,
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start_of_line = line[..pos].rfind('\n').map_or(0, |i| i + 1);
        let (typed, items) = self.session.js.complete(&line[start_of_line..pos]);
        let start = pos - typed.len();
        Ok((start, items.into_iter().map(|i| Pair { display: i.clone(), replacement: i }).collect()))
    }
}

impl Hinter for Helper {
    type Hint = String;
}

impl Highlighter for Helper {}

impl Validator for Helper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if self.session.needs_more(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl rustyline::Helper for Helper {}

/// Reads and runs input until `exit` or Ctrl-D. Ctrl-C clears the line being typed, or stops what runs.
pub fn run(session: &Rc<Session>) -> anyhow::Result<()> {
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(HISTORY_SIZE)?
        .history_ignore_dups(true)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<Helper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(Helper { session: session.clone() }));
    let history = history_path().filter(|p| prepare_history(p).is_ok());
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    loop {
        let prompt = match session.js.current_connection() {
            Some(c) => format!("idaas:{c}> "),
            None => "idaas> ".to_owned(),
        };
        match editor.readline(&prompt) {
            Ok(text) => {
                if text.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(input::redact(text.trim_end()));
                if let Some(path) = &history {
                    let _ = editor.append_history(path);
                }
                if session.run_text(&text, false) == Flow::Exit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(anyhow::anyhow!("cannot read from the terminal: {e}")),
        }
    }
    if let Some(path) = &history {
        let _ = editor.append_history(path);
    }
    Ok(())
}
