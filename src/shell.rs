//! The analyst's SQL shell (`credtrail sql`): statements split on `;`,
//! backslash commands (`\d`, `\dt`, `\q`, …), `{name}` parameters, results
//! rendered as an aligned table, CSV, JSON lines or a Parquet file.
//!
//! The same loop serves `-c`, `-f`, a script on stdin and the interactive
//! terminal; only what happens after an error differs (a script stops, the
//! terminal and stdin go on).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;

use crate::analyst::{self, AnalystError, SessionOptions};

/// What went wrong. Each message is complete in itself (no source chain to
/// append), so `error: {e}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{0}")]
    Analyst(AnalystError),
    /// A statement's error: DataFusion's own message, which says what is wrong.
    #[error("{}", .0.strip_backtrace())]
    Query(DataFusionError),
    #[error("{at}: {error}")]
    Statement { at: String, error: Box<ShellError> },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("writing results: {0}")]
    Write(std::io::Error),
    #[error("formatting results: {0}")]
    Arrow(arrow::error::ArrowError),
    #[error("{path}: writing Parquet: {error}")]
    Parquet { path: PathBuf, error: parquet::errors::ParquetError },
    #[error("{{{0}}} has no value: pass --param {0}=VALUE (or \\set {0} VALUE in the shell)")]
    MissingParam(String),
    #[error("--format parquet needs --output FILE")]
    ParquetNeedsOutput,
    #[error("--output is for --format parquet; redirect stdout for the other formats")]
    OutputNeedsParquet,
    #[error("{0}")]
    Meta(String),
    #[error("cancelled")]
    Cancelled,
    #[error("line editing: {0}")]
    Readline(rustyline::error::ReadlineError),
    #[error("{0} statement(s) failed")]
    Failed(usize),
}

macro_rules! from_error {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for ShellError {
            fn from(e: $t) -> Self {
                ShellError::$v(e)
            }
        })*
    };
}

from_error!(
    AnalystError => Analyst,
    DataFusionError => Query,
    std::io::Error => Write,
    arrow::error::ArrowError => Arrow,
    rustyline::error::ReadlineError => Readline,
);

/// How results are written: the `--format` value and the printer of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned table (the default on a terminal).
    Table,
    /// Comma-separated values with a header line (the default in a pipe).
    Csv,
    /// One JSON object per row, every column present (null when null).
    Json,
    /// A Parquet file at `--output`, written to a temporary name and renamed.
    Parquet,
}

impl Format {
    /// A table for a person at a terminal, CSV for a program reading a pipe.
    pub fn for_stdout() -> Format {
        if std::io::stdout().is_terminal() { Format::Table } else { Format::Csv }
    }
}

/// Where statements come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// `-c`: one or more `;`-separated statements; stops at the first error.
    Command(String),
    /// `-f`: a file of statements; stops at the first error.
    File(PathBuf),
    /// Statements piped in; an error is reported and the next statement runs.
    Stdin,
    /// The line-editing shell on a terminal.
    Interactive,
}

impl Input {
    /// `-c`, else `-f`, else the interactive shell when both ends are a terminal, else stdin.
    pub fn choose(command: Option<String>, file: Option<PathBuf>) -> Input {
        match (command, file) {
            (Some(c), _) => Input::Command(c),
            (None, Some(f)) => Input::File(f),
            _ if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() => Input::Interactive,
            _ => Input::Stdin,
        }
    }
}

pub struct ShellOptions {
    pub lake: PathBuf,
    pub session: SessionOptions,
    pub format: Format,
    /// The Parquet file to write (`--format parquet`).
    pub output: Option<PathBuf>,
    /// `{name}` substitutions, from `--param name=value`.
    pub params: Vec<(String, String)>,
    /// At a terminal, what cancels the running statement (the caller's
    /// Ctrl-C): called once per statement. None: statements run to the end.
    pub interrupt: Option<Interrupt>,
}

/// A future that resolves when the running statement is to be cancelled.
pub type Interruption = Pin<Box<dyn Future<Output = ()>>>;

/// Makes the [`Interruption`] of each statement, as the shutdown of `watch`
/// and `serve` is passed in: the shell owns no signal handling of its own.
pub type Interrupt = Box<dyn Fn() -> Interruption + Send>;

