//! Logging set-up: tracing-subscriber with `RUST_LOG` filtering (default `info`), as text or JSON
//! lines on standard error. Lines go through a background writer so that no call waits on a write
//! to standard error; nothing is dropped (the writer applies back-pressure when its buffer is full).
//! The background writer gathers the lines waiting for it into one buffer and writes them with one
//! system call, flushing whenever it has caught up; when that batch was large it then rests a
//! millisecond ([`LOG_PAUSE`]): a line is on standard error within about a millisecond, and a busy
//! server pays neither a `write` nor a wake-up of the writer per line.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FormatFields, MakeWriter, SubscriberBuilder};

/// UTC timestamps as RFC 3339 with microseconds (`2026-11-27T04:01:25.554395Z`, the format of
/// tracing-subscriber's default timer), with the date-and-seconds part formatted once per second
/// per thread: every call writes a log line, and formatting the full date each time showed in
/// the profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct UtcMicros;

thread_local! {
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, writer: &mut Writer<'_>) -> std::fmt::Result {
        utc_now(|seconds, micros| {
            writer.write_str(seconds)?;
            writer.write_char('.')?;
            writer.write_str(micros)?;
            writer.write_char('Z')
        })
    }
}

/// The current UTC time as RFC 3339 with microseconds (`2026-11-27T04:01:25.554395Z`), as the log
/// lines carry it; the audit trail's record times too.
pub fn utc_now_rfc3339() -> String {
    utc_now(|seconds, micros| {
        let mut text = String::with_capacity(seconds.len() + 8);
        text.push_str(seconds);
        text.push('.');
        text.push_str(micros);
        text.push('Z');
        text
    })
}

/// Calls `write` with the current UTC time's date and seconds (`2026-11-27T04:01:25`, formatted
/// once per second per thread) and its six-digit microseconds.
fn utc_now<T>(write: impl FnOnce(&str, &str) -> T) -> T {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    let mut fraction = [b'0'; 6];
    let mut rest = now.subsec_micros();
    for slot in fraction.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let micros = std::str::from_utf8(&fraction).unwrap_or("000000");
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != seconds {
            let text = i64::try_from(seconds)
                .ok()
                .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
                .map_or_else(String::new, |at| {
                    format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                        at.year(),
                        u8::from(at.month()),
                        at.day(),
                        at.hour(),
                        at.minute(),
                        at.second()
                    )
                });
            *cache = (seconds, text);
        }
        write(&cache.1, micros)
    })
}

/// The fields of a text log line: the message first, then `name=value` pairs separated by spaces,
/// as tracing-subscriber's default writes them, but written directly: the default styles every
/// field name through its ANSI painter even with colours off and formats every value through
/// `write!`, which made the one line each call logs cost as much as encoding its plan. A string
/// value is written bare when it is made of letters, digits and `. _ : - / @ +` only, else quoted
/// and escaped (`Debug`); any other value is written with `Debug`, control characters escaped, so
/// no field can forge a line or drive a terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    empty: bool,
    result: std::fmt::Result,
}

/// Passes text through with control characters escaped.
struct Escaping<'a, 'writer>(&'a mut Writer<'writer>);

impl std::fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        if !text.chars().any(char::is_control) {
            return self.0.write_str(text);
        }
        for character in text.chars() {
            if character.is_control() {
                write!(self.0, "{}", character.escape_default())?;
            } else {
                self.0.write_char(character)?;
            }
        }
        Ok(())
    }
}

/// Writes a string field's value as [`TextFields`] does: bare when [`is_bare`], else quoted and
/// escaped (`Debug`).
fn write_value(out: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    if is_bare(value) {
        out.write_str(value)
    } else {
        write!(out, "{value:?}")
    }
}

fn is_bare(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._:-/@+".contains(&byte))
}

