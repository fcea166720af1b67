//! Expiry signals: a key inside its rotation policy's Notify window that will expire before
//! any rotation replaces it. Pure; the controller records a Warning event once per version.

use chrono::{DateTime, Utc};

use crate::keyvault::{ObservedKey, ObservedPolicy};
use crate::period::Period;

/// The current version expires within the Notify window and nothing rotates it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrotatedExpiry {
    pub expires: DateTime<Utc>,
    /// The Notify action's `timeBeforeExpiry`, as the vault holds it.
    pub window: String,
}

/// `Some` when `now` lies in the Notify window before the current version's expiry (the
/// policy's Notify `timeBeforeExpiry`) and no rotation is scheduled before that expiry. A
/// version already expired is past warning (its consumers already fail).
pub fn unrotated_expiry(
    policy: &ObservedPolicy,
    latest: &ObservedKey,
    next_rotation: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<UnrotatedExpiry> {
    let (start, window) = notify_window(policy, latest)?;
    let expires = latest.expires_on?;
    let rotates_first = next_rotation.is_some_and(|at| at < expires);
    (start <= now && now < expires && !rotates_first).then_some(UnrotatedExpiry { expires, window })
}

/// When the current version enters the policy's Notify window (its expiry less the Notify
/// action's `timeBeforeExpiry`), and that period as the vault holds it.
pub fn notify_window(
    policy: &ObservedPolicy,
    latest: &ObservedKey,
) -> Option<(DateTime<Utc>, String)> {
    let expires = latest.expires_on?;
    let window = policy
        .actions
        .iter()
        .find(|a| a.action.eq_ignore_ascii_case("notify"))?
        .time_before_expiry
        .clone()?;
    // A period the operator cannot read (Key Vault also takes hours and minutes) is not
    // guessed at.
    let start = Period::parse(&window).ok()?.before(expires)?;
    Some((start, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::ObservedAction;
    use chrono::{Duration, TimeZone};
    use std::collections::{BTreeMap, BTreeSet};

    fn day(d: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::days(d)
    }

    fn key(expires: Option<DateTime<Utc>>) -> ObservedKey {
        ObservedKey {
            key_id: "https://v/keys/k".into(),
            version: "v1".into(),
            key_type: "EC".into(),
            key_size: None,
            curve: None,
            public_exponent: None,
            key_ops: BTreeSet::new(),
            enabled: true,
            not_before: None,
            expires_on: expires,
            created: Some(day(0)),
            updated: None,
            tags: BTreeMap::new(),
            public_thumbprint: None,
            public_key: None,
        }
    }

    fn policy(actions: &[(&str, Option<&str>)]) -> ObservedPolicy {
        ObservedPolicy {
            expires_in: Some("P28D".into()),
            actions: actions
                .iter()
                .map(|(action, before)| ObservedAction {
                    action: (*action).into(),
                    time_after_create: None,
                    time_before_expiry: before.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn inside_the_notify_window_without_a_rotation_first() {
        let notify = policy(&[("Notify", Some("P7D"))]);
        let k = key(Some(day(28)));
        // Before the window, inside it (from its first second), at and after the expiry.
        assert_eq!(unrotated_expiry(&notify, &k, None, day(20)), None);
        assert_eq!(
            unrotated_expiry(&notify, &k, None, day(21)),
            Some(UnrotatedExpiry {
                expires: day(28),
                window: "P7D".into()
            })
        );
        assert!(unrotated_expiry(&notify, &k, None, day(27)).is_some());
        assert_eq!(unrotated_expiry(&notify, &k, None, day(28)), None);
        // Any spelling of the action (dialects send `notify`).
        let lower = policy(&[("notify", Some("P7D"))]);
        assert!(unrotated_expiry(&lower, &k, None, day(25)).is_some());
    }

    #[test]
    fn a_rotation_scheduled_before_the_expiry_silences_it() {
        let p = policy(&[("Rotate", None), ("Notify", Some("P7D"))]);
        let k = key(Some(day(28)));
        assert_eq!(unrotated_expiry(&p, &k, Some(day(27)), day(25)), None);
        // A rotation due only at or after the expiry does not help.
        assert!(unrotated_expiry(&p, &k, Some(day(28)), day(25)).is_some());
        assert!(unrotated_expiry(&p, &k, Some(day(40)), day(25)).is_some());
    }

    #[test]
    fn no_expiry_no_notify_action_or_an_unreadable_period_says_nothing() {
        let notify = policy(&[("Notify", Some("P7D"))]);
        assert_eq!(unrotated_expiry(&notify, &key(None), None, day(25)), None);
        let rotate_only = policy(&[("Rotate", None)]);
        assert_eq!(
            unrotated_expiry(&rotate_only, &key(Some(day(28))), None, day(25)),
            None
        );
        let hours = policy(&[("Notify", Some("PT12H"))]);
        assert_eq!(
            unrotated_expiry(
                &hours,
                &key(Some(day(28))),
                None,
                day(28) - Duration::hours(1)
            ),
            None
        );
    }
}
