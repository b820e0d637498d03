//! What the shell does with typed or scripted text before JavaScript sees it: split it into statements
//! (multi-line input until brackets balance; a line starting with `.` continues the statement above),
//! recognise catalogue commands (`show tables`, `peek t 5`, ...), mend the brief's own typos when the text
//! does not parse as it is, and hide passwords before a line reaches the history file.

/// One statement (or command) of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its text, lines joined by `\n`.
    pub text: String,
    /// The input line it starts on, from 1.
    pub line: usize,
    /// False when the input ended inside brackets, a template or a comment.
    pub complete: bool,
    /// True once [`repair`] has mended it (it is not mended twice).
    pub mended: bool,
}

/// Bracket and literal state carried from one line to the next.
#[derive(Debug, Clone, Default)]
struct Scan {
    /// Open `(`, `[`, `{`, template literals (`` ` ``) and template substitutions (`$`).
    stack: Vec<u8>,
    block_comment: bool,
    /// A closing bracket that matches nothing: the statement is over (and wrong); the parser says why.
    broken: bool,
}

impl Scan {
    fn done(&self) -> bool {
        self.broken || (self.stack.is_empty() && !self.block_comment)
    }

    /// The innermost open bracket, if any.
    fn innermost(&self) -> Option<u8> {
        self.stack.last().copied()
    }