/// One thing to do: a statement (with the line it starts on) or a backslash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Statement { sql: String, line: usize },
    Meta(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Code,
    Single,
    Double,
    Block,
}

/// Splits text fed line by line into statements at `;` outside quotes and
/// comments, and picks out backslash commands (a line starting with `\`
/// between statements).
#[derive(Debug, Default)]
pub struct Splitter {
    buf: String,
    lex: Lex,
    /// Whether `buf` holds anything but whitespace and comments.
    content: bool,
    line: usize,
    start: usize,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Whether a statement is under way (for the continuation prompt).
    pub fn pending(&self) -> bool {
        self.content || self.lex != Lex::Code
    }

    /// Forgets a statement under way (Ctrl-C at the prompt).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.lex = Lex::Code;
        self.content = false;
    }

    /// Feeds any amount of text.
    pub fn push_text(&mut self, text: &str) -> Vec<Item> {
        text.lines().flat_map(|l| self.push_line(l)).collect()
    }

    /// Feeds one line (without its newline); returns what it completed.
    pub fn push_line(&mut self, line: &str) -> Vec<Item> {
        self.line += 1;
        if !self.pending() && line.trim_start().starts_with('\\') {
            self.clear();
            return vec![Item::Meta(line.trim().to_string())];
        }
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match self.lex {
                Lex::Code => match c {
                    ';' => {
                        if self.content {
                            out.push(Item::Statement { sql: self.buf.trim().to_string(), line: self.start });
                        }
                        self.buf.clear();
                        self.content = false;
                        continue;
                    }
                    '-' if chars.peek() == Some(&'-') => {
                        // A line comment: the rest of the line, kept so the text stays as written.
                        self.buf.push(c);
                        self.buf.extend(chars.by_ref());
                        break;
                    }
                    '/' if chars.peek() == Some(&'*') => {
                        self.buf.push(c);
                        self.buf.push(chars.next().expect("peeked"));
                        self.lex = Lex::Block;
                        continue;
                    }
                    '\'' | '"' => {
                        self.lex = if c == '\'' { Lex::Single } else { Lex::Double };
                        self.mark_content();
                    }
                    c if !c.is_whitespace() => self.mark_content(),
                    _ => {}
                },
                // A doubled quote closes and reopens, which is the same thing.
                Lex::Single if c == '\'' => self.lex = Lex::Code,
                Lex::Double if c == '"' => self.lex = Lex::Code,
                Lex::Block if c == '*' && chars.peek() == Some(&'/') => {
                    self.buf.push(c);
                    self.buf.push(chars.next().expect("peeked"));
                    self.lex = Lex::Code;
                    continue;
                }
                _ => {}
            }
            self.buf.push(c);
        }
        self.buf.push('\n');
        out
    }

    fn mark_content(&mut self) {
        if !self.content {
            self.content = true;
            self.start = self.line;
        }
    }

    /// The last statement when the text ends without `;`.
    pub fn finish(&mut self) -> Option<Item> {
        let item = self.content.then(|| Item::Statement { sql: self.buf.trim().to_string(), line: self.start });
        self.clear();
        item
    }
}

/// Replaces each `{name}` with its value, single quotes doubled, so a
/// parameter belongs inside a string literal: `WHERE credential_id = '{credential}'`.
/// Shared SQL fragments (`{billed_events}`) are expanded first, as detectors' are.
pub fn substitute(sql: &str, params: &[(String, String)]) -> Result<String, ShellError> {
    let sql = crate::engine::expand_fragments(sql);
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        let is_param =
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && after[name_len..].starts_with('}');
        if !is_param {
            out.push_str(&rest[..=open]);
            rest = after;
            continue;
        }
        let value = params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| ShellError::MissingParam(name.to_string()))?;
        out.push_str(&rest[..open]);
        out.push_str(&value.replace('\'', "''"));
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What the loop does after an item.
enum Next {
    Go,
    Quit,
}

const HELP: &str = "\
  \\d            every table and view with its columns
  \\d NAME       the columns of one table
  \\dt           tables and views
  \\i FILE       run the statements in FILE
  \\set [N V]    set parameter {N} to V (no arguments: list them)
  \\timing       show or hide how long each statement took
  \\q            quit
