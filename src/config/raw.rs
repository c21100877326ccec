//! The configuration file as written: plain serde structs, one per TOML table, every field
//! documented. `config.example.toml` mirrors these comments. Nothing here is checked beyond
//! types and key names; [`super::build`] turns it into settings.

use serde::Deserialize;

use crate::routing::{Condition, FinalAction};

/// `[sip]`: how sipdesk talks to the PBX.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSip {
    /// Sockets to listen on, each `"udp:ADDRESS:PORT"` or `"tcp:ADDRESS:PORT"`.
    #[serde(default = "default_listen")]
    pub(crate) listen: Vec<String>,
    /// The PBX, as `host:port` (port 5060 when left out): agents are rung at
    /// `sip:<extension>@<pbx>`.
    pub(crate) pbx: String,
    /// Addresses allowed to send requests, as CIDR blocks (`"10.0.0.0/24"`) or single addresses.
    /// Empty means only the PBX's own address.
    #[serde(default)]
    pub(crate) trusted: Vec<String>,
    /// The transport agents are rung over: `"udp"` or `"tcp"`.
    #[serde(default = "default_pbx_transport")]
    pub(crate) pbx_transport: String,
    /// The `host:port` sipdesk puts in Via and Record-Route, where the PBX reaches it. Default:
    /// the first listen address, or when that is `0.0.0.0`, the local address towards the PBX.
    pub(crate) advertise: Option<String>,
    /// What requests from untrusted addresses get: `"reject"` (403) or `"ignore"` (silence).
    #[serde(default = "default_untrusted")]
    pub(crate) untrusted: String,
    /// At most this many 403 answers per second to untrusted addresses; beyond, silence.
    #[serde(default = "default_untrusted_rate")]
    pub(crate) untrusted_rate: u32,
    /// Largest SIP message accepted, in bytes.
    #[serde(default = "default_max_message_size")]
    pub(crate) max_message_size: usize,
    /// Most header lines in a SIP message.
    #[serde(default = "default_max_headers")]
    pub(crate) max_headers: usize,
    /// Most SIP transactions alive at once; beyond, new requests get 503 with Retry-After, so
    /// a flood cannot grow sipdesk's memory without bound.
    #[serde(default = "default_max_transactions")]
    pub(crate) max_transactions: usize,
    /// Most TCP connections open at once (accepted and opened); beyond, the one idle the
    /// longest is closed to make room.
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// A TCP connection with no traffic for this long is closed.
    #[serde(default = "default_tcp_idle_timeout")]
    pub(crate) tcp_idle_timeout: String,
    /// Once a SIP message has started on a TCP connection, the rest of it must arrive within
    /// this, or the connection is closed (a sender trickling bytes holds nothing for long).
    #[serde(default = "default_tcp_message_timeout")]
    pub(crate) tcp_message_timeout: String,
    /// RFC 3261 timer T1, the round-trip estimate.
    #[serde(default = "default_t1")]
    pub(crate) t1: String,
    /// RFC 3261 timer T2, the longest retransmission interval.
    #[serde(default = "default_t2")]
    pub(crate) t2: String,
    /// RFC 3261 timer T4, the longest a message stays in the network.
    #[serde(default = "default_t4")]
    pub(crate) t4: String,
    /// An answered call with no BYE after this long is closed (a lost BYE).
    #[serde(default = "default_max_call_duration")]
    pub(crate) max_call_duration: String,
    /// How often each answered call is checked with an in-dialog OPTIONS to both sides; a side
    /// that answers 481 or not at all is gone, and the call is ended. `"off"` (default): no
    /// check, a lost BYE is caught by `max_call_duration`.
    #[serde(default = "default_session_check")]
    pub(crate) session_check: String,
    /// Most outbound calls an agent's extension may have at once; more get 486 Busy Here.
    #[serde(default = "default_max_outbound_per_agent")]
    pub(crate) max_outbound_per_agent: u32,
    /// On stop, how long calls in progress may go on before sipdesk exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub(crate) shutdown_grace: String,
    /// Where the PBX keeps recordings, with `{sip_call_id}`, `{call_id}`, `{queue}`, `{agent}`
    /// and `{caller}` replaced, e.g. `"https://pbx.example.com/rec/{sip_call_id}.wav"`.
    pub(crate) recording_url: Option<String>,
    /// A header of the answering 200 OK that carries the recording URL (wins over the template).
    pub(crate) recording_header: Option<String>,
    /// A header of the PBX's INVITE listing call tags, comma separated (`"vip, billing"`); tag
    /// rules of helpdesks turn them into ticket tags, type and priority. `""` turns it off.
    #[serde(default = "default_tags_header")]
    pub(crate) tags_header: String,
}

