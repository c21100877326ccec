//! Routing's view of the contact directory: what the helpdesks said about each calling number,
//! kept in memory so the proxy can tell known, unknown and inactive callers apart without a
//! network call or a database read. It is loaded from the store at start and kept up to date by
//! the delivery worker, which learns contacts from every lookup and creation.
//!
//! A number's status across integrations: `Known` when any integration has an active contact
//! with it; else `Inactive` when a contact exists but is inactive (suspended or deleted in the
//! helpdesk); else `Unknown` when a helpdesk was asked and has none; `Unchecked` when no helpdesk
//! was ever asked about it (a first call): routing applies no unknown-caller redirect then, as
//! it cannot know.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::routing::CallerStatus;
use crate::store::ContactEntry;

/// What one integration said about a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    Active,
    Inactive,
    NoContact,
}

impl Said {
    pub fn of(entry: &ContactEntry) -> Said {
        match (&entry.contact_id, entry.inactive) {
            (None, _) => Said::NoContact,
            (Some(_), true) => Said::Inactive,
            (Some(_), false) => Said::Active,
        }
    }
}

/// What each integration said about one number.
type Sayings = Vec<(Arc<str>, Said)>;

/// Phone (E.164) → what each integration said.
#[derive(Debug, Default)]
pub struct Directory {
    numbers: RwLock<HashMap<String, Sayings>>,
}

impl Directory {
    /// A directory holding the store's entries.
    pub fn from_entries(entries: &[ContactEntry]) -> Directory {
        let directory = Directory::default();
        for entry in entries {
            directory.learn(&entry.integration, &entry.phone, Said::of(entry));
        }
        directory
    }

    /// Holds exactly the store's entries from now on (another instance may have changed
    /// them while this one was not listening).
    pub fn replace(&self, entries: &[ContactEntry]) {
        let fresh = Directory::from_entries(entries);
        let fresh = fresh
            .numbers
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        *self.numbers.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// Records what an integration said about a number.
    pub fn learn(&self, integration: &str, phone: &str, said: Said) {
        let mut numbers = self.numbers.write().unwrap_or_else(|e| e.into_inner());
        let entry = numbers.entry(phone.to_owned()).or_default();
        match entry.iter_mut().find(|(i, _)| &**i == integration) {
            Some((_, old)) => *old = said,
            None => entry.push((Arc::from(integration), said)),
        }
    }

    /// Forgets what an integration said about a number.
    pub fn forget(&self, integration: &str, phone: &str) {
        let mut numbers = self.numbers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = numbers.get_mut(phone) {
            entry.retain(|(i, _)| &**i != integration);
            if entry.is_empty() {
                numbers.remove(phone);
            }
        }
    }

    /// The caller status routing uses for a number (E.164, or anything else for a withheld or
    /// unreadable one, which is never looked up).
    pub fn status(&self, phone: &str) -> CallerStatus {
        if !phone.starts_with('+') {
            return CallerStatus::Unchecked;
        }
        let numbers = self.numbers.read().unwrap_or_else(|e| e.into_inner());
        let Some(said) = numbers.get(phone) else {
            return CallerStatus::Unchecked;
        };
        if said.iter().any(|(_, s)| *s == Said::Active) {
            CallerStatus::Known
        } else if said.iter().any(|(_, s)| *s == Said::Inactive) {
            CallerStatus::Inactive
        } else if said.is_empty() {
            CallerStatus::Unchecked
        } else {
            CallerStatus::Unknown
        }
    }

    /// How many numbers it knows something about.
    pub fn len(&self) -> usize {
        self.numbers.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_known_when_any_helpdesk_has_an_active_contact() {
        let d = Directory::default();
        assert_eq!(d.status("+34911239613"), CallerStatus::Unchecked);
        d.learn("a", "+34911239613", Said::NoContact);
        assert_eq!(d.status("+34911239613"), CallerStatus::Unknown);
        d.learn("b", "+34911239613", Said::Inactive);
        assert_eq!(d.status("+34911239613"), CallerStatus::Inactive);
        d.learn("a", "+34911239613", Said::Active);
        assert_eq!(d.status("+34911239613"), CallerStatus::Known);
        d.forget("a", "+34911239613");
        assert_eq!(d.status("+34911239613"), CallerStatus::Inactive);
        d.forget("b", "+34911239613");
        assert_eq!(d.status("+34911239613"), CallerStatus::Unchecked);
        assert!(d.is_empty());
    }
}