impl TextVisitor<'_> {
    /// Starts a field: the separating space, then `name=` unless it is the message. False for
    /// fields that are not written (log-crate metadata) or after an error.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !self.empty {
            self.result = self.writer.write_char(' ');
        }
        self.empty = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaping(&mut self.writer).write_str(value)
        } else {
            write_value(&mut self.writer, value)
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.start(field) {
            return;
        }
        self.result = write_u64(&mut self.writer, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = write!(Escaping(&mut self.writer), "{value:?}");
    }

    /// An error and, like the default, its chain of sources: `error=… error.sources=[…, …]`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        let mut out = Escaping(&mut self.writer);
        self.result = write!(out, "{value}");
        if let Some(mut source) = value.source() {
            let name = field.name();
            self.result = self
                .result
                .and_then(|()| write!(out, " {name}.sources=[{source}"));
            while let Some(next) = source.source() {
                self.result = self.result.and_then(|()| write!(out, ", {next}"));
                source = next;
            }
            self.result = self.result.and_then(|()| out.write_char(']'));
        }
    }
}

/// Writes `value` in decimal without going through `fmt`.
fn write_u64(out: &mut impl std::fmt::Write, value: u64) -> std::fmt::Result {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.write_str(std::str::from_utf8(&digits[at..]).unwrap_or("?"))
}

/// The writer of the text format's lines, for [`call_line`]; set by [`init`] for the text format.
static CALL_LINE_WRITER: std::sync::OnceLock<NonBlocking> = std::sync::OnceLock::new();

thread_local! {
    /// This thread's handle on [`CALL_LINE_WRITER`] and the line being written.
    static CALL_LINE: RefCell<Option<(NonBlocking, String)>> = const { RefCell::new(None) };
}

/// Writes a handler's call line — `call rpc=… code=… latency_us=… caller=… case_id=…` at INFO —
/// straight to the text format's writer, byte for byte the line `tracing::info!` would produce
/// through [`init`]'s subscriber (timestamp, level, message, fields as [`TextFields`] writes them;
/// the handlers log no spans). Through tracing, most of the line's cost was the formatting
/// machinery around these few fields (docs/perf/decisions/004-call-line-without-tracing.md).
/// The caller checks that the filter admits the event where it logs (`tracing::event_enabled!`
/// with the event's level and field names); false when this path is not installed (JSON lines,
/// or no [`init`] in this process), and the caller then logs through tracing.
pub fn call_line(rpc: &str, code: &str, latency_us: u64, caller: &str, case_id: &str) -> bool {
    let Some(writer) = CALL_LINE_WRITER.get() else {
        return false;
    };
    // `try_with`: a thread being torn down has no locals left; tracing then writes the line.
    CALL_LINE
        .try_with(|slot| {
            let Ok(mut slot) = slot.try_borrow_mut() else {
                return false;
            };
            let (writer, line) =
                slot.get_or_insert_with(|| (writer.clone(), String::with_capacity(256)));
            line.clear();
            let formatted = format_call_line(line, rpc, code, latency_us, caller, case_id);
            // As tracing-subscriber does, a line that cannot be written is not reported further.
            if formatted.is_ok() {
                let _ = std::io::Write::write_all(writer, line.as_bytes());
            }
            true
        })
        .unwrap_or(false)
}

/// The call line after its timestamp, as the text format writes it.
fn format_call_line(
    line: &mut String,
    rpc: &str,
    code: &str,
    latency_us: u64,
    caller: &str,
    case_id: &str,
) -> std::fmt::Result {
    utc_now(|seconds, micros| {
        line.push_str(seconds);
        line.push('.');
        line.push_str(micros);
    });
    line.push_str("Z  INFO call rpc=");
    write_value(line, rpc)?;
    line.push_str(" code=");
    write_value(line, code)?;
    line.push_str(" latency_us=");
    write_u64(line, latency_us)?;
    line.push_str(" caller=");
    write_value(line, caller)?;
    line.push_str(" case_id=");
    write_value(line, case_id)?;
    line.push('\n');
    Ok(())
}

/// Size of the background writer's buffer: lines are written when it fills or when the writer has
/// caught up with the lines queued for it (tracing-appender flushes after each drained batch).
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// How long the background writer rests after writing out a batch of lines: lines logged
/// meanwhile queue up without waking it, and are written together when it comes back.
const LOG_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Lines written in one batch from which the writer takes the server to be busy and rests; resting
/// after every batch made a single caller slower (docs/perf/decisions/003-paced-log-writer.md).
const LOG_BUSY_LINES: usize = 8;