fn default_tags_header() -> String {
    "X-Sipdesk-Tags".to_owned()
}

fn default_pbx_transport() -> String {
    "udp".to_owned()
}

fn default_untrusted() -> String {
    "reject".to_owned()
}

fn default_untrusted_rate() -> u32 {
    20
}

fn default_max_message_size() -> usize {
    16 * 1024
}

fn default_max_headers() -> usize {
    128
}

fn default_max_transactions() -> usize {
    20_000
}

fn default_max_connections() -> usize {
    1_000
}

fn default_tcp_idle_timeout() -> String {
    "10m".to_owned()
}

fn default_tcp_message_timeout() -> String {
    "10s".to_owned()
}

fn default_t1() -> String {
    "500ms".to_owned()
}

fn default_t2() -> String {
    "4s".to_owned()
}

fn default_t4() -> String {
    "5s".to_owned()
}

fn default_max_call_duration() -> String {
    "4h".to_owned()
}

fn default_session_check() -> String {
    "off".to_owned()
}

fn default_max_outbound_per_agent() -> u32 {
    2
}

fn default_shutdown_grace() -> String {
    "30s".to_owned()
}

fn default_listen() -> Vec<String> {
    vec!["udp:0.0.0.0:5060".to_owned(), "tcp:0.0.0.0:5060".to_owned()]
}

/// `[database]`: where calls, agent states and deliveries are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    /// `sqlite://PATH` (a relative path is under `state_directory`, for the daemon and the
    /// command line alike) or `postgres://user@host/db`. One instance per database: sharing
    /// one between instances (DESIGN.md "Scale") is not built yet.
    #[serde(default = "default_database_url")]
    pub(crate) url: String,
    /// Where sipdesk keeps its files: the SQLite database of a relative `url`, and call records
    /// that could not be written to the database (the spill file, written at the next start).
    /// An absolute path.
    #[serde(default = "default_state_directory")]
    pub(crate) state_directory: String,
    /// Most call records and events held in memory while the database cannot be written; beyond,
    /// the oldest go to the spill file in `state_directory`.
    #[serde(default = "default_queue_limit")]
    pub(crate) queue_limit: usize,
    /// On stop, how long sipdesk keeps trying to write what it holds before it puts the rest
    /// in the spill file.
    #[serde(default = "default_stop_write_timeout")]
    pub(crate) stop_write_timeout: String,
}

impl Default for RawDatabase {
    fn default() -> RawDatabase {
        RawDatabase {
            url: default_database_url(),
            state_directory: default_state_directory(),
            queue_limit: default_queue_limit(),
            stop_write_timeout: default_stop_write_timeout(),
        }
    }
}

pub(crate) fn default_database_url() -> String {
    "sqlite://sipdesk.db".to_owned()
}

pub(crate) fn default_state_directory() -> String {
    "/var/lib/sipdesk".to_owned()
}

pub(crate) fn default_queue_limit() -> usize {
    100_000
}

pub(crate) fn default_stop_write_timeout() -> String {
    "15s".to_owned()
}

/// `[admin]`: the HTTP API for supervisors, the `sipdesk` commands and monitoring.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// `"ADDRESS:PORT"` to listen on (keep it on loopback), or `"off"`.
    #[serde(default = "default_admin_listen")]
    pub(crate) listen: String,
    /// A file holding the bearer token the API asks for (a relative path is under systemd's
    /// `$CREDENTIALS_DIRECTORY`). Without `token_file` or `token_env`, sipdesk makes one at each
    /// start in `admin.token` in the state directory, readable by its own user only, and the
    /// `sipdesk` commands read it there.
    pub(crate) token_file: Option<String>,
    /// An environment variable holding the token.
    pub(crate) token_env: Option<String>,
    /// The wait within which an answered call counts for the service level (`GET /groups`,
    /// the wallboard).
    #[serde(default = "default_service_level")]
    pub(crate) service_level: String,
}

