//! Part of the `sipdesk` binary, not the library: logging. Under systemd (stderr connected to
//! the journal) every tracing event goes to the journal through `systemd-journal-logger`, with
//! its fields as journal fields (`CALL=…`, `PEER=…`); elsewhere events are printed on stderr,
//! in colour only on a terminal.
//!
//! `SIPDESK_LOG` takes `RUST_LOG`-style directives, with one difference: a bare level is
//! sipdesk's own. `SIPDESK_LOG=debug` shows sipdesk's call events while its dependencies stay at
//! `warn`; a dependency speaks more only when named (`SIPDESK_LOG=debug,sqlx=debug` adds every
//! SQL statement the database driver runs).

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
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
    let filter = filter(std::env::var("SIPDESK_LOG").ok().as_deref(), default);
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
    // NO_COLOR: https://no-color.org (set and not empty).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(filter)
        .init();
}

/// The filter for `SIPDESK_LOG` (`None`: unset) over the command's default level. One that
/// cannot be read is said on stderr and the default used, so a typo never silences the log.
fn filter(spec: Option<&str>, default: &str) -> EnvFilter {
    let fallback = || EnvFilter::new(directives(default, default));
    match spec {
        None => fallback(),
        Some(spec) => EnvFilter::try_new(directives(spec, default)).unwrap_or_else(|error| {
            eprintln!(
                "warning: SIPDESK_LOG={spec:?} cannot be read ({error}); logging at {default}"
            );
            fallback()
        }),
    }
}

/// `SIPDESK_LOG` as `EnvFilter` directives: the last bare level (else `default`) becomes
/// `sipdesk`'s, everything else gets that level but at most `warn`, and the named directives
/// follow, so they win over both (`sipdesk::proxy=trace`, `sqlx=debug`).
fn directives(spec: &str, default: &str) -> String {
    let mut own: Option<LevelFilter> = None;
    let mut named = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.parse::<LevelFilter>() {
            Ok(level) => own = Some(level),
            Err(_) => named.push(directive),
        }
    }
    let own = own
        .or_else(|| default.parse().ok())
        .unwrap_or(LevelFilter::WARN);
    let others = own.min(LevelFilter::WARN);
    let mut out = format!("{others},{}={own}", env!("CARGO_CRATE_NAME"));
    for directive in named {
        out.push(',');
        out.push_str(directive);
    }
    out
}

#[cfg(test)]
mod tests {
    use tracing::{Level, enabled};

    use super::*;

    /// `probe` run with logging filtered as `SIPDESK_LOG=spec` asks.
    fn under<T>(spec: &str, default: &str, probe: impl FnOnce() -> T) -> T {
        use tracing_subscriber::prelude::*;
        let subscriber = tracing_subscriber::registry().with(filter(Some(spec), default));
        tracing::subscriber::with_default(subscriber, probe)
    }

    #[test]
    fn a_bare_level_is_sipdesks_and_dependencies_stay_at_warn() {
        let [proxy, statements, http, slow_statements] = under("debug", "info", || {
            [
                enabled!(target: "sipdesk::proxy", Level::DEBUG),
                enabled!(target: "sqlx::query", Level::DEBUG),
                enabled!(target: "hyper::proto", Level::DEBUG),
                enabled!(target: "sqlx::query", Level::WARN),
            ]
        });
        assert!(proxy && !statements && !http && slow_statements);
    }

    #[test]
    fn a_named_dependency_speaks_at_its_level() {
        let [proxy, statements] = under("debug,sqlx=debug", "info", || {
            [
                enabled!(target: "sipdesk::proxy", Level::DEBUG),
                enabled!(target: "sqlx::query", Level::DEBUG),
            ]
        });
        assert!(proxy && statements);
    }

    #[test]
    fn a_named_sipdesk_target_wins_over_the_bare_level() {
        let [proxy, store] = under("info,sipdesk::proxy=trace", "info", || {
            [
                enabled!(target: "sipdesk::proxy", Level::TRACE),
                enabled!(target: "sipdesk::store", Level::DEBUG),
            ]
        });
        assert!(proxy && !store);
        assert!(under("sipdesk=trace", "warn", || enabled!(
            target: "sipdesk::store",
            Level::TRACE
        )));
    }

    #[test]
    fn without_a_bare_level_the_commands_default_applies() {
        assert_eq!(
            directives("sqlx=info", "info"),
            "warn,sipdesk=info,sqlx=info"
        );
        assert_eq!(directives(" ,", "warn"), "warn,sipdesk=warn");
        assert_eq!(directives("error", "info"), "error,sipdesk=error");
    }

    #[test]
    fn an_unreadable_filter_falls_back_to_the_default() {
        let [warn, debug] = under("sipdesk=loud", "warn", || {
            [
                enabled!(target: "sipdesk::store", Level::WARN),
                enabled!(target: "sipdesk::store", Level::DEBUG),
            ]
        });
        assert!(warn && !debug);
    }
}