    /// Scans one line. Quoted strings end at the end of the line (JavaScript strings cannot span lines).
    fn line(&mut self, line: &str) {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if self.block_comment {
                if c == b'*' && b.get(i + 1) == Some(&b'/') {
                    self.block_comment = false;
                    i += 1;
                }
                i += 1;
                continue;
            }
            if self.innermost() == Some(b'`') {
                match c {
                    b'\\' => i += 1,
                    b'`' => {
                        self.stack.pop();
                    }
                    b'$' if b.get(i + 1) == Some(&b'{') => {
                        self.stack.push(b'$');
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            match c {
                b'/' if b.get(i + 1) == Some(&b'/') => return,
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    self.block_comment = true;
                    i += 1;
                }
                b'\'' | b'"' => i = string_end(b, i).unwrap_or(b.len()),
                b'`' => self.stack.push(b'`'),
                b'(' | b'[' | b'{' => self.stack.push(c),
                b')' | b']' | b'}' => {
                    let open = match c {
                        b')' => b'(',
                        b']' => b'[',
                        _ => b'{',
                    };
                    match self.stack.last() {
                        Some(&top) if top == open || (c == b'}' && top == b'$') => {
                            self.stack.pop();
                        }
                        _ => self.broken = true,
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The index of the closing quote of the string that opens at `start`, or `None` when the line ends first.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            c if c == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// True for a line that continues the statement above: `.readFrom(...)` (not `.5` or `...spread`).
fn continues(line: &str) -> bool {
    let t = line.trim_start();
    let mut chars = t.chars();
    chars.next() == Some('.') && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
}

/// Splits input into statements and commands.
pub fn split(text: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut chunks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut first = 0;
    let mut scan = Scan::default();
    for (i, line) in lines.iter().enumerate() {
        if current.is_empty() {
            if line.trim().is_empty() {
                continue;
            }
            if command(line).is_some() {
                chunks.push(Chunk {
                    text: line.trim().to_owned(),
                    line: i + 1,
                    complete: true,
                    mended: false,
                });
                continue;
            }
            first = i;
            scan = Scan::default();
        }
        current.push(line);
        scan.line(line);
        if scan.done() {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if next.is_some_and(|l| continues(l)) {
                continue;
            }
            chunks.push(Chunk { text: current.join("\n"), line: first + 1, complete: true, mended: false });
            current.clear();
        }
    }
    if !current.is_empty() {
        chunks.push(Chunk {
            text: current.join("\n"),
            line: first + 1,
            complete: scan.done(),
            mended: false,
        });
    }
    chunks
}

/// A catalogue command, as the JavaScript call that carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `exit` / `quit`.
    Exit,
    /// Evaluate this call of the prelude.
    Js(String),
    /// The command is malformed; print this.
    Usage(String),
}

const USAGE: &[(&str, &str)] = &[
    ("show", "show dbs | show connections | show tables | show pipelines"),
    ("use", "use <connection>"),
    ("desc", "desc <table>"),
    ("describe", "describe <table>"),
    ("peek", "peek <table> [rows] [columns...]"),
    ("count", "count <table>"),
    ("status", "status <pipeline>"),
    ("start", "start <pipeline>"),
    ("stop", "stop <pipeline>"),
    ("delete", "delete <pipeline> [--yes]"),
];

fn usage(word: &str) -> Command {
    let text = USAGE.iter().find(|(w, _)| *w == word).map_or("", |(_, u)| u);
    Command::Usage(format!("usage: {text}"))
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

fn is_table(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '-'))
}

/// Recognises a catalogue command on one line; `None` for JavaScript.
pub fn command(line: &str) -> Option<Command> {
    let line = line.trim();
    let line = line.strip_suffix(';').unwrap_or(line).trim_end();
    let mut words = line.split_whitespace();
    let word = words.next()?;
    let args: Vec<&str> = words.collect();
    match (word, args.as_slice()) {
        ("exit" | "quit" | "exit()" | "quit()", []) => return Some(Command::Exit),
        ("help", []) => return Some(Command::Js("__shell.help()".into())),
        ("help", [topic]) if is_name(topic) => {
            return Some(Command::Js(format!("__shell.help({})", js_str(topic))));
        }
        (
            "show" | "use" | "desc" | "describe" | "peek" | "count" | "status" | "start" | "stop" | "delete",
            [],
        ) => {
            return Some(usage(word));
        }
        _ => {}
    }
    if args.is_empty() || !args.iter().all(|a| is_table(a) || a.starts_with("--")) {
        return None;
    }
    let cmd = |f: &str, rest: &str| Some(Command::Js(format!("__shell.cmd.{f}({rest})")));
    match (word, args.as_slice()) {
        ("show", [what]) => match *what {
            "dbs" | "databases" | "connections" => cmd("showConnections", ""),
            "tables" => cmd("showTables", ""),
            "pipelines" => cmd("showPipelines", ""),
            _ => Some(usage("show")),
        },
        ("show", _) => Some(usage("show")),
        ("use", [alias]) if is_name(alias) => cmd("use", &js_str(alias)),
        ("desc" | "describe", [table]) => cmd("desc", &js_str(table)),
        ("count", [table]) => cmd("count", &js_str(table)),
        ("peek", [table, rest @ ..]) => {
            let (n, columns) = match rest.first() {
                Some(n) if n.chars().all(|c| c.is_ascii_digit()) => (n.to_string(), &rest[1..]),
                _ => ("undefined".to_owned(), rest),
            };
            if !columns.iter().all(|c| is_name(c)) {
                return Some(usage("peek"));
            }
            let columns: Vec<String> = columns.iter().map(|c| js_str(c)).collect();
            cmd("peek", &format!("{}, {n}, [{}]", js_str(table), columns.join(", ")))
        }
        ("status" | "start" | "stop", [name]) if is_name(name) => cmd(word, &js_str(name)),
        ("delete", [name, flags @ ..])
            if is_name(name) && flags.iter().all(|f| matches!(*f, "--yes" | "-y" | "--force")) =>
        {
            cmd("delete", &format!("{}, {}", js_str(name), !flags.is_empty()))
        }
        ("use" | "desc" | "describe" | "count" | "peek" | "status" | "start" | "stop", _) => {
            Some(usage(word))
        }
        _ => None,
    }
}

/// Input mended so that it parses, and what was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The mended text (same number of lines).
    pub text: String,
    /// One phrase per change, with its line (counted from `first_line`).
    pub notes: Vec<String>,
}

/// Mends what the brief's own examples get wrong, for text that does not parse as it is: a `> ` prompt
/// copied with the line, stray `` ` `` lines, `# comments`, a quote left open at the end of a line
/// (`ip: 'demodb.tapdata.net,`) and missing commas between object properties on separate lines. `None` when
/// there is nothing of that kind to mend.
pub fn repair(text: &str, first_line: usize) -> Option<Repaired> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut notes = Vec::new();
    let at = |i: usize| first_line + i;
    for (i, line) in lines.iter_mut().enumerate() {
        let trimmed = line.trim();
        if trimmed == "`" {
            notes.push(format!("ignored a stray ` on line {}", at(i)));
            line.clear();
            continue;
        }
        for prompt in ["`>", ">"] {
            if let Some(rest) = trimmed.strip_prefix(prompt)
                && rest.trim_start().starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '$')
            {
                notes.push(format!("removed the '>' prompt on line {}", at(i)));
                *line = rest.trim_start().to_owned();
                break;
            }
        }
        if let Some(hash) = comment_start(line) {
            notes.push(format!("dropped the # comment on line {}", at(i)));
            line.truncate(hash);
        }
        if let Some(closed) = close_quote(line) {
            notes.push(format!("closed the quote left open on line {}", at(i)));
            *line = closed;
        }
    }
    let mut scan = Scan::default();
    for i in 0..lines.len() {
        scan.line(&lines[i]);
        let code = code_end(&lines[i]);
        let ends_value = code.chars().last().is_some_and(|c| {
            c.is_alphanumeric() || matches!(c, '"' | '\'' | '`' | '_' | '$' | '}' | ']' | ')')
        });
        let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
        if ends_value && scan.innermost() == Some(b'{') && next.is_some_and(|l| starts_property(l)) {
            notes.push(format!("added a missing comma after line {}", at(i)));
            let cut = code.len();
            lines[i].insert(cut, ',');
        }
    }
    (!notes.is_empty()).then(|| Repaired { text: lines.join("\n"), notes })
}

/// Where a `#` comment starts: a `#` outside strings, at the start or after a space.
fn comment_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => i = string_end(b, i)?,
            b'/' if b.get(i + 1) == Some(&b'/') => return None,
            b'#' if i == 0 || b[i - 1].is_ascii_whitespace() => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The line with a quote that was left open closed: before a trailing comma when there is one.
fn close_quote(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => return None,
            b'\'' | b'"' => match string_end(b, i) {
                Some(end) => i = end,
                None => {
                    let quote = b[i] as char;
                    let body = line.trim_end();
                    let (body, comma) = match body.strip_suffix(',') {
                        Some(before) if before.len() > i + 1 => (before, ","),
                        _ => (body, ""),
                    };
                    return Some(format!("{body}{quote}{comma}{}", &line[line.trim_end().len()..]));
                }
            },
            _ => {}
        }
        i += 1;
    }
    None
}