impl Default for RawAdmin {
    fn default() -> RawAdmin {
        RawAdmin {
            listen: default_admin_listen(),
            token_file: None,
            token_env: None,
            service_level: default_service_level(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:8640".to_owned()
}

fn default_service_level() -> String {
    "20s".to_owned()
}

/// `[cluster]`: several sipdesk instances sharing one PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    /// This instance's name, unique among those sharing the database; by default the host name.
    pub(crate) instance: Option<String>,
    /// How long an instance may stay silent before another takes it for dead and closes its
    /// calls.
    #[serde(default = "default_dead_after")]
    pub(crate) dead_after: String,
}

impl Default for RawCluster {
    fn default() -> RawCluster {
        RawCluster {
            instance: None,
            dead_after: default_dead_after(),
        }
    }
}

fn default_dead_after() -> String {
    "15s".to_owned()
}

/// `[media]`: sipdesk's own voice, for voicemail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    /// The IP address RTP is sent from and named in SDP; by default sipdesk's SIP address.
    pub(crate) address: Option<String>,
    /// `"FIRST-LAST"`: the UDP ports voicemail sessions use (one even port each).
    #[serde(default = "default_rtp_ports")]
    pub(crate) rtp_ports: String,
    /// Voicemails recorded at once; a call beyond takes the `reject` path. By default 100, or
    /// as many as `rtp_ports` has even ports when fewer.
    pub(crate) max_sessions: Option<usize>,
    /// Silence that ends a recording.
    #[serde(default = "default_voicemail_silence")]
    pub(crate) voicemail_silence: String,
    /// The longest recording.
    #[serde(default = "default_voicemail_max")]
    pub(crate) voicemail_max: String,
    /// How long recordings are kept once every helpdesk has them.
    #[serde(default = "default_retention")]
    pub(crate) retention: String,
    /// The URL at which helpdesk users reach sipdesk's admin HTTP server (through a reverse
    /// proxy), for signed links to recordings: e.g. `"https://sipdesk.example.com"`.
    pub(crate) public_url: Option<String>,
    /// How long a signed link to a recording works; by default `retention`.
    pub(crate) link_lifetime: Option<String>,
}

impl Default for RawMedia {
    fn default() -> RawMedia {
        RawMedia {
            address: None,
            rtp_ports: default_rtp_ports(),
            max_sessions: None,
            voicemail_silence: default_voicemail_silence(),
            voicemail_max: default_voicemail_max(),
            retention: default_retention(),
            public_url: None,
            link_lifetime: None,
        }
    }
}

fn default_rtp_ports() -> String {
    "16000-16999".to_owned()
}

fn default_voicemail_silence() -> String {
    "5s".to_owned()
}

fn default_voicemail_max() -> String {
    "3m".to_owned()
}

fn default_retention() -> String {
    "30d".to_owned()
}

/// `[agents]`: what agents do from their own phones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgents {
    /// The number an agent dials (the PBX routes it to sipdesk) to say they are away, or "off".
    #[serde(default = "default_away_code")]
    pub(crate) away_code: String,
    /// The number an agent dials to say they are available again, or "off".
    #[serde(default = "default_available_code")]
    pub(crate) available_code: String,
}

impl Default for RawAgents {
    fn default() -> RawAgents {
        RawAgents {
            away_code: default_away_code(),
            available_code: default_available_code(),
        }
    }
}

fn default_away_code() -> String {
    "*46".to_owned()
}

fn default_available_code() -> String {
    "*47".to_owned()
}

/// `[defaults]`: what applies where a group says nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    /// IANA time zone of groups without their own `timezone`, e.g. `"Europe/Madrid"`.
    pub(crate) timezone: String,
    /// ISO 3166 country whose national number format callers use, e.g. `"ES"`.
    pub(crate) region: String,
}

/// One `[[holidays]]` entry (global) or one `own_holidays` entry of a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHoliday {
    /// `"YYYY-MM-DD"` for one day, `"MM-DD"` for the same day every year.
    pub(crate) date: String,
    /// Shown in explanations and logs.
    pub(crate) name: String,
    /// `"HH:MM"`: the holiday starts at this time (a partial day). Default: midnight.
    pub(crate) from: Option<String>,
    /// `"HH:MM"`: the holiday ends at this time (a partial day). Default: end of the day.
    pub(crate) until: Option<String>,
}

/// Whether a group observes the global holidays.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HolidayMode {
    /// The global `[[holidays]]` list plus the group's `own_holidays`.
    #[default]
    Global,
    /// Only the group's `own_holidays`.
    Own,
}

