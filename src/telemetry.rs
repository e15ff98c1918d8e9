//! Logging set-up: tracing-subscriber with `RUST_LOG` filtering (default `info`), as text or JSON
//! lines on standard error. Lines go through a background writer so that no call waits on a write
//! to standard error; nothing is dropped (the writer applies back-pressure when its buffer is full).
//! The background writer gathers the lines waiting for it into one buffer and writes them with one
//! system call, flushing whenever it has caught up, so a line is on standard error as soon as the
//! writer has seen it, and a busy server does not pay a `write` per line.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = now.as_secs();
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
            writer.write_str(&cache.1)?;
            let micros = now.subsec_micros();
            let mut fraction = [b'0'; 6];
            let mut rest = micros;
            for slot in fraction.iter_mut().rev() {
                *slot = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            writer.write_char('.')?;
            writer.write_str(std::str::from_utf8(&fraction).unwrap_or("000000"))?;
            writer.write_char('Z')
        })
    }
}

/// Size of the background writer's buffer: lines are written when it fills or when the writer has
/// caught up with the lines queued for it (tracing-appender flushes after each drained batch).
const LOG_BUFFER_BYTES: usize = 64 * 1024;

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
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stderr(),
        ));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(UtcMicros)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
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
