//! Key rotation policies: ISO-8601 durations, Key Vault's validation rules and
//! the computation of when an automatic rotation is due.
//!
//! Durations are compared with fixed lengths, as the service documents its
//! limits in days: a year counts 365 days, a month 30 days, a week 7 days.

use crate::dialect::ActionCase;
use crate::keyvault_rules::{
    DAY_SECONDS, PolicyAction, PolicyPart, PolicyTrigger, check_rotation_policy,
};
use crate::model::{
    LifetimeActionOut, PolicyActionOut, PolicyAttributesOut, RotationPolicyIn, RotationPolicyOut,
    TriggerOut,
};

pub const DAY: i64 = DAY_SECONDS;

/// An ISO-8601 duration as given by the client (echoed verbatim) plus its
/// length in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoDuration {
    pub raw: String,
    pub seconds: i64,
}

/// Parses `PnYnMnWnDTnHnMnS` (every part optional, at least one present).
pub fn parse_duration(raw: &str) -> Result<IsoDuration, String> {
    let invalid = || {
        format!(
            "'{raw}' is not a valid ISO 8601 duration (expected e.g. P90D, P3M, P1Y, P2W or PT48H)"
        )
    };
    let rest = raw
        .strip_prefix('P')
        .or_else(|| raw.strip_prefix('p'))
        .ok_or_else(invalid)?;
    let mut seconds: i64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut parts = 0;
    let mut last_unit_rank = 0;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => {
                in_time = true;
                last_unit_rank = 10;
            }
            d if d.is_ascii_digit() => number.push(d),
            unit => {
                if number.is_empty() {
                    return Err(invalid());
                }
                let (rank, unit_seconds) = match (in_time, unit) {
                    (false, 'Y') => (1, 365 * DAY),
                    (false, 'M') => (2, 30 * DAY),
                    (false, 'W') => (3, 7 * DAY),
                    (false, 'D') => (4, DAY),
                    (true, 'H') => (11, 3_600),
                    (true, 'M') => (12, 60),
                    (true, 'S') => (13, 1),
                    _ => return Err(invalid()),
                };
                if rank <= last_unit_rank {
                    return Err(invalid());
                }
                last_unit_rank = rank;
                let n: i64 = number.parse().map_err(|_| invalid())?;
                seconds = n
                    .checked_mul(unit_seconds)
                    .and_then(|s| s.checked_add(seconds))
                    .ok_or_else(invalid)?;
                number.clear();
                parts += 1;
            }
        }
    }
    if !number.is_empty() || parts == 0 {
        return Err(invalid());
    }
    Ok(IsoDuration {
        raw: raw.to_string(),
        seconds,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionType {
    Rotate,
    Notify,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Rotate => "Rotate",
            ActionType::Notify => "Notify",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    AfterCreate(IsoDuration),
    BeforeExpiry(IsoDuration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifetimeAction {
    pub trigger: Trigger,
    pub action: ActionType,
    /// The type as the client spelled it (answered by the `as-sent` dialect).
    pub sent: String,
}

/// A validated policy body (what a PUT asks for, before timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub lifetime_actions: Vec<LifetimeAction>,
    pub expiry_time: Option<IsoDuration>,
}

/// The policy stored for a key name (shared by all its versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    pub spec: PolicySpec,
    pub created: i64,
    pub updated: i64,
}

/// The Notify action the service adds when a policy has none (and which is
/// the whole of the default policy): notify 30 days before expiry.
pub fn default_notify() -> LifetimeAction {
    LifetimeAction {
        trigger: Trigger::BeforeExpiry(IsoDuration {
            raw: "P30D".into(),
            seconds: 30 * DAY,
        }),
        action: ActionType::Notify,
        sent: ActionType::Notify.as_str().to_string(),
    }
}

/// Checks a PUT body against Key Vault's rules and normalises it: action types
/// are case-insensitive, and, like the real service, a policy without a
/// Notify action gets the default `Notify` 30 days before expiry appended
/// (an empty `lifetimeActions` therefore resets the policy to the default).
pub fn validate(input: &RotationPolicyIn) -> Result<PolicySpec, String> {
    let expiry_time = match input
        .attributes
        .as_ref()
        .and_then(|a| a.expiry_time.as_deref())
    {
        Some(raw) => {
            let d = parse_duration(raw).map_err(|e| format!("Invalid expiryTime: {e}."))?;
            Some(d)
        }
        None => None,
    };

    let mut actions = Vec::new();
    for (i, item) in input.lifetime_actions.iter().flatten().enumerate() {
        let kind = item
            .action
            .as_ref()
            .and_then(|a| a.kind.as_deref())
            .ok_or_else(|| format!("lifetimeActions[{i}]: action.type is required."))?;
        let action = if kind.eq_ignore_ascii_case("rotate") {
            ActionType::Rotate
        } else if kind.eq_ignore_ascii_case("notify") {
            ActionType::Notify
        } else {
            return Err(format!(
                "lifetimeActions[{i}]: unknown action type '{kind}'; expected Rotate or Notify."
            ));
        };
        let trigger_in = item
            .trigger
            .as_ref()
            .ok_or_else(|| format!("lifetimeActions[{i}]: trigger is required."))?;
        let trigger = match (
            trigger_in.time_after_create.as_deref(),
            trigger_in.time_before_expiry.as_deref(),
        ) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!(
                    "lifetimeActions[{i}]: exactly one of trigger.timeAfterCreate and trigger.timeBeforeExpiry must be set."
                ));
            }
            (Some(raw), None) => Trigger::AfterCreate(
                parse_duration(raw)
                    .map_err(|e| format!("lifetimeActions[{i}]: invalid timeAfterCreate: {e}."))?,
            ),
            (None, Some(raw)) => Trigger::BeforeExpiry(
                parse_duration(raw)
                    .map_err(|e| format!("lifetimeActions[{i}]: invalid timeBeforeExpiry: {e}."))?,
            ),
        };
        actions.push(LifetimeAction {
            trigger,
            action,
            sent: kind.to_string(),
        });
    }

    // Key Vault's rules, from the operator's table (the same checks its `validate` makes).
    let notifies = actions
        .iter()
        .filter(|a| a.action == ActionType::Notify)
        .count();
    let checked: Vec<(PolicyAction, PolicyTrigger)> = actions
        .iter()
        .map(|a| {
            (
                match a.action {
                    ActionType::Rotate => PolicyAction::Rotate,
                    ActionType::Notify => PolicyAction::Notify,
                },
                match &a.trigger {
                    Trigger::AfterCreate(d) => PolicyTrigger::AfterCreate(d.seconds),
                    Trigger::BeforeExpiry(d) => PolicyTrigger::BeforeExpiry(d.seconds),
                },
            )
        })
        .collect();
    check_rotation_policy(expiry_time.as_ref().map(|d| d.seconds), &checked).map_err(|e| {
        let place = match e.part {
            PolicyPart::ExpiryTime => "attributes.expiryTime".to_owned(),
            PolicyPart::Action(i) => format!("lifetimeActions[{i}]"),
            PolicyPart::Actions => "lifetimeActions".to_owned(),
        };
        format!("Invalid rotation policy: {place}: {}.", e.message)
    })?;

    if notifies == 0 {
        actions.push(default_notify());
    }
    Ok(PolicySpec {
        lifetime_actions: actions,
        expiry_time,
    })
}