/// `hours` of a group: intervals per weekday, `"HH:MM-HH:MM"`. A day left out is closed; an
/// interval whose end is not after its start runs past midnight (`"22:00-06:00"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHours {
    #[serde(default)]
    pub(crate) mon: Vec<String>,
    #[serde(default)]
    pub(crate) tue: Vec<String>,
    #[serde(default)]
    pub(crate) wed: Vec<String>,
    #[serde(default)]
    pub(crate) thu: Vec<String>,
    #[serde(default)]
    pub(crate) fri: Vec<String>,
    #[serde(default)]
    pub(crate) sat: Vec<String>,
    #[serde(default)]
    pub(crate) sun: Vec<String>,
}

impl RawHours {
    /// The days with their TOML key, Monday first.
    pub(crate) fn days(&self) -> [(&'static str, &[String]); 7] {
        [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ]
    }
}

/// One agent of a group, in distribution order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    /// The extension the PBX rings: `sip:<extension>@<pbx>`.
    pub(crate) extension: String,
    /// The agent's e-mail, used to find their helpdesk user.
    pub(crate) email: Option<String>,
    /// Display name for logs and the admin API.
    pub(crate) name: Option<String>,
}

/// One overflow target of a group, in priority order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOverflow {
    /// The group that takes the call.
    pub(crate) group: String,
    /// When: any of `"no_agents"`, `"out_of_hours"`, `"holiday"`. Default: all three.
    #[serde(default = "all_conditions")]
    pub(crate) when: Vec<Condition>,
}

fn all_conditions() -> Vec<Condition> {
    Condition::ALL.to_vec()
}

/// One `[[groups]]` entry: a phone group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    /// Unique name, used by overflow, redirects, logs and helpdesk links.
    pub(crate) name: String,
    /// The PBX queue IDs this group serves (the Request-URI user part of the PBX's INVITE).
    pub(crate) queues: Vec<String>,
    /// IANA time zone of the hours and holidays. Default: `[defaults] timezone`.
    pub(crate) timezone: Option<String>,
    /// Business hours; leave out for a group that is always open.
    pub(crate) hours: Option<RawHours>,
    /// `"global"`: global holidays plus `own_holidays`; `"own"`: only `own_holidays`.
    #[serde(default)]
    pub(crate) holidays: HolidayMode,
    /// Holidays of this group only, same shape as `[[holidays]]`.
    #[serde(default)]
    pub(crate) own_holidays: Vec<RawHoliday>,
    /// The agents, in the order calls are distributed among them.
    pub(crate) agents: Vec<RawAgent>,
    /// How long each agent rings before the next one is tried.
    #[serde(default = "default_ring_timeout")]
    pub(crate) ring_timeout: String,
    /// How long an agent stays unavailable after a call ends.
    #[serde(default = "default_wrap_up")]
    pub(crate) wrap_up: String,
    /// How long a caller may wait in all before the final action.
    #[serde(default = "default_max_wait")]
    pub(crate) max_wait: String,
    /// Where calls go when this group cannot take them, in priority order.
    #[serde(default)]
    pub(crate) overflow: Vec<RawOverflow>,
    /// The group that takes calls from numbers not in the contact directory.
    pub(crate) unknown_caller_group: Option<String>,
    /// The group that takes calls from contacts marked inactive.
    pub(crate) inactive_caller_group: Option<String>,
    /// When every option is exhausted: `"voicemail"` or `"reject"`.
    #[serde(default = "default_final_action")]
    pub(crate) final_action: FinalAction,
    /// What a call gets when the group is closed (out of hours or a holiday) and no overflow
    /// takes it; by default `final_action`.
    pub(crate) closed_action: Option<FinalAction>,
    /// Whether agents may transfer a call they answered to another extension: sipdesk follows the
    /// transfer (REFER, or a connected-line P-Asserted-Identity) and the ticket goes to the new
    /// agent; when false, an agent's REFER is refused with 403.
    #[serde(default)]
    pub(crate) allow_transfer: bool,
    /// The greeting played before a voicemail: a WAV file (PCM 8 or 16-bit, 8 to 48 kHz, mono
    /// or stereo, or G.711), checked and converted once when the configuration loads. A
    /// relative path is under the configuration file's directory.
    pub(crate) greeting: Option<String>,
    /// A greeting for one reason, played instead of `greeting`.
    pub(crate) greetings: Option<RawGreetings>,
}