Statements end with `;` and may span lines; {name} is replaced by a parameter's value.";

/// A session over one lake and the settings of one `credtrail sql` run.
pub struct Shell {
    /// The process's one runtime: the shell blocks on it from a blocking-pool thread.
    rt: tokio::runtime::Handle,
    ctx: SessionContext,
    /// What statements may do besides query: the session is the shell's own; files only with --allow-files.
    permit: analyst::Permit,
    notes: Vec<String>,
    format: Format,
    output: Option<PathBuf>,
    params: Vec<(String, String)>,
    timing: bool,
    /// At a terminal: Ctrl-C cancels the running statement instead of ending the process.
    interactive: bool,
    interrupt: Option<Interrupt>,
}

impl Shell {
    /// Opens the lake and registers its tables, views and functions. Call it
    /// on a runtime's blocking pool (`spawn_blocking`): the shell blocks on
    /// that runtime for each statement.
    pub fn open(opts: ShellOptions) -> Result<Shell, ShellError> {
        match (opts.format, &opts.output) {
            (Format::Parquet, None) => return Err(ShellError::ParquetNeedsOutput),
            (f, Some(_)) if f != Format::Parquet => return Err(ShellError::OutputNeedsParquet),
            _ => {}
        }
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| ShellError::Meta(format!("the SQL shell needs a tokio runtime: {e}")))?;
        let (ctx, notes) = rt.block_on(analyst::analyst_context(&opts.lake, &opts.session))?;
        let permit = analyst::Permit { session_changes: true, files: opts.session.allow_files };
        Ok(Shell {
            rt,
            ctx,
            permit,
            notes,
            format: opts.format,
            output: opts.output,
            params: opts.params,
            timing: false,
            interactive: false,
            interrupt: opts.interrupt,
        })
    }

    /// Runs statements from `input`, results to `out`.
    pub fn run(&mut self, input: Input, out: &mut dyn Write) -> Result<(), ShellError> {
        let r = match input {
            Input::Command(text) => self.run_script(&text, "-c", out),
            Input::File(path) => self.run_file(&path, out),
            Input::Stdin => self.run_stdin(out),
            Input::Interactive => self.run_interactive(out),
        };
        match r {
            // The reader went away (`| head`): nothing left to say.
            Err(e) if is_broken_pipe(&e) => Ok(()),
            r => r,
        }
    }

    fn run_file(&mut self, path: &Path, out: &mut dyn Write) -> Result<(), ShellError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ShellError::Io { path: path.to_path_buf(), error: source })?;
        self.run_script(&text, &path.display().to_string(), out)
    }

    /// Runs every statement of `text` in order and stops at the first error.
    fn run_script(&mut self, text: &str, origin: &str, out: &mut dyn Write) -> Result<(), ShellError> {
        let mut split = Splitter::new();
        let items = split.push_text(text).into_iter().chain(split.finish());
        for item in items {
            let at = match &item {
                Item::Statement { line, .. } => format!("{origin}: statement at line {line}"),
                Item::Meta(m) => format!("{origin}: {m}"),
            };
            match self.item(item, out) {
                Ok(Next::Go) => {}
                Ok(Next::Quit) => break,
                Err(e) => return Err(ShellError::Statement { at, error: Box::new(e) }),
            }
        }
        Ok(())
    }

    /// Statements piped in: report each error and go on; fail at the end if any did.
    fn run_stdin(&mut self, out: &mut dyn Write) -> Result<(), ShellError> {
        let mut split = Splitter::new();
        let mut failed = 0;
        for line in std::io::stdin().lock().lines() {
            for item in split.push_line(&line?) {
                if let Next::Quit = self.item_going_on(item, out, &mut failed)? {
                    return finish_failed(failed);
                }
            }
        }
        if let Some(item) = split.finish() {
            self.item_going_on(item, out, &mut failed)?;
        }
        finish_failed(failed)
    }

    /// Runs an item, and reports its error on stderr rather than stopping.
    fn item_going_on(&mut self, item: Item, out: &mut dyn Write, failed: &mut usize) -> Result<Next, ShellError> {
        match self.item(item, out) {
            Err(e) if is_broken_pipe(&e) => Err(e),
            Err(e) => {
                *failed += 1;
                out.flush()?;
                eprintln!("error: {e}");
                Ok(Next::Go)
            }
            ok => ok,
        }
    }

    /// The terminal shell: line editing, history in ~/.credtrail_history,
    /// Ctrl-C cancels the statement being typed or run, Ctrl-D quits.
    fn run_interactive(&mut self, out: &mut dyn Write) -> Result<(), ShellError> {
        use rustyline::error::ReadlineError;
        self.timing = true;
        self.interactive = true;
        let mut rl = rustyline::DefaultEditor::new()?;
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".credtrail_history"));
        if let Some(h) = &history {
            let _ = rl.load_history(h);
        }
        eprintln!("credtrail sql: \\dt lists the tables, \\? the commands, \\q quits; end statements with ;");
        for n in &self.notes {
            eprintln!("note: {n}");
        }
        let mut split = Splitter::new();
        let mut lines: Vec<String> = Vec::new();
        loop {
            let prompt = if split.pending() { "     ...> " } else { "credtrail> " };
            let line = match rl.readline(prompt) {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => {
                    split.clear();
                    lines.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            lines.push(line.clone());
            let items = split.push_line(&line);
            if !items.is_empty() || !split.pending() {
                // Whole statements go into the history, so one arrow key brings a multi-line query back.
                let entry = lines.join("\n");
                if !entry.trim().is_empty() {
                    let _ = rl.add_history_entry(entry.trim());
                }
                lines.clear();
            }
            let mut quit = false;
            for item in items {
                quit |= matches!(self.item_going_on(item, out, &mut 0)?, Next::Quit);
            }
            if quit {
                break;
            }
        }
        if let Some(h) = &history {
            let _ = rl.save_history(h);
        }
        Ok(())
    }

    fn item(&mut self, item: Item, out: &mut dyn Write) -> Result<Next, ShellError> {
        match item {
            Item::Meta(m) => self.meta(&m, out),
            Item::Statement { sql, .. } => {
                let sql = substitute(&sql, &self.params)?;
                let started = Instant::now();
                let rows = self.statement(&sql, out)?;
                out.flush()?;
                if self.timing {
                    let secs = started.elapsed().as_secs_f64();
                    match rows {
                        Some(n) => eprintln!("({n} row{}, {secs:.3} s)", if n == 1 { "" } else { "s" }),
                        None => eprintln!("OK ({secs:.3} s)"),
                    }
                }
                Ok(Next::Go)
            }
        }
    }

    /// Runs one statement; the number of rows, or `None` for a statement
    /// that returns no columns (CREATE VIEW, SET, …).
    fn statement(&self, sql: &str, out: &mut dyn Write) -> Result<Option<usize>, ShellError> {
        let interrupt = self.interrupt.as_ref().filter(|_| self.interactive);
        let run = async {
            let df = analyst::sql(&self.ctx, sql, self.permit).await?;
            self.render(df, out).await
        };
        self.rt.block_on(async {
            let Some(interrupt) = interrupt else {
                return run.await;
            };
            // Made inside the runtime: a signal handler is installed there.
            let interrupted = interrupt();
            tokio::select! {
                r = run => r,
                () = interrupted => Err(ShellError::Cancelled),
            }
        })
    }

    async fn render(&self, df: DataFrame, out: &mut dyn Write) -> Result<Option<usize>, ShellError> {
        let schema = Arc::new(df.schema().as_arrow().clone());
        if schema.fields().is_empty() {
            df.collect().await?;
            return Ok(None);
        }
        let mut rows = 0;
        match self.format {
            Format::Table => {
                let batches = df.collect().await?;
                rows = batches.iter().map(|b| b.num_rows()).sum();
                let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)?;
                writeln!(out, "{table}")?;
            }
            Format::Csv => {
                let mut stream = df.execute_stream().await?;
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
                let mut any = false;
                while let Some(b) = stream.next().await {
                    let b = textual(&b?)?;
                    rows += b.num_rows();
                    w.write(&b)?;
                    any = true;
                }
                if !any {
                    // The header alone, so an empty result still says what its columns are.
                    w.write(&textual(&RecordBatch::new_empty(schema))?)?;
                }
            }
            Format::Json => {
                let mut stream = df.execute_stream().await?;
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
                while let Some(b) = stream.next().await {
                    let b = b?;
                    rows += b.num_rows();
                    w.write(&b)?;
                }
                w.finish()?;
            }
            Format::Parquet => {
                let path = self.output.as_deref().ok_or(ShellError::ParquetNeedsOutput)?;
                rows = write_parquet(df, schema, path).await?;
                if self.timing {
                    eprintln!("wrote {rows} rows to {}", path.display());
                }
            }
        }
        Ok(Some(rows))
    }

    fn meta(&mut self, line: &str, out: &mut dyn Write) -> Result<Next, ShellError> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("\\?");
        let args: Vec<&str> = words.collect();
        match (cmd, args.as_slice()) {
            ("\\q" | "\\quit", _) => return Ok(Next::Quit),
            ("\\?" | "\\h" | "\\help", _) => writeln!(out, "{HELP}")?,
            ("\\dt", _) => self.list(out, false)?,
            ("\\d", []) => self.list(out, true)?,
            ("\\d", [name]) => self.describe(name, out)?,
            ("\\timing", []) => self.timing = !self.timing,
            ("\\timing", ["on"]) => self.timing = true,
            ("\\timing", ["off"]) => self.timing = false,
            ("\\set", []) => {
                for (k, v) in &self.params {
                    writeln!(out, "{k} = {v}")?;
                }
            }
            ("\\set", [name, value @ ..]) => {
                self.params.retain(|(k, _)| k != name);
                self.params.push((name.to_string(), value.join(" ")));
            }
            ("\\i", [path]) => self.run_file(Path::new(path), out)?,
            _ => return Err(ShellError::Meta(format!("unknown command {line}; \\? lists the commands"))),
        }
        Ok(Next::Go)
    }

    fn tables(&self) -> Result<Vec<analyst::TableInfo>, ShellError> {
        Ok(self.rt.block_on(analyst::list_tables(&self.ctx)).map_err(AnalystError::from)?)
    }

    /// `\dt` (names and kinds) or `\d` (with every column).
    fn list(&self, out: &mut dyn Write, columns: bool) -> Result<(), ShellError> {
        let tables = self.tables()?;
        let width = tables.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &tables {
            let kind = t.kind.to_lowercase();
            if !columns {
                writeln!(out, "{:width$}  {kind:5}  {} columns", t.name, t.columns.fields().len())?;
                continue;
            }
            let cols: Vec<String> =
                t.columns.fields().iter().map(|f| format!("{} {}", f.name(), type_name(f.data_type()))).collect();
            writeln!(out, "{} ({kind})", t.name)?;
            writeln!(out, "{}", wrap(&cols, "    ", 100))?;
        }
        for n in &self.notes {
            writeln!(out, "note: {n}")?;
        }
        Ok(())
    }

    /// `\d NAME`: one line per column.
    fn describe(&self, name: &str, out: &mut dyn Write) -> Result<(), ShellError> {
        let tables = self.tables()?;
        let t = tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ShellError::Meta(format!("no table or view named {name}; \\dt lists them")))?;
        let width = t.columns.fields().iter().map(|f| f.name().len()).max().unwrap_or(0);
        writeln!(out, "{} ({})", t.name, t.kind.to_lowercase())?;
        for f in t.columns.fields() {
            let null = if f.is_nullable() { "" } else { "  not null" };
            writeln!(out, "  {:width$}  {}{null}", f.name(), type_name(f.data_type()))?;
        }
        Ok(())
    }
}

