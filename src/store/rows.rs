//! Call records as rows: the multi-row statements the writer batches changes into, and reading
//! rows back into records.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::write::Conn;
use super::{
    Backend, CallRow, StoreError, from_millis, json, millis, name, query_error, text, text_opt,
};
use crate::call::{AgentLeg, CallEvent, CallRecord, CallStart, Direction, Outcome};

/// The columns of a call row, named rather than `*`: a pooled SQLite connection that read the
/// schema before a migration added a column expands `*` to the old columns, and when SQLite
/// prepares the statement again on finding the schema changed, sqlx still expects the old
/// count (a panic in its worker); a named column it does not know yet makes SQLite read the new
/// schema first.
pub(super) const CALL_COLUMNS: &str = "id, sip_call_id, direction, queue, group_name, groups_json, \
     caller, callee, agent, agent_email, started_at, answered_at, ended_at, outcome, reason, \
     ended_by, out_of_hours, recording_url, explanation_json, tags_json, agents_json, voicemail_json, \
     sms_json";

/// Whether a multi-row statement of `rows` rows is kept prepared on its connection. Small ones
/// (the usual batch) are; large ones, made only by bursts, are prepared, run and dropped: a
/// connection keeps up to 100 prepared statements, and a hundred 100-row inserts held
/// megabytes long after the burst that made them.
pub(super) fn cached(rows: usize) -> bool {
    rows <= 8
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's bind limits.
pub(super) const ROWS: usize = 100;

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values; on SQLite `(?, ?), (?, ?)`, the
/// same parameters in the same order. SQLite finds the index of each numbered parameter by
/// scanning the statement's list of them, which made binding a 2,000-value statement quadratic
/// (15% of sipdesk's CPU at 3,000 calls/s); anonymous `?` parameters are bound by position.
pub(super) fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", row * columns + column + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

pub(super) async fn insert_starts(
    conn: &mut Conn,
    backend: Backend,
    starts: &[&CallStart],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO calls (id, sip_call_id, direction, queue, caller, callee, started_at, instance)
         VALUES {} ON CONFLICT (id) DO NOTHING",
        placeholders(backend, starts.len(), 8)
    );
    let mut query = sqlx::query(&sql).persistent(cached(starts.len()));
    for start in starts {
        query = query
            .bind(start.id.as_str())
            .bind(text(&start.sip_call_id).into_owned())
            .bind(name(&start.direction))
            .bind(text_opt(&start.queue))
            .bind(text(&start.caller).into_owned())
            .bind(text(&start.callee).into_owned())
            .bind(millis(start.started_at))
            .bind(text(&start.instance).into_owned());
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(query_error("save call starts"))?;
    Ok(())
}

pub(super) async fn insert_events(
    conn: &mut Conn,
    backend: Backend,
    events: &[&CallEvent],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO call_events (call_id, seq, at, kind, detail) VALUES {}
         ON CONFLICT (call_id, seq) DO NOTHING",
        placeholders(backend, events.len(), 5)
    );
    let mut query = sqlx::query(&sql).persistent(cached(events.len()));
    for event in events {
        query = query
            .bind(event.call_id.as_str())
            .bind(event.seq as i64)
            .bind(millis(event.at))
            .bind(text(&event.kind).into_owned())
            .bind(text(&event.detail).into_owned());
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(query_error("save call events"))?;
    Ok(())
}

pub(super) async fn upsert_records(
    conn: &mut Conn,
    backend: Backend,
    records: &[&CallRecord],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO calls (id, sip_call_id, direction, queue, group_name, groups_json, caller, callee,
             agent, agent_email, started_at, answered_at, ended_at, outcome, reason, ended_by,
             out_of_hours, recording_url, explanation_json, tags_json, agents_json,
             voicemail_json, sms_json)
         VALUES {}
         ON CONFLICT (id) DO UPDATE SET
             group_name = excluded.group_name, groups_json = excluded.groups_json,
             agent = excluded.agent, agent_email = excluded.agent_email,
             answered_at = excluded.answered_at, ended_at = excluded.ended_at,
             outcome = excluded.outcome, reason = excluded.reason, ended_by = excluded.ended_by,
             out_of_hours = excluded.out_of_hours, recording_url = excluded.recording_url,
             explanation_json = excluded.explanation_json, tags_json = excluded.tags_json,
             agents_json = excluded.agents_json, voicemail_json = excluded.voicemail_json,
             sms_json = excluded.sms_json",
        placeholders(backend, records.len(), 23)
    );
    let mut query = sqlx::query(&sql).persistent(cached(records.len()));
    for r in records {
        query = query
            .bind(r.id.as_str())
            .bind(text(&r.sip_call_id).into_owned())
            .bind(name(&r.direction))
            .bind(text_opt(&r.queue))
            .bind(text_opt(&r.group))
            .bind(json(&r.groups))
            .bind(text(&r.caller).into_owned())
            .bind(text(&r.callee).into_owned())
            .bind(text_opt(&r.agent))
            .bind(text_opt(&r.agent_email))
            .bind(millis(r.started_at))
            .bind(r.answered_at.map(millis))
            .bind(millis(r.ended_at))
            .bind(name(&r.outcome))
            .bind(r.reason.map(|x| name(&x)))
            .bind(r.ended_by.map(|x| name(&x)))
            .bind(i32::from(r.out_of_hours))
            .bind(text_opt(&r.recording_url))
            .bind(json(&r.explanation))
            .bind(json(&r.tags))
            .bind(json(&r.agents))
            .bind(r.voicemail.as_ref().map(json))
            .bind(r.sms.as_ref().map(json));
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(query_error("save call records"))?;
    Ok(())
}

/// An enum stored by its snake_case name.
fn parse_name<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

pub(super) fn call_record(row: &AnyRow) -> Result<CallRecord, StoreError> {
    let e = || query_error("read call");
    let text = |name: &str| row.try_get::<Option<String>, _>(name).map_err(e());
    let list = |name: &str| -> Result<Vec<String>, StoreError> {
        Ok(serde_json::from_str(&row.try_get::<String, _>(name).map_err(e())?).unwrap_or_default())
    };
    let started_at = from_millis(row.try_get("started_at").map_err(e())?);
    Ok(CallRecord {
        id: row.try_get("id").map_err(e())?,
        sip_call_id: row.try_get("sip_call_id").map_err(e())?,
        direction: text("direction")?
            .and_then(|d| parse_name(&d))
            .unwrap_or(Direction::Inbound),
        queue: text("queue")?,
        group: text("group_name")?,
        groups: list("groups_json")?,
        caller: row.try_get("caller").map_err(e())?,
        callee: row.try_get("callee").map_err(e())?,
        agent: text("agent")?,
        agent_email: text("agent_email")?,
        agents: agents(row)?,
        started_at,
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")
            .map_err(e())?
            .map(from_millis),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_at")
            .map_err(e())?
            .map_or(started_at, from_millis),
        outcome: text("outcome")?
            .and_then(|o| parse_name(&o))
            .unwrap_or(Outcome::Missed),
        reason: text("reason")?.and_then(|r| parse_name(&r)),
        ended_by: text("ended_by")?.and_then(|b| parse_name(&b)),
        out_of_hours: row.try_get::<i32, _>("out_of_hours").map_err(e())? != 0,
        recording_url: text("recording_url")?,
        voicemail: text("voicemail_json")?.and_then(|v| serde_json::from_str(&v).ok()),
        explanation: list("explanation_json")?,
        tags: list("tags_json")?,
        sms: text("sms_json")?.and_then(|v| serde_json::from_str(&v).ok()),
    })
}

/// The agents who held a call; a list that cannot be read is read as none, as the other JSON
/// lists are.
fn agents(row: &AnyRow) -> Result<Vec<AgentLeg>, StoreError> {
    let text: String = row
        .try_get("agents_json")
        .map_err(query_error("read call"))?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

pub(super) fn call_row(row: &AnyRow) -> Result<CallRow, StoreError> {
    let e = || query_error("read call");
    let explanation: String = row.try_get("explanation_json").map_err(e())?;
    Ok(CallRow {
        id: row.try_get("id").map_err(e())?,
        sip_call_id: row.try_get("sip_call_id").map_err(e())?,
        direction: row.try_get("direction").map_err(e())?,
        queue: row.try_get("queue").map_err(e())?,
        group: row.try_get("group_name").map_err(e())?,
        caller: row.try_get("caller").map_err(e())?,
        callee: row.try_get("callee").map_err(e())?,
        agent: row.try_get("agent").map_err(e())?,
        agents: agents(row)?,
        started_at: from_millis(row.try_get("started_at").map_err(e())?),
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")
            .map_err(e())?
            .map(from_millis),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_at")
            .map_err(e())?
            .map(from_millis),
        outcome: row.try_get("outcome").map_err(e())?,
        reason: row.try_get("reason").map_err(e())?,
        ended_by: row.try_get("ended_by").map_err(e())?,
        explanation: serde_json::from_str(&explanation).unwrap_or_default(),
        voicemail: row
            .try_get::<Option<String>, _>("voicemail_json")
            .map_err(e())?
            .and_then(|v| serde_json::from_str(&v).ok()),
        sms: row
            .try_get::<Option<String>, _>("sms_json")
            .map_err(e())?
            .and_then(|v| serde_json::from_str(&v).ok()),
    })
}