/// The line without a trailing `//` comment and trailing spaces.
fn code_end(line: &str) -> &str {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => match string_end(b, i) {
                Some(end) => i = end,
                None => return line.trim_end(),
            },
            b'/' if b.get(i + 1) == Some(&b'/') => return line[..i].trim_end(),
            _ => {}
        }
        i += 1;
    }
    line.trim_end()
}

/// True for `name:` or `"name":` at the start of a line (an object property).
fn starts_property(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix(['"', '\'']).unwrap_or(t);
    let name_len = t.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(t.len());
    if name_len == 0 || t.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let rest = t[name_len..].strip_prefix(['"', '\'']).unwrap_or(&t[name_len..]).trim_start();
    rest.starts_with(':') && !rest.starts_with("::")
}

/// The text with every `password: "..."` (or `password = '...'`) value replaced by `"***"`, for the
/// history file.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let start = from + found;
        from = start + "password".len();
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let mut i = from;
        if matches!(b.get(i), Some(b'"' | b'\'')) {
            i += 1;
        }
        while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
            i += 1;
        }
        if !matches!(b.get(i), Some(b':' | b'=')) {
            continue;
        }
        i += 1;
        while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
            i += 1;
        }
        let Some(&quote) = b.get(i).filter(|c| matches!(c, b'"' | b'\'' | b'`')) else { continue };
        let value_end =
            string_end(b, i).unwrap_or_else(|| text[i..].find('\n').map_or(text.len(), |n| i + n));
        out.push_str(&text[copied..=i]);
        out.push_str("***");
        if b.get(value_end) == Some(&quote) {
            out.push(quote as char);
            copied = value_end + 1;
        } else {
            copied = value_end;
        }
        from = copied;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The brief's Scenario A lines exactly as the brief prints them (tabs, prompts, stray backticks and
    /// the second connection's typos).
    pub const BRIEF_A: &str = "\t> createConnection( {
