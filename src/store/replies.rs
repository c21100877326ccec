//! Helpdesk replies on text tickets, on their way back to the customer as texts
//! ([`crate::replies`]): where each integration's event export was read up to, and one row per
//! reply, kept before it is sent.
//!
//! A reply's row is made (`pending`, or `not_sent` with why) before the export's position moves
//! past it, so a restart reads it again at worst and the row's id (the integration and the
//! comment id) makes the second reading a no-op. Sending takes the row from `pending` to
//! `sending` first (one instance wins), then to `sent` or `failed`: a row found `sending` at
//! start was being sent when its sipdesk stopped, and is failed rather than sent again, so a
//! customer never gets one reply twice.

use jiff::Timestamp;
use sqlx::Row;

use super::{Store, StoreError, millis, query_error};

/// A reply's state.
pub const PENDING: &str = "pending";
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";
pub const NOT_SENT: &str = "not_sent";

/// A reply to send, or sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `<integration>:<comment id>`.
    pub id: String,
    pub integration: String,
    pub ticket_id: String,
    /// The customer's number (E.164).
    pub customer: String,
    /// The company's number the customer texted (E.164), which the reply goes out from.
    pub number: String,
    pub body: String,
    /// The e-mail of the reply's author.
    pub author: Option<String>,
    pub state: String,
    pub detail: Option<String>,
}

/// Who a text ticket is with, from its last inbound text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub customer: String,
    pub number: String,
    /// The helpdesk's id of the customer (the ticket's requester), when known.
    pub contact_id: Option<String>,
}

fn reply(row: &sqlx::any::AnyRow) -> Result<Reply, StoreError> {
    let e = || query_error("read a reply");
    Ok(Reply {
        id: row.try_get("id").map_err(e())?,
        integration: row.try_get("integration").map_err(e())?,
        ticket_id: row.try_get("ticket_id").map_err(e())?,
        customer: row.try_get("customer").map_err(e())?,
        number: row.try_get("number").map_err(e())?,
        body: row.try_get("body").map_err(e())?,
        author: row.try_get("author").map_err(e())?,
        state: row.try_get("state").map_err(e())?,
        detail: row.try_get("detail").map_err(e())?,
    })
}

const COLUMNS: &str = "id, integration, ticket_id, customer, number, body, author, state, detail";

impl Store {
    /// Where the integration's event export was read up to (Unix seconds), if it ever was.
    pub async fn reply_cursor(&self, integration: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT position FROM helpdesk_cursors WHERE integration = $1")
            .bind(integration)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read the replies position"))?;
        row.map(|r| r.try_get::<i64, _>("position"))
            .transpose()
            .map_err(query_error("read the replies position"))
    }

    /// Moves the integration's export position forward (never back: another instance may have
    /// read further).
    pub async fn set_reply_cursor(
        &self,
        integration: &str,
        position: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO helpdesk_cursors (integration, position, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (integration) DO UPDATE SET position = excluded.position,
                 updated_at = excluded.updated_at
             WHERE helpdesk_cursors.position < excluded.position",
        )
        .bind(integration)
        .bind(position)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_error("save the replies position"))?;
        Ok(())
    }

    /// The text conversation a ticket of this integration belongs to: the customer and number
    /// of the latest inbound text delivered to it.
    pub async fn text_conversation(
        &self,
        integration: &str,
        ticket: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let e = || query_error("find a ticket's texts");
        let row = sqlx::query(
            "SELECT c.caller, c.callee, d.contact_id FROM deliveries d JOIN calls c ON c.id = d.call_id
             WHERE d.integration = $1 AND d.ticket_id = $2 AND c.sms_json IS NOT NULL
                 AND c.direction = 'inbound'
             ORDER BY c.started_at DESC LIMIT 1",
        )
        .bind(integration)
        .bind(ticket)
        .fetch_optional(&self.pool)
        .await
        .map_err(e())?;
        row.map(|row| {
            Ok(Conversation {
                customer: row.try_get("caller").map_err(e())?,
                number: row.try_get("callee").map_err(e())?,
                contact_id: row.try_get("contact_id").map_err(e())?,
            })
        })
        .transpose()
    }

    /// The one of `numbers` a customer last texted, if they did (among their latest 50 texts).
    pub async fn number_texted_by(
        &self,
        customer: &str,
        numbers: &[String],
    ) -> Result<Option<String>, StoreError> {
        let e = || query_error("find the number a customer texted");
        let rows = sqlx::query(
            "SELECT callee FROM calls WHERE caller = $1 AND direction = 'inbound'
                 AND sms_json IS NOT NULL
             ORDER BY started_at DESC LIMIT 50",
        )
        .bind(customer)
        .fetch_all(&self.pool)
        .await
        .map_err(e())?;
        for row in rows {
            let callee: String = row.try_get("callee").map_err(e())?;
            if numbers.contains(&callee) {
                return Ok(Some(callee));
            }
        }
        Ok(None)
    }

    /// Keeps a reply (once: a second reading of the same comment changes nothing); returns
    /// whether it was new.
    pub async fn keep_reply(&self, reply: &Reply, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sms_replies (id, integration, ticket_id, customer, number, body, author,
                 state, detail, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&reply.id)
        .bind(&reply.integration)
        .bind(&reply.ticket_id)
        .bind(&reply.customer)
        .bind(&reply.number)
        .bind(&reply.body)
        .bind(&reply.author)
        .bind(&reply.state)
        .bind(&reply.detail)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_error("keep a reply"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The integration's replies waiting to be sent, oldest first.
    pub async fn pending_replies(&self, integration: &str) -> Result<Vec<Reply>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sms_replies WHERE integration = $1 AND state = '{PENDING}'
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list replies to send"))?;
        rows.iter().map(reply).collect()
    }

    /// Takes a pending reply for sending; `false` when another instance took it first.
    pub async fn take_reply(
        &self,
        id: &str,
        instance: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE sms_replies SET state = '{SENDING}', instance = $2, updated_at = $3
             WHERE id = $1 AND state = '{PENDING}'"
        ))
        .bind(id)
        .bind(instance)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_error("take a reply"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a reply: `sent`, or `failed` / `not_sent` with why.
    pub async fn finish_reply(
        &self,
        id: &str,
        state: &str,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sms_replies SET state = $2, detail = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(detail)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(query_error("end a reply"))?;
        Ok(())
    }

    /// Replies this instance was sending when it stopped: failed with `why`, and returned so
    /// their tickets can say so.
    pub async fn abandon_replies(
        &self,
        instance: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<Vec<Reply>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sms_replies WHERE state = '{SENDING}' AND instance = $1"
        );
        let rows = sqlx::query(&sql)
            .bind(instance)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list replies left sending"))?;
        let mut abandoned = Vec::new();
        for row in &rows {
            let mut reply = reply(row)?;
            self.finish_reply(&reply.id, FAILED, Some(why), now).await?;
            reply.state = FAILED.to_owned();
            reply.detail = Some(why.to_owned());
            abandoned.push(reply);
        }
        Ok(abandoned)
    }

    /// Every reply of an integration, newest first (for `sipdesk` commands and tests).
    pub async fn replies(&self, integration: &str) -> Result<Vec<Reply>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sms_replies WHERE integration = $1 ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("list replies"))?;
        rows.iter().map(reply).collect()
    }
}