/// The background writer's output: buffered standard error that rests `pause` after a flush that
/// wrote `busy_lines` lines or more. tracing-appender's worker blocks on its queue once it has
/// drained it, so every line logged while it waits wakes it — under load nearly one wake-up (a
/// futex call by the answering thread, a cross-CPU wake-up) per call. Resting after a busy flush
/// lets the lines of the next millisecond gather without waking it; a line then reaches standard
/// error within about a millisecond. A flush of a few lines does not rest: a lightly loaded server
/// gains nothing from it, and was slower with it (docs/perf/decisions/003-paced-log-writer.md).
struct PacedWriter<W: std::io::Write> {
    inner: std::io::BufWriter<W>,
    pause: std::time::Duration,
    busy_lines: usize,
    lines: usize,
}

impl<W: std::io::Write> PacedWriter<W> {
    fn new(inner: W) -> PacedWriter<W> {
        PacedWriter {
            inner: std::io::BufWriter::with_capacity(LOG_BUFFER_BYTES, inner),
            pause: LOG_PAUSE,
            busy_lines: LOG_BUSY_LINES,
            lines: 0,
        }
    }

    /// Whether the lines written since the last flush make a busy batch; starts the next count.
    fn take_busy(&mut self) -> bool {
        std::mem::take(&mut self.lines) >= self.busy_lines
    }
}