\t\t\talias: \"mysql_crm_db\",
\t\t\tip: 'demodb.tapdata.net',
\t\t\tport: 3306,
\t\t\tuser: \"demo\",
\t\t\tpassword: \"xxxxxx\",
\t\t\tdb: \"crm\" \t\t\t
\t\t});  \t
\t\t`
\t`> createConnection( {
\t\t\talias: \"mysql_analytical_db\",
\t\t\tip: 'demodb.tapdata.net,
\t\t\tport: 3307,
\t\t\tuser: \"demo\"
\t\t\tpassword: \"xxxxxx\"\t\t\t
\t\t\tdb: \"analyticaldb\"\t\t\t\t
\t\t}); 
\t    `\t
";

    #[test]
    fn statements_end_where_brackets_balance() {
        let chunks = split("var a = 1\n\nprint({\n  x: [1,\n 2]\n})\n// done\n");
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["var a = 1", "print({\n  x: [1,\n 2]\n})", "// done"]);
        assert_eq!(chunks[1].line, 3);
        assert!(chunks.iter().all(|c| c.complete));
        let open = split("f(\"a)\", `x\n${1 + (2)}`,\n/* ( */ [");
        assert_eq!(open.len(), 1);
        assert!(!open[0].complete);
        assert!(split("a = '(' // (\n")[0].complete);
        assert!(split("x)")[0].complete, "a stray closing bracket ends the statement");
    }

    #[test]
    fn a_line_starting_with_a_dot_continues_the_statement() {
        let text = "create_pipeline({alias: \"my_pipeline\"})\n\t.readFrom( mysql_crm_db.Customer)\n\n\t.writeTo(x,  {AutoCreate:true} )\n\t.start();\nmy_pipeline.stats()";
        let chunks = split(text);
        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].text.ends_with(".start();"));
        assert_eq!(chunks[1].text, "my_pipeline.stats()");
        assert_eq!(split("a\n.5\n").len(), 2);
    }

    #[test]
    fn commands_become_calls() {
        let js = |l: &str| match command(l) {
            Some(Command::Js(s)) => s,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(js("show dbs"), "__shell.cmd.showConnections()");
        assert_eq!(js("  show connections; "), "__shell.cmd.showConnections()");
        assert_eq!(js("show tables"), "__shell.cmd.showTables()");
        assert_eq!(js("show pipelines"), "__shell.cmd.showPipelines()");
        assert_eq!(js("use mysql_crm_db"), "__shell.cmd.use(\"mysql_crm_db\")");
        assert_eq!(js("desc crm.Customer"), "__shell.cmd.desc(\"crm.Customer\")");
        assert_eq!(js("peek Customer"), "__shell.cmd.peek(\"Customer\", undefined, [])");
        assert_eq!(js("peek Customer 5 id name"), "__shell.cmd.peek(\"Customer\", 5, [\"id\", \"name\"])");
        assert_eq!(js("count Customer"), "__shell.cmd.count(\"Customer\")");
        assert_eq!(js("status my_pipeline"), "__shell.cmd.status(\"my_pipeline\")");
        assert_eq!(js("stop my_pipeline"), "__shell.cmd.stop(\"my_pipeline\")");
        assert_eq!(js("delete my_pipeline"), "__shell.cmd.delete(\"my_pipeline\", false)");
        assert_eq!(js("delete my_pipeline --yes"), "__shell.cmd.delete(\"my_pipeline\", true)");
        assert_eq!(js("help pipelines"), "__shell.help(\"pipelines\")");
        assert_eq!(command("exit"), Some(Command::Exit));
        assert_eq!(
            command("show"),
            Some(Command::Usage("usage: show dbs | show connections | show tables | show pipelines".into()))
        );
        assert!(matches!(command("show everything"), Some(Command::Usage(_))));
        assert!(matches!(command("status"), Some(Command::Usage(_))));
        // JavaScript stays JavaScript.
        for js in [
            "count = 5",
            "status(x)",
            "delete obj.prop",
            "start + 1",
            "my_pipeline.stats()",
            "print('show dbs')",
            "show",
            "help()",
        ] {
            assert!(!matches!(command(js), Some(Command::Js(_))), "{js}");
        }
    }

    #[test]
    fn the_brief_scenario_a_text_is_mended() {
        let chunks = split(BRIEF_A);
        assert_eq!(chunks.len(), 3, "{chunks:#?}");
        let first = repair(&chunks[0].text, chunks[0].line).unwrap();
        assert_eq!(first.notes, ["removed the '>' prompt on line 1"]);
        assert!(first.text.starts_with("createConnection( {"));
        let second = repair(&chunks[1].text, chunks[1].line).unwrap();
        assert_eq!(
            second.notes,
            [
                "ignored a stray ` on line 9",
                "removed the '>' prompt on line 10",
                "closed the quote left open on line 12",
                "added a missing comma after line 14",
                "added a missing comma after line 15",
            ]
        );
        assert!(second.text.contains("ip: 'demodb.tapdata.net',\n"), "{}", second.text);
        assert!(second.text.contains("user: \"demo\",\n"));
        assert!(second.text.contains("password: \"xxxxxx\",\t\t\t\n"));
        assert!(second.text.contains("db: \"analyticaldb\"\t"));
        let third = repair(&chunks[2].text, chunks[2].line).unwrap();
        assert!(third.text.trim().is_empty());
        assert_eq!(repair("var ok = {a: 1,\n b: 2}", 1), None);
    }

    #[test]
    fn hash_comments_and_daas_flags_of_scenario_b() {
        let r =
            repair("}, { DaaSDB:true});    # Note: DaaSDB flag indicates this is db used by the iDaaS", 7)
                .unwrap();
        assert_eq!(r.text, "}, { DaaSDB:true});    ");
        assert_eq!(r.notes, ["dropped the # comment on line 7"]);
        assert_eq!(comment_start("x = '#not'"), None);
    }

    #[test]
    fn passwords_never_reach_the_history() {
        assert_eq!(
            redact("createConnection({alias: \"a\", password: \"s3cr\\\"et\", db: \"crm\"})"),
            "createConnection({alias: \"a\", password: \"***\", db: \"crm\"})"
        );
        assert_eq!(
            redact("{\"password\": 'x', Password='y', user_password: `z`}"),
            "{\"password\": '***', Password='***', user_password: `z`}"
        );
        assert_eq!(redact("password: 'open,\nnext"), "password: '***\nnext");
        assert_eq!(redact("var password = pw; passwordless: 'k'"), "var password = pw; passwordless: 'k'");
        assert_eq!(redact(BRIEF_A).matches("***").count(), 2);
        assert!(!redact(BRIEF_A).contains("xxxxxx"));
    }
}