fn finish_failed(failed: usize) -> Result<(), ShellError> {
    if failed == 0 { Ok(()) } else { Err(ShellError::Failed(failed)) }
}

fn is_broken_pipe(e: &ShellError) -> bool {
    match e {
        ShellError::Write(io) => io.kind() == std::io::ErrorKind::BrokenPipe,
        ShellError::Statement { error, .. } => is_broken_pipe(error),
        _ => false,
    }
}

/// A column type as an analyst thinks of it: a dictionary is its values.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Dictionary(_, v) => type_name(v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => format!("timestamp({unit}, {tz})"),
                None => format!("timestamp({unit})"),
            }
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("list<{}>", type_name(f.data_type()))
        }
        other => other.to_string().to_lowercase(),
    }
}

fn wrap(words: &[String], indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = indent.to_string();
    for (i, w) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() { format!("{w}, ") } else { w.clone() };
        if line.len() + piece.trim_end().len() > width && line.len() > indent.len() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_string();
        }
        line.push_str(&piece);
    }
    out.push_str(line.trim_end());
    out
}

/// CSV cannot hold lists or structs: those columns become their display text.
fn textual(b: &RecordBatch) -> Result<RecordBatch, ShellError> {
    let nested = |t: &DataType| t.is_nested();
    if !b.schema().fields().iter().any(|f| nested(f.data_type())) {
        return Ok(b.clone());
    }
    let opts = FormatOptions::default();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if nested(f.data_type()) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let s: StringArray = (0..c.len()).map(|i| c.is_valid(i).then(|| fmt.value(i).to_string())).collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(Arc::new(s));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Streams a result into `path` through a temporary file beside it, renamed
/// into place at the end, so a reader never sees half a file.
async fn write_parquet(df: DataFrame, schema: arrow::datatypes::SchemaRef, path: &Path) -> Result<usize, ShellError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |error| ShellError::Io { path: tmp.clone(), error };
    let pq = |error| ShellError::Parquet { path: path.to_path_buf(), error };
    let result = async {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(pq)?;
        let mut stream = df.execute_stream().await?;
        let mut rows = 0;
        while let Some(b) = stream.next().await {
            let b = b?;
            rows += b.num_rows();
            w.write(&b).map_err(pq)?;
        }
        let file = w.into_inner().map_err(pq)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|error| ShellError::Io { path: path.to_path_buf(), error })?;
        Ok(rows)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str, line: usize) -> Item {
        Item::Statement { sql: sql.into(), line }
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let mut s = Splitter::new();
        let text = "SELECT 1; SELECT 'a;b' AS \"x;y\";\n-- not; a statement\nSELECT /* ; */ 2\n  FROM t;\nSELECT 3";
        let mut items = s.push_text(text);
        items.extend(s.finish());
        assert_eq!(
            items,
            vec![
                stmt("SELECT 1", 1),
                stmt("SELECT 'a;b' AS \"x;y\"", 1),
                stmt("-- not; a statement\nSELECT /* ; */ 2\n  FROM t", 3),
                stmt("SELECT 3", 5),
            ]
        );
    }

    #[test]
    fn statements_span_lines_and_quotes_span_lines() {
        let mut s = Splitter::new();
        assert!(s.push_line("SELECT 'it''s").is_empty());
        assert!(s.pending());
        assert!(s.push_line("still; quoted'").is_empty());
        assert_eq!(s.push_line("AS v;"), vec![stmt("SELECT 'it''s\nstill; quoted'\nAS v", 1)]);
        assert!(!s.pending());
        // Empty statements and comment-only text are not statements.
        assert!(s.push_line(";; -- nothing").is_empty());
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn backslash_commands_only_between_statements() {
        let mut s = Splitter::new();
        assert_eq!(s.push_line("  \\d events"), vec![Item::Meta("\\d events".into())]);
        assert!(s.push_line("SELECT").is_empty());
        assert!(s.push_line("\\d").is_empty(), "inside a statement it is text");
        assert_eq!(s.push_line(";"), vec![stmt("SELECT\n\\d", 2)]);
        assert_eq!(s.push_line("\\q"), vec![Item::Meta("\\q".into())]);
    }

    #[test]
    fn parameters_are_substituted_quoted() {
        let p = vec![("credential".to_string(), "key_A".to_string()), ("who".to_string(), "O'Brien".to_string())];
        assert_eq!(
            substitute("SELECT '{credential}', '{who}', '{\"json\": 1}', 'a{2}'", &p).unwrap(),
            "SELECT 'key_A', 'O''Brien', '{\"json\": 1}', 'a{2}'"
        );
        let e = substitute("SELECT '{at}'", &p).unwrap_err();
        assert!(e.to_string().contains("--param at=VALUE"), "{e}");
    }

    #[test]
    fn type_names() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(type_name(&dict), "string");
        assert_eq!(type_name(&DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))), "timestamp(ms, UTC)");
        assert_eq!(type_name(&DataType::UInt16), "uint16");
    }
}