impl<W: std::io::Write> std::io::Write for PacedWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.lines += 1;
        self.inner.write(bytes)
    }

    /// tracing-appender writes each line with one `write_all`.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.lines += 1;
        self.inner.write_all(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.inner.flush();
        if self.take_busy() {
            std::thread::sleep(self.pause);
        }
        flushed
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Keep the returned guard alive until exit: dropping it flushes
/// the lines still buffered. Calling it twice is harmless (the second call installs nothing).
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .finish(PacedWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match format {
        LogFormat::Text => {
            let call_lines = writer.clone();
            text_lines(tracing_subscriber::fmt().with_writer(writer))
                .with_env_filter(filter)
                .try_init()
                .map(|()| {
                    let _ = CALL_LINE_WRITER.set(call_lines);
                })
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_timer(UtcMicros)
            .with_ansi(false)
            .with_target(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
    guard
}

/// The text format's lines, as [`init`] sets them up (and the tests check [`call_line`] against):
/// UTC microsecond timestamps, no colours, no target, fields by [`TextFields`].
fn text_lines<W>(
    builder: SubscriberBuilder<DefaultFields, Format, LevelFilter, W>,
) -> SubscriberBuilder<TextFields, Format<Full, UtcMicros>, LevelFilter, W>
where
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    builder
        .with_timer(UtcMicros)
        .with_ansi(false)
        .with_target(false)
        .fmt_fields(TextFields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines `emit` logs at INFO through a text subscriber with `fields`, without timestamps.
    fn lines<N>(fields: N, emit: impl FnOnce()) -> String
    where
        N: for<'writer> FormatFields<'writer> + Send + Sync + 'static,
    {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(Arc::clone(&sink)))
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_fields_write_the_call_line_as_the_default_format_does() {
        let call = || {
            tracing::info!(
                rpc = "Recommend",
                code = "InvalidArgument",
                latency_us = 96_u64,
                caller = "anonymous",
                case_id = "ivc-middle-postop-r1",
                "call"
            );
            tracing::info!(
                version = 4_i64,
                ready = true,
                "audit schema migration applied"
            );
        };
        let ours = lines(TextFields, call);
        assert_eq!(
            ours,
            " INFO call rpc=Recommend code=InvalidArgument latency_us=96 caller=anonymous case_id=ivc-middle-postop-r1\n \
             INFO audit schema migration applied version=4 ready=true\n"
        );
        // The default differs only in quoting bare strings.
        let default = lines(tracing_subscriber::fmt::format::DefaultFields::new(), call);
        assert_eq!(ours.replace('"', ""), default.replace('"', ""));
        for value in [0_u64, 7, 10, u64::MAX] {
            let line = lines(TextFields, || tracing::info!(n = value, "x"));
            assert_eq!(line, format!(" INFO x n={value}\n"));
        }
    }

    #[test]
    fn the_direct_call_line_is_the_line_tracing_writes() {
        for (rpc, code, latency_us, caller, case_id) in [
            (
                "Recommend",
                "Ok",
                96_u64,
                "anonymous",
                "ivc-middle-postop-r1",
            ),
            (
                "CheckPrescription",
                "InvalidArgument",
                0,
                "ris-gateway",
                "<invalid>",
            ),
            ("GetGuideline", "Unavailable", u64::MAX, "tps", ""),
            ("Recommend", "Ok", 10, "Jane Doe", "a\"b\\c"),
        ] {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&buffer);
            // The subscriber `init` installs for the text format, writing to a buffer.
            let subscriber = text_lines(
                tracing_subscriber::fmt().with_writer(move || Capture(Arc::clone(&sink))),
            )
            .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(rpc, code, latency_us, caller, case_id, "call");
            });
            let traced = String::from_utf8(buffer.lock().expect("buffer").clone()).expect("utf-8");
            let mut direct = String::new();
            format_call_line(&mut direct, rpc, code, latency_us, caller, case_id).expect("formats");
            // Equal after the timestamps (27 characters: date, time, microseconds, `Z`).
            assert_eq!(direct.len(), traced.len(), "{direct}{traced}");
            assert_eq!(direct[27..], traced[27..], "{direct}{traced}");
            assert!(
                direct[..27].ends_with('Z') && direct.ends_with('\n'),
                "{direct}"
            );
        }
        // Without `init` in this process the direct path is not installed: callers use tracing.
        if CALL_LINE_WRITER.get().is_none() {
            assert!(!call_line("Recommend", "Ok", 1, "anonymous", "x"));
        }
    }

    #[test]
    fn text_fields_quote_and_escape_what_could_forge_a_line() {
        let line = lines(TextFields, || {
            let error = std::io::Error::other("disk\nfull");
            tracing::warn!(
                case_id = "Jane Doe",
                empty = "",
                detail = %"a\r\nINFO forged",
                error = &error as &(dyn std::error::Error + 'static),
                "\u{1b}[31mred"
            );
        });
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line}");
        assert!(line.contains("case_id=\"Jane Doe\" empty=\"\""), "{line}");
        assert!(line.contains("detail=a\\r\\nINFO forged"), "{line}");
        assert!(line.contains("error=disk\\nfull"), "{line}");
    }

    #[test]
    fn the_paced_writer_holds_lines_until_it_flushes_and_then_writes_them_all() {
        use std::io::Write as _;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut writer = PacedWriter::new(Capture(output.clone()));
        writer.pause = std::time::Duration::ZERO;
        // A few lines are not a busy batch; LOG_BUSY_LINES are; each flush starts a new count.
        for _ in 1..LOG_BUSY_LINES {
            writer.write_all(b"line\n").expect("write");
        }
        assert!(!writer.take_busy());
        for _ in 0..LOG_BUSY_LINES {
            writer.write_all(b"line\n").expect("write");
        }
        assert!(writer.take_busy());
        assert!(!writer.take_busy());
        writer.flush().expect("flush");
        output.lock().expect("output").clear();

        writer.write_all(b"first line\n").expect("write");
        writer.write_all(b"second line\n").expect("write");
        assert!(
            output.lock().expect("output").is_empty(),
            "written before a flush"
        );
        writer.flush().expect("flush");
        assert_eq!(
            output.lock().expect("output").as_slice(),
            b"first line\nsecond line\n"
        );
        // More than the buffer holds goes out without waiting for a flush, in order.
        let long = vec![b'x'; LOG_BUFFER_BYTES + 10];
        writer.write_all(&long).expect("write");
        assert_eq!(output.lock().expect("output").len(), 23 + long.len());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        for _ in 0..3 {
            let before = time::OffsetDateTime::now_utc();
            let text = utc_now_rfc3339();
            let after = time::OffsetDateTime::now_utc();
            assert_eq!(text.len(), 27, "{text}");
            let parsed =
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .expect("RFC 3339");
            // Truncated to microseconds, so compare at that resolution.
            let micros = |at: time::OffsetDateTime| at.unix_timestamp_nanos() / 1000;
            assert!(
                (micros(before)..=micros(after)).contains(&micros(parsed)),
                "{text}"
            );
        }
        for _ in 0..3 {
            let before = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut text = String::new();
            UtcMicros
                .format_time(&mut Writer::new(&mut text))
                .expect("formats");
            let after = time::OffsetDateTime::now_utc().unix_timestamp();
            assert_eq!(text.len(), 27, "{text}");
            let parsed =
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .expect("RFC 3339");
            assert!(
                (before..=after).contains(&parsed.unix_timestamp()),
                "{text}"
            );
            assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
        }
    }
}
