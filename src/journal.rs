//! Part of the `sipdesk` binary, not the library: logging. Under systemd (stderr connected to
//! the journal) every tracing event goes to the journal through `systemd-journal-logger`, with
//! its fields as journal fields (`CALL=…`, `PEER=…`); elsewhere events are printed on stderr.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Forwards tracing events to the `log` crate, fields as key-values.
pub(crate) struct JournalLayer;

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.pairs
                .push((field.name().to_ascii_uppercase(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs
                .push((field.name().to_ascii_uppercase(), value.to_owned()));
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let pairs: Vec<(&str, &str)> = fields
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(metadata.target())
                .args(format_args!("{}", fields.message))
                .key_values(&pairs.as_slice())
                .build(),
        );
    }
}

/// Sets up logging: the journal under systemd, stderr otherwise. `SIPDESK_LOG` filters
/// (`info` by default for the daemon, `warn` for commands).
pub(crate) fn init(default: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPDESK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger
                .with_syslog_identifier("sipdesk".to_owned())
                .install()
                .is_ok()
            {
                log::set_max_level(log::LevelFilter::Trace);
                tracing_subscriber::registry()
                    .with(filter)
                    .with(JournalLayer)
                    .init();
                return;
            }
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}
