//! The contact directory: phone number (E.164, or `anonymous`) → helpdesk contact, per
//! integration, filled by the delivery worker from the helpdesk's answers (lookups and
//! creations). It spares a lookup per call, keeps a helpdesk whose search lags behind its writes
//! from getting a second contact for one number, and lets routing tell known, unknown and
//! inactive callers apart without a network call. A number looked up and not found is kept
//! with no contact id: that is what "unknown" means to routing.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, from_millis, millis, query_error};

/// What the directory knows of a number on one integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactEntry {
    pub integration: String,
    pub phone: String,
    /// `None`: the helpdesk was asked and has no contact with this number.
    pub contact_id: Option<String>,
    pub name: Option<String>,
    pub inactive: bool,
    /// When the helpdesk last said so.
    pub checked_at: Timestamp,
}

impl Store {
    /// The directory's entry for a number on an integration.
    pub async fn contact(
        &self,
        integration: &str,
        phone: &str,
    ) -> Result<Option<ContactEntry>, StoreError> {
        let row = sqlx::query(
            "SELECT integration, phone, contact_id, name, inactive, checked_at FROM contacts
             WHERE integration = $1 AND phone = $2",
        )
        .bind(integration)
        .bind(phone)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("read contact"))?;
        row.as_ref().map(contact_entry).transpose()
    }

    /// Every entry, for routing's view of callers.
    pub async fn contacts(&self) -> Result<Vec<ContactEntry>, StoreError> {
        let rows = sqlx::query("SELECT integration, phone, contact_id, name, inactive, checked_at FROM contacts ORDER BY phone, integration")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read contacts"))?;
        rows.iter().map(contact_entry).collect()
    }

    /// Records what the helpdesk said about a number.
    pub async fn save_contact(&self, entry: &ContactEntry) -> Result<(), StoreError> {
        let query = sqlx::query(
            "INSERT INTO contacts (integration, phone, contact_id, name, inactive, checked_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (integration, phone) DO UPDATE SET contact_id = excluded.contact_id, name = excluded.name,
                 inactive = excluded.inactive, checked_at = excluded.checked_at",
        )
        .bind(entry.integration.as_str())
        .bind(entry.phone.as_str())
        .bind(entry.contact_id.clone())
        .bind(entry.name.as_deref().map(|n| super::text(n).into_owned()))
        .bind(i32::from(entry.inactive))
        .bind(millis(entry.checked_at));
        self.execute_write("save contact", query).await?;
        Ok(())
    }

    /// Forgets a number (its contact is gone from the helpdesk).
    pub async fn forget_contact(&self, integration: &str, phone: &str) -> Result<(), StoreError> {
        let query = sqlx::query("DELETE FROM contacts WHERE integration = $1 AND phone = $2")
            .bind(integration)
            .bind(phone);
        self.execute_write("forget contact", query).await?;
        Ok(())
    }
}

fn contact_entry(row: &sqlx::any::AnyRow) -> Result<ContactEntry, StoreError> {
    let e = || query_error("read contact");
    Ok(ContactEntry {
        integration: row.try_get("integration").map_err(e())?,
        phone: row.try_get("phone").map_err(e())?,
        contact_id: row.try_get("contact_id").map_err(e())?,
        name: row.try_get("name").map_err(e())?,
        inactive: row.try_get::<i32, _>("inactive").map_err(e())? != 0,
        checked_at: from_millis(row.try_get("checked_at").map_err(e())?),
    })
}