impl PolicySpec {
    /// The trigger of the Rotate action, if the policy has one.
    pub fn rotate_trigger(&self) -> Option<&Trigger> {
        self.lifetime_actions
            .iter()
            .find(|a| a.action == ActionType::Rotate)
            .map(|a| &a.trigger)
    }

    /// When the version `(created, exp)` is due for automatic rotation.
    pub fn rotation_due_at(&self, created: i64, exp: Option<i64>) -> Option<i64> {
        match self.rotate_trigger()? {
            Trigger::AfterCreate(d) => Some(created.saturating_add(d.seconds)),
            Trigger::BeforeExpiry(d) => exp.map(|e| e.saturating_sub(d.seconds)),
        }
    }

    /// `exp` of a version created by a rotation at `at`.
    pub fn expiry_for_new_version(&self, at: i64) -> Option<i64> {
        self.expiry_time
            .as_ref()
            .map(|d| at.saturating_add(d.seconds))
    }
}

fn actions_out(actions: &[LifetimeAction], case: ActionCase) -> Vec<LifetimeActionOut> {
    actions
        .iter()
        .map(|a| {
            let trigger = match &a.trigger {
                Trigger::AfterCreate(d) => TriggerOut {
                    time_after_create: Some(d.raw.clone()),
                    time_before_expiry: None,
                },
                Trigger::BeforeExpiry(d) => TriggerOut {
                    time_after_create: None,
                    time_before_expiry: Some(d.raw.clone()),
                },
            };
            LifetimeActionOut {
                trigger,
                action: PolicyActionOut {
                    kind: case.spell(a.action, &a.sent),
                },
            }
        })
        .collect()
}