/// `greetings = { out_of_hours = "…", holiday = "…", no_agents = "…" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGreetings {
    pub(crate) out_of_hours: Option<String>,
    pub(crate) holiday: Option<String>,
    pub(crate) no_agents: Option<String>,
}

fn default_ring_timeout() -> String {
    "15s".to_owned()
}

fn default_wrap_up() -> String {
    "30s".to_owned()
}

fn default_max_wait() -> String {
    "5m".to_owned()
}

fn default_final_action() -> FinalAction {
    FinalAction::Reject
}

/// One `[[helpdesks]]` entry: a helpdesk integration calls are logged to. The shared keys come
/// first; the rest belong to one kind each and are refused on another
/// ([`super::helpdesk`] checks which).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHelpdesk {
    /// Unique name, shown in `sipdesk deliveries` and logs.
    pub(crate) name: String,
    /// `"zendesk"`, `"helpscout"`, `"intercom"`, `"klaviyo"` or `"webhook"`.
    pub(crate) kind: String,
    /// A file holding the secret (relative paths are under systemd's $CREDENTIALS_DIRECTORY when
    /// set). Never put the secret itself in this file.
    pub(crate) token_file: Option<String>,
    /// An environment variable holding the secret.
    pub(crate) token_env: Option<String>,
    /// The groups whose calls are logged here; calls elsewhere are not.
    pub(crate) groups: Vec<String>,
    /// What to do with answered inbound calls.
    pub(crate) inbound_answered: Option<RawCallTypeRule>,
    /// What to do with missed inbound calls.
    pub(crate) missed: Option<RawCallTypeRule>,
    /// What to do with voicemails.
    pub(crate) voicemail: Option<RawCallTypeRule>,
    /// What to do with answered outbound calls.
    pub(crate) outbound_answered: Option<RawCallTypeRule>,
    /// What to do with unanswered outbound calls.
    pub(crate) outbound_unanswered: Option<RawCallTypeRule>,
    /// What to do with texts customers send to the `[[sms_numbers]]`.
    pub(crate) sms_inbound: Option<RawCallTypeRule>,
    /// What to do with texts sent to customers (from agents' phones, or helpdesk replies).
    pub(crate) sms_outbound: Option<RawCallTypeRule>,
    /// Whether unanswered calls that came while the group was closed are logged.
    #[serde(default = "default_true")]
    pub(crate) create_out_of_hours: bool,
    /// Whether a caller with no matching contact gets a new one; if not, their calls are not
    /// logged. Not for webhooks, which have no contacts.
    pub(crate) create_unknown_contacts: Option<bool>,
    /// The call details written on the ticket, in order.
    #[serde(default = "default_fields")]
    pub(crate) fields: Vec<String>,
    /// The helpdesk's request limit per minute; sipdesk paces itself below it. Default: per
    /// kind (Zendesk 400, Help Scout 400, Intercom 1000, Klaviyo 3500, webhook 600).
    pub(crate) requests_per_minute: Option<u32>,
    /// How many calls are delivered at the same time. Default: 4 (Klaviyo 8).
    pub(crate) concurrency: Option<u32>,
    /// After this long without success a delivery is marked failed (it can be retried).
    /// Default: 24h, and 72h for a webhook.
    pub(crate) give_up_after: Option<String>,
    /// How long one request may take.
    #[serde(default = "default_request_timeout")]
    pub(crate) request_timeout: String,

    // Zendesk.
    /// The Zendesk subdomain: `example` for https://example.zendesk.com.
    pub(crate) subdomain: Option<String>,
    /// The API's base URL, instead of the one `subdomain` gives (a proxy, a test server).
    pub(crate) base_url: Option<String>,
    /// `"token"` (API token, with `email`) or `"oauth"` (a bearer access token).
    pub(crate) auth: Option<String>,
    /// The Zendesk user the API token belongs to (token authentication).
    pub(crate) email: Option<String>,
    /// Who missed calls and voicemails are assigned to: a user's e-mail, or `"group:<id>"`.
    pub(crate) missed_assignee: Option<String>,
    /// Who answered calls are assigned to when the agent has no helpdesk user with their e-mail.
    pub(crate) default_assignee: Option<String>,
    /// Whether a ticket's title follows its latest call.
    pub(crate) update_title: Option<bool>,
    /// Whether the call goes on the ticket as a voice comment too (with its recording).
    pub(crate) voice_comments: Option<bool>,
    /// Call tags that set ticket tags, type and priority.
    pub(crate) tag_rules: Option<Vec<RawTagRule>>,

    // Help Scout.
    /// The OAuth2 application's id (client credentials; its secret is the entry's secret).
    pub(crate) client_id: Option<String>,
    /// The mailbox (inbox) conversations are made in.
    pub(crate) mailbox_id: Option<u64>,
    /// With `log = "previous"`: a conversation closed less than this ago is reopened.
    pub(crate) reopen_closed_within: Option<String>,
    /// With `log = "previous"`: the conversation is assigned to the agent who took the call.
    pub(crate) reassign_to_agent: Option<bool>,
    /// Two customers with one number: `"most_recent"` or `"skip"`.
    pub(crate) duplicates: Option<String>,
    /// Whether texts (SMS) are logged at all (the seed's "Registrar WhatsApp y SMS").
    pub(crate) log_sms: Option<bool>,

    // Intercom.
    /// `"us"`, `"eu"` or `"au"`: where the workspace's data is hosted.
    pub(crate) region: Option<String>,
    /// The Intercom admin who writes the notes and takes answered calls whose agent is no admin.
    pub(crate) admin_email: Option<String>,
    /// The e-mail of the one lead withheld numbers are logged under.
    pub(crate) anonymous_email: Option<String>,

    // Webhook.
    /// Where the signed POSTs go.
    pub(crate) url: Option<String>,
    /// Whether a voicemail's audio goes in the payload itself (base64), besides its link.
    pub(crate) inline_audio: Option<bool>,
}

