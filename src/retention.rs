//! `spec.retention`: which superseded versions to disable. Pure; the controller disables them
//! (one `update_key` and one event each).
//!
//! A version is superseded when the next newer version is created. Consumers need the old
//! version for a while after that (Storage and SQL customer-managed keys: 24 hours; a JWT
//! verifier: the lifetime of the tokens it signed; SOPS: until files are re-encrypted), so a
//! version is disabled only once `disableSupersededAfter` has passed since. Never deleted: Key
//! Vault cannot delete a single version, and disabling is undone by enabling it again.

use chrono::{DateTime, Utc};

use crate::keyvault::KeyVersion;
use crate::period::Period;

/// A version to disable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub version: String,
    /// The version that replaced it.
    pub by: String,
    /// When it was replaced (the newer version's creation).
    pub at: DateTime<Utc>,
}

/// The enabled versions, other than `current`, superseded longer than `grace` ago at `now`.
/// A version without a creation time (or followed by one without) is never disabled: its
/// supersession cannot be dated.
pub fn to_disable(
    current: &str,
    versions: &[KeyVersion],
    grace: Period,
    now: DateTime<Utc>,
) -> Vec<Superseded> {
    let mut ordered: Vec<&KeyVersion> = versions.iter().collect();
    // Oldest first; the current version last whatever the times say (whole seconds: a rotation
    // right after a creation shares its second).
    ordered.sort_by(|a, b| {
        (a.version == current)
            .cmp(&(b.version == current))
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| b.version.cmp(&a.version))
    });
    ordered
        .windows(2)
        .filter_map(|pair| {
            let (old, newer) = (pair[0], pair[1]);
            let at = newer.created?;
            let due = grace.after(at)?;
            (old.enabled && old.version != current && old.created.is_some() && due <= now).then(
                || Superseded {
                    version: old.version.clone(),
                    by: newer.version.clone(),
                    at,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn v(version: &str, created: Option<DateTime<Utc>>, enabled: bool) -> KeyVersion {
        KeyVersion {
            version: version.into(),
            enabled,
            created,
            expires_on: None,
            not_before: None,
        }
    }

    const ONE_DAY: Period = Period {
        years: 0,
        months: 0,
        days: 1,
    };

    fn names(out: &[Superseded]) -> Vec<&str> {
        out.iter().map(|s| s.version.as_str()).collect()
    }

    #[test]
    fn a_version_is_disabled_once_the_grace_after_its_successor_has_passed() {
        // a replaced by b on the 2nd at 10:00, b by c on the 3rd at 10:00 (the vault's order
        // of the list does not matter).
        let versions = [
            v("c", Some(at(3, 10)), true),
            v("a", Some(at(1, 10)), true),
            v("b", Some(at(2, 10)), true),
        ];
        // Just before a's grace ends: nothing.
        assert!(to_disable("c", &versions, ONE_DAY, at(3, 9)).is_empty());
        // At the end of a's grace: a, replaced by b at that time.
        assert_eq!(
            to_disable("c", &versions, ONE_DAY, at(3, 10)),
            [Superseded {
                version: "a".into(),
                by: "b".into(),
                at: at(2, 10)
            }]
        );
        // A day after c arrived: b as well; the current version never.
        let later = to_disable("c", &versions, ONE_DAY, at(4, 10) + Duration::days(30));
        assert_eq!(names(&later), ["a", "b"]);
    }

    #[test]
    fn disabled_current_and_undatable_versions_are_left_alone() {
        let versions = [
            v("a", Some(at(1, 0)), false),
            v("b", None, true),
            v("c", Some(at(2, 0)), true),
            v("d", Some(at(3, 0)), true),
        ];
        let far = at(28, 0);
        // a: already disabled. b: no creation time (sorted first), so its successor's time
        // dates only b, which cannot be dated itself. c: replaced by d.
        assert_eq!(names(&to_disable("d", &versions, ONE_DAY, far)), ["c"]);
        // A current version that is older than another (a clock skew) is still never touched,
        // and what it superseded is judged by its own creation.
        let skewed = [
            v("new", Some(at(1, 0)), true),
            v("old", Some(at(2, 0)), true),
        ];
        assert_eq!(
            to_disable("new", &skewed, ONE_DAY, far),
            [Superseded {
                version: "old".into(),
                by: "new".into(),
                at: at(1, 0)
            }]
        );
        // Steady state: once disabled, nothing more to do.
        let done = [v("c", Some(at(2, 0)), false), v("d", Some(at(3, 0)), true)];
        assert!(to_disable("d", &done, ONE_DAY, far).is_empty());
        assert!(to_disable("d", &[], ONE_DAY, far).is_empty());
    }

    #[test]
    fn a_rotation_in_the_same_second_as_the_creation_supersedes_the_first_version() {
        let same = at(1, 0);
        let versions = [
            v("zzz-current", Some(same), true),
            v("aaa-first", Some(same), true),
        ];
        assert_eq!(
            names(&to_disable("zzz-current", &versions, ONE_DAY, at(3, 0))),
            ["aaa-first"]
        );
    }
}