impl RotationPolicy {
    pub fn to_model(&self, id: String, case: ActionCase) -> RotationPolicyOut {
        RotationPolicyOut {
            id: Some(id),
            lifetime_actions: actions_out(&self.spec.lifetime_actions, case),
            attributes: PolicyAttributesOut {
                expiry_time: self.spec.expiry_time.as_ref().map(|d| d.raw.clone()),
                created: Some(self.created),
                updated: Some(self.updated),
            },
        }
    }
}

/// What GET rotationpolicy answers for a key that never had a policy set.
///
/// Evidence gathered for this (no REST doc states it outright):
/// * `Get-AzKeyVaultKeyRotationPolicy` docs show, for a key without a policy,
///   `Id :` empty, `LifetimeActions : {[Action: Notify, TimeBeforeExpiry: P30D]}`,
///   and empty `ExpiresIn`, `CreatedOn`, `UpdatedOn`;
/// * the JS SDK documents `id`, `createdOn` and `updatedOn` as "undefined if a
///   policy has not been explicitly set";
/// * SDK recordings show the service adding that same Notify/P30D action to
///   every policy PUT without one.
///
/// So the default has no `id`, an empty `attributes` object and the single
/// default Notify action.
pub fn default_policy_model(case: ActionCase) -> RotationPolicyOut {
    RotationPolicyOut {
        id: None,
        lifetime_actions: actions_out(&[default_notify()], case),
        attributes: PolicyAttributesOut::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PolicyActionIn, PolicyAttributesIn, PolicyLifetimeActionIn, TriggerIn};

    fn action(
        kind: &str,
        after_create: Option<&str>,
        before_expiry: Option<&str>,
    ) -> PolicyLifetimeActionIn {
        PolicyLifetimeActionIn {
            trigger: Some(TriggerIn {
                time_after_create: after_create.map(String::from),
                time_before_expiry: before_expiry.map(String::from),
            }),
            action: Some(PolicyActionIn {
                kind: Some(kind.into()),
            }),
        }
    }

    fn policy(expiry: Option<&str>, actions: Vec<PolicyLifetimeActionIn>) -> RotationPolicyIn {
        RotationPolicyIn {
            lifetime_actions: Some(actions),
            attributes: Some(PolicyAttributesIn {
                expiry_time: expiry.map(String::from),
            }),
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("P90D").unwrap().seconds, 90 * DAY);
        assert_eq!(parse_duration("P2M").unwrap().seconds, 60 * DAY);
        assert_eq!(parse_duration("P1Y10D").unwrap().seconds, 375 * DAY);
        assert_eq!(parse_duration("P2W").unwrap().seconds, 14 * DAY);
        assert_eq!(parse_duration("PT48H").unwrap().seconds, 2 * DAY);
        assert_eq!(parse_duration("P1DT1H1M1S").unwrap().seconds, DAY + 3661);
        assert_eq!(parse_duration("P90D").unwrap().raw, "P90D");
        for bad in [
            "", "P", "PT", "90D", "P1H", "PD", "P1D2", "P1M1Y", "PT1D", "P-1D", "P1.5D",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn accepts_valid_policies_and_appends_default_notify() {
        let spec = validate(&policy(
            Some("P90D"),
            vec![action("rotate", Some("P30D"), None)],
        ))
        .unwrap();
        assert_eq!(spec.lifetime_actions.len(), 2);
        assert_eq!(spec.lifetime_actions[0].action, ActionType::Rotate);
        assert_eq!(spec.lifetime_actions[1], default_notify());

        let spec = validate(&policy(
            Some("P1Y"),
            vec![
                action("Rotate", None, Some("P30D")),
                action("NOTIFY", None, Some("P14D")),
            ],
        ))
        .unwrap();
        assert_eq!(spec.lifetime_actions.len(), 2);
        assert_eq!(spec.lifetime_actions[1].action, ActionType::Notify);

        // No expiry is fine for a timeAfterCreate rotation (recorded service behaviour).
        assert!(validate(&policy(None, vec![action("Rotate", Some("P2M"), None)])).is_ok());
        // An empty list resets to the default policy.
        let spec = validate(&policy(None, vec![])).unwrap();
        assert_eq!(spec.lifetime_actions, vec![default_notify()]);
    }

    #[test]
    fn rejects_each_broken_rule() {
        let cases = [
            ("expiry < 28 days", policy(Some("P27D"), vec![])),
            ("bad expiry", policy(Some("90 days"), vec![])),
            (
                "rotate after create < 7d",
                policy(None, vec![action("Rotate", Some("P6D"), None)]),
            ),
            (
                "before expiry < 7d",
                policy(Some("P90D"), vec![action("Notify", None, Some("P6D"))]),
            ),
            (
                "rotate before expiry w/o expiry",
                policy(None, vec![action("Rotate", None, Some("P30D"))]),
            ),
            (
                "after create too close to expiry",
                policy(Some("P30D"), vec![action("Rotate", Some("P24D"), None)]),
            ),
            (
                "before expiry too close to creation",
                policy(Some("P30D"), vec![action("Rotate", None, Some("P24D"))]),
            ),
            (
                "two rotates",
                policy(
                    Some("P90D"),
                    vec![
                        action("Rotate", Some("P30D"), None),
                        action("Rotate", None, Some("P30D")),
                    ],
                ),
            ),
            (
                "two notifies",
                policy(
                    Some("P90D"),
                    vec![
                        action("Notify", None, Some("P30D")),
                        action("Notify", None, Some("P10D")),
                    ],
                ),
            ),
            (
                "notify after create",
                policy(Some("P90D"), vec![action("Notify", Some("P30D"), None)]),
            ),
            (
                "both triggers",
                policy(
                    Some("P90D"),
                    vec![action("Rotate", Some("P30D"), Some("P30D"))],
                ),
            ),
            (
                "no trigger",
                policy(Some("P90D"), vec![action("Rotate", None, None)]),
            ),
            (
                "unknown type",
                policy(Some("P90D"), vec![action("Explode", Some("P30D"), None)]),
            ),
        ];
        for (what, p) in cases {
            assert!(validate(&p).is_err(), "{what} should be rejected");
        }
    }

    #[test]
    fn computes_rotation_due_times() {
        let after = validate(&policy(
            Some("P90D"),
            vec![action("Rotate", Some("P30D"), None)],
        ))
        .unwrap();
        assert_eq!(after.rotation_due_at(1_000, None), Some(1_000 + 30 * DAY));
        assert_eq!(after.expiry_for_new_version(5), Some(5 + 90 * DAY));

        let before = validate(&policy(
            Some("P90D"),
            vec![action("Rotate", None, Some("P20D"))],
        ))
        .unwrap();
        assert_eq!(before.rotation_due_at(1_000, None), None);
        assert_eq!(
            before.rotation_due_at(1_000, Some(1_000 + 90 * DAY)),
            Some(1_000 + 70 * DAY)
        );

        let notify_only = validate(&policy(
            Some("P90D"),
            vec![action("Notify", None, Some("P30D"))],
        ))
        .unwrap();
        assert_eq!(notify_only.rotation_due_at(0, Some(100 * DAY)), None);
        assert_eq!(notify_only.expiry_for_new_version(0), Some(90 * DAY));
    }

    #[test]
    fn default_policy_shape() {
        let json = serde_json::to_value(default_policy_model(ActionCase::Canonical)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
                "attributes": {}
            })
        );
    }
}