impl RawHelpdesk {
    /// The kind-specific keys this entry gives.
    pub(crate) fn kind_keys(&self) -> Vec<&'static str> {
        let given = [
            ("subdomain", self.subdomain.is_some()),
            ("base_url", self.base_url.is_some()),
            ("auth", self.auth.is_some()),
            ("email", self.email.is_some()),
            ("missed_assignee", self.missed_assignee.is_some()),
            ("default_assignee", self.default_assignee.is_some()),
            ("update_title", self.update_title.is_some()),
            ("voice_comments", self.voice_comments.is_some()),
            ("tag_rules", self.tag_rules.is_some()),
            ("url", self.url.is_some()),
            ("inline_audio", self.inline_audio.is_some()),
            ("client_id", self.client_id.is_some()),
            ("mailbox_id", self.mailbox_id.is_some()),
            ("reopen_closed_within", self.reopen_closed_within.is_some()),
            ("reassign_to_agent", self.reassign_to_agent.is_some()),
            ("duplicates", self.duplicates.is_some()),
            ("log_sms", self.log_sms.is_some()),
            ("region", self.region.is_some()),
            ("admin_email", self.admin_email.is_some()),
            ("anonymous_email", self.anonymous_email.is_some()),
            (
                "create_unknown_contacts",
                self.create_unknown_contacts.is_some(),
            ),
        ];
        given
            .into_iter()
            .filter_map(|(key, given)| given.then_some(key))
            .collect()
    }
}

/// Where and how one type of call is logged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallTypeRule {
    /// `"new"` ticket, `"previous"` ticket of the contact, or `"none"`.
    pub(crate) log: String,
    /// The status to set, in the helpdesk's own words (Zendesk: `"open"`, `"solved"`, ...).
    pub(crate) status: Option<String>,
    /// Klaviyo: the metric (event name) of this call type.
    pub(crate) metric: Option<String>,
}

/// A call tag and what it sets on the ticket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTagRule {
    /// The call tag (from the PBX or the admin API).
    pub(crate) tag: String,
    /// Ticket tags to add.
    #[serde(default)]
    pub(crate) ticket_tags: Vec<String>,
    /// Ticket type: `"problem"`, `"incident"`, `"question"` or `"task"`.
    #[serde(rename = "type")]
    pub(crate) ticket_type: Option<String>,
    /// Ticket priority: `"urgent"`, `"high"`, `"normal"` or `"low"`.
    pub(crate) priority: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_fields() -> Vec<String> {
    [
        "call_type",
        "agent",
        "start",
        "end",
        "duration",
        "wait_time",
        "queue",
        "group",
        "recording_url",
    ]
    .iter()
    .map(|f| (*f).to_owned())
    .collect()
}

fn default_request_timeout() -> String {
    "30s".to_owned()
}
