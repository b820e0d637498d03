//! The embedded JavaScript engine (QuickJS through `rquickjs`) with the shell's prelude and its native
//! functions. User code runs in sloppy global scope with a memory limit and an interrupt handler (Ctrl-C);
//! its errors come back as one sentence ([`Outcome::Failed`]), never as a stack.

use super::api::Api;
use super::progress;
use super::render;
use super::style::Style;
use rquickjs::context::EvalOptions;
use rquickjs::prelude::Opt;
use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Object, Runtime, Value};
use std::cell::RefCell;
use std::io::{BufRead, IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most memory user code may allocate.
pub const MEMORY_LIMIT: usize = 256 * 1024 * 1024;
/// The deepest native stack QuickJS may use.
const STACK_LIMIT: usize = 1024 * 1024;

const PRELUDE: &str = include_str!("prelude.js");

/// Where the engine prints, and how.
pub struct Io {
    /// Results and `print`.
    pub out: RefCell<Box<dyn Write>>,
    /// `console.error` and questions.
    pub err: RefCell<Box<dyn Write>>,
    /// Print JSON instead of text.
    pub json: bool,
    /// A person can answer questions (delete confirmations) on the terminal.
    pub interactive: bool,
    /// Colours and progress bars.
    pub style: Style,
}

impl Io {
    /// Writes to the results stream and flushes it.
    pub fn out(&self, text: &str) {
        let mut out = self.out.borrow_mut();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Writes to the error stream and flushes it.
    pub fn err(&self, text: &str) {
        let mut err = self.err.borrow_mut();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
}

/// How one evaluation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran; its result (if any) was printed.
    Done,
    /// It failed; `message` is the sentence to print, `kind` the API error kind (or `invalid_input`).
    Failed {
        /// One sentence.
        message: String,
        /// An `ErrorKind` name.
        kind: String,
    },
    /// Ctrl-C stopped it.
    Interrupted,
}

/// Whether a text parses as JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// It compiles.
    Ok,
    /// It ends too early: more lines are needed.
    Incomplete,
    /// It has a syntax error.
    Error,
}

/// The engine with the prelude loaded.
pub struct Js {
    // Dropped after the context.
    ctx: Context,
    _rt: Runtime,
    interrupt: &'static AtomicBool,
}

impl Js {
    /// A fresh engine whose natives talk to `api` and print through `io`. `interrupt` is raised by Ctrl-C.
    pub fn new(api: Rc<dyn Api>, io: Rc<Io>, interrupt: &'static AtomicBool) -> anyhow::Result<Js> {
        let rt = Runtime::new()?;
        rt.set_memory_limit(MEMORY_LIMIT);
        rt.set_max_stack_size(STACK_LIMIT);
        rt.set_interrupt_handler(Some(Box::new(move || interrupt.load(Ordering::Relaxed))));
        let ctx = Context::full(&rt)?;
        ctx.with(|ctx| -> anyhow::Result<()> {
            let natives = natives(&ctx, api, io.clone(), interrupt)
                .map_err(|e| anyhow::anyhow!("cannot set up the shell's functions: {e}"))?;
            let settings = Object::new(ctx.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
            settings.set("json", io.json).map_err(|e| anyhow::anyhow!("{e}"))?;
            settings.set("interactive", io.interactive).map_err(|e| anyhow::anyhow!("{e}"))?;
            let install: Function =
                ctx.eval(PRELUDE).catch(&ctx).map_err(|e| anyhow::anyhow!("prelude: {e}"))?;
            install
                .call::<_, ()>((natives, settings))
                .catch(&ctx)
                .map_err(|e| anyhow::anyhow!("prelude: {e}"))?;
            Ok(())
        })?;
        Ok(Js { ctx, _rt: rt, interrupt })
    }

    /// Evaluates user code in the global scope and prints its result the way the prompt echoes it.
    pub fn run(&self, source: &str, io: &Io) -> Outcome {
        self.interrupt.store(false, Ordering::Relaxed);
        self.ctx.with(|ctx| {
            let mut options = EvalOptions::default();
            options.strict = false;
            options.filename = Some("input".to_owned());
            let evaluated = ctx.eval_with_options::<Value, _>(source, options).catch(&ctx);
            let interrupted = self.interrupt.swap(false, Ordering::Relaxed);
            match evaluated {
                Ok(value) => {
                    if !value.is_undefined() {
                        let _ = ctx.globals().set("_", value.clone());
                    }
                    match shell_call::<Option<String>>(&ctx, "show", (value,)) {
                        Ok(Some(text)) => {
                            io.out(&text);
                            if !text.ends_with('\n') {
                                io.out("\n");
                            }
                            Outcome::Done
                        }
                        Ok(None) => Outcome::Done,
                        Err(failure) => failure,
                    }
                }
                Err(_) if interrupted => Outcome::Interrupted,
                Err(caught) => self.explain(&ctx, caught, source),
            }
        })
    }

    fn explain<'js>(&self, ctx: &Ctx<'js>, caught: CaughtError<'js>, source: &str) -> Outcome {
        let value = match caught {
            CaughtError::Exception(e) => e.into_value(),
            CaughtError::Value(v) => v,
            CaughtError::Error(e) => return failure(&engine_error(&e)),
        };
        let message = shell_call::<String>(ctx, "explain", (value.clone(), source.to_owned()));
        let kind = shell_call::<String>(ctx, "errorKind", (value,));
        match (message, kind) {
            (Ok(message), Ok(kind)) if message == "interrupted" => {
                let _ = kind;
                Outcome::Interrupted
            }
            (Ok(message), Ok(kind)) => Outcome::Failed { message, kind },
            (Err(f), _) | (_, Err(f)) => f,
        }
    }

    /// Whether `source` parses, without running it.
    pub fn parses(&self, source: &str) -> Parse {
        self.ctx.with(|ctx| match shell_call::<String>(&ctx, "parses", (source.to_owned(),)) {
            Ok(s) if s == "ok" => Parse::Ok,
            Ok(s) if s == "incomplete" => Parse::Incomplete,
            _ => Parse::Error,
        })
    }

    /// Completions of the text before the cursor: the word being typed and its candidates.
    pub fn complete(&self, line: &str) -> (String, Vec<String>) {
        self.ctx.with(|ctx| {
            let answer = shell_call::<Object>(&ctx, "complete", (line.to_owned(),));
            let Ok(answer) = answer else { return (String::new(), Vec::new()) };
            let start: usize = answer.get::<_, f64>("start").map(|s| s as usize).unwrap_or(0);
            let items: Vec<String> = answer.get("items").unwrap_or_default();
            // `start` counts UTF-16 units; find the byte offset of the same character.
            let mut units = 0;
            let mut byte = line.len();
            for (i, c) in line.char_indices() {
                if units >= start {
                    byte = i;
                    break;
                }
                units += c.len_utf16();
            }
            (line[byte..].to_owned(), items)
        })
    }

    /// Binds every connection and pipeline alias as a global. Returns the notes to show (names that could
    /// not become globals).
    pub fn load_aliases(&self) -> Result<Vec<String>, Outcome> {
        self.ctx.with(|ctx| {
            shell_call::<f64>(&ctx, "load", ())?;
            shell_call::<Vec<String>>(&ctx, "takeNotes", ())
        })
    }

    /// Notes gathered since the last call (aliases that could not become globals).
    pub fn take_notes(&self) -> Vec<String> {
        self.ctx.with(|ctx| shell_call::<Vec<String>>(&ctx, "takeNotes", ()).unwrap_or_default())
    }

    /// The connection chosen with `use`, for the prompt.
    pub fn current_connection(&self) -> Option<String> {
        self.ctx.with(|ctx| shell_call::<Option<String>>(&ctx, "current", ()).ok().flatten())
    }

    /// Whether the global `_` (the last result) holds something to continue with `.method()`.
    pub fn has_last_result(&self) -> bool {
        self.ctx.with(|ctx| ctx.globals().get::<_, Value>("_").map(|v| !v.is_undefined()).unwrap_or(false))
    }
}

/// Calls `__shell.<name>(args)`; a failure becomes an [`Outcome`] to report.
fn shell_call<'js, R: rquickjs::FromJs<'js>>(
    ctx: &Ctx<'js>,
    name: &str,
    args: impl rquickjs::prelude::IntoArgs<'js>,
) -> Result<R, Outcome> {
    let call = || -> rquickjs::Result<R> {
        let shell: Object = ctx.globals().get("__shell")?;
        let f: Function = shell.get(name)?;
        f.call(args)
    };
    match call().catch(ctx) {
        Ok(r) => Ok(r),
        Err(CaughtError::Exception(e)) => {
            let kind: String = e.get("kind").unwrap_or_else(|_| "internal".to_owned());
            let message = e.message().unwrap_or_default();
            Err(Outcome::Failed { message, kind })
        }
        Err(CaughtError::Value(v)) => Err(failure(&format!("uncaught exception: {v:?}"))),
        Err(CaughtError::Error(e)) => Err(failure(&engine_error(&e))),
    }
}

fn failure(message: &str) -> Outcome {
    Outcome::Failed { message: message.to_owned(), kind: "invalid_input".to_owned() }
}

/// A sentence for an engine failure that is not a JavaScript exception.
fn engine_error(e: &rquickjs::Error) -> String {
    match e {
        rquickjs::Error::Allocation => {
            "the script ran out of memory (the shell allows 256 MiB); work on less data at a time".to_owned()
        }
        rquickjs::Error::InvalidString(_) | rquickjs::Error::InvalidCStr(_) => {
            "the input holds a NUL character, which JavaScript source cannot contain".to_owned()
        }
        other => format!("the JavaScript engine failed: {other}"),
    }
}

/// The `native` object the prelude receives: the only way user code reaches the outside.
fn natives<'js>(
    ctx: &Ctx<'js>,
    api: Rc<dyn Api>,
    io: Rc<Io>,
    interrupt: &'static AtomicBool,
) -> rquickjs::Result<Object<'js>> {
    let native = Object::new(ctx.clone())?;
    {
        let api = api.clone();
        native.set(
            "api",
            Function::new(
                ctx.clone(),
                move |method: String, segments: String, body: String, query: String| {
                    api_call(api.as_ref(), &method, &segments, &body, &query)
                },
            )?,
        )?;
    }
    {
        let io = io.clone();
        native.set("write", Function::new(ctx.clone(), move |text: String| io.out(&text))?)?;
    }
    {
        let io = io.clone();
        native.set("writeErr", Function::new(ctx.clone(), move |text: String| io.err(&text))?)?;
    }
    {
        native.set(
            "render",
            Function::new(ctx.clone(), move |kind: String, json: String, extra: Opt<String>| {
                render::render(&kind, &json, extra.0.as_deref().unwrap_or(""))
                    .unwrap_or_else(|e| format!("(cannot show this {kind}: {e})\n"))
            })?,
        )?;
    }
    {
        let io = io.clone();
        native
            .set("confirm", Function::new(ctx.clone(), move |question: String| confirm(&io, &question))?)?;
    }
    {
        let io = io.clone();
        let api = api.clone();
        native.set(
            "wait",
            Function::new(ctx.clone(), move |alias: String, timeout_ms: f64| {
                let timeout = (timeout_ms > 0.0).then(|| Duration::from_millis(timeout_ms as u64));
                progress::wait(api.as_ref(), &io, &alias, timeout, interrupt)
            })?,
        )?;
    }
    {
        native.set(
            "sleep",
            Function::new(ctx.clone(), move |ms: f64| {
                let end = Instant::now() + Duration::from_millis(ms.clamp(0.0, 86_400_000.0) as u64);
                while Instant::now() < end {
                    if interrupt.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
                }
                true
            })?,
        )?;
    }
    Ok(native)
}

/// `native.api(method, segments, body, query)`: `{"ok": answer}` or `{"error": {kind, message}}` as text.
fn api_call(api: &dyn Api, method: &str, segments: &str, body: &str, query: &str) -> String {
    let segments: Vec<String> = serde_json::from_str(segments).unwrap_or_default();
    let body: Option<serde_json::Value> =
        if body.is_empty() { None } else { serde_json::from_str(body).ok() };
    let query: Vec<(String, String)> = if query.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(query)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect()
    };
    match api.call(method, &segments, body.as_ref(), &query) {
        Ok(text) if text.trim().is_empty() => r#"{"ok":null}"#.to_owned(),
        Ok(text) => format!(r#"{{"ok":{text}}}"#),
        Err(e) => serde_json::json!({"error": {"kind": e.kind(), "message": e.to_string()}}).to_string(),
    }
}

/// Asks a yes/no question on the terminal: 1 yes, 0 no, -1 when nobody can answer (a script, a pipe).
fn confirm(io: &Io, question: &str) -> i32 {
    if !io.interactive || !std::io::stdin().is_terminal() {
        return -1;
    }
    io.out(&format!("{question} [y/N] "));
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
        io.out("\n");
        return 0;
    }
    i32::from(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
