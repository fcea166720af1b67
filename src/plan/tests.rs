//! Unit tests of the plan: desired keys come from inline `VaultKey` spec manifests (through
//! `validate_spec`, as the reconciler builds them), observed keys from a small builder.

use super::*;

use crate::api::{KeyOperation, ReleasePolicy};
use crate::keyvault::DeletedKey;
use crate::keyvault::ObservedAction;
use crate::validate::validate_spec;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const KEY_NAME: &str = "signing-key";
const OWNER_VALUE: &str = "team-a/signing-key";
const OWNER_UID: &str = "uid-1";
/// When the latest observed version was created.
const CREATED: &str = "2026-01-10T08:00:00Z";
/// The planner's clock.
const NOW: &str = "2026-03-01T12:00:00Z";

fn t(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn desired(yaml: &str) -> DesiredKey {
    let spec = serde_norway::from_str(yaml).expect("test spec parses");
    validate_spec(&spec, KEY_NAME.into()).expect("test spec is valid")
}

fn owner() -> Owner {
    Owner {
        namespace: "team-a".into(),
        name: KEY_NAME.into(),
        uid: OWNER_UID.into(),
    }
}

fn ops(list: &[KeyOperation]) -> BTreeSet<KeyOperation> {
    list.iter().copied().collect()
}

/// The tags the operator writes: the given user tags plus the owner tags.
fn owned_tags(user: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = user
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tags.insert(OWNER_TAG.into(), OWNER_VALUE.into());
    tags.insert(OWNER_UID_TAG.into(), OWNER_UID.into());
    tags
}

/// A latest version as the vault reports it; starts owned by [`owner()`], enabled, no
/// operations, no `nbf`/`exp`, version `v1`, created at [`CREATED`] (updated later).
struct Key(ObservedKey);

fn owned_key(key_type: &str) -> Key {
    let mut tags = BTreeMap::new();
    tags.insert(OWNER_TAG.to_owned(), OWNER_VALUE.to_owned());
    tags.insert(OWNER_UID_TAG.to_owned(), OWNER_UID.to_owned());
    Key(ObservedKey {
        key_id: format!("https://v.vault.azure.net/keys/{KEY_NAME}"),
        version: "v1".into(),
        key_type: key_type.into(),
        key_size: None,
        curve: None,
        public_exponent: None,
        key_ops: BTreeSet::new(),
        enabled: true,
        not_before: None,
        expires_on: None,
        created: Some(t(CREATED)),
        updated: Some(t("2026-02-01T09:30:00Z")),
        tags,
        public_thumbprint: None,
        public_key: None,
    })
}

/// A software RSA-2048 key with exponent 65537, as Key Vault generates by default.
fn rsa_key() -> Key {
    owned_key("RSA").size(2048).exponent(&[1, 0, 1])
}

fn ec_key(curve: &str) -> Key {
    owned_key("EC").curve(curve)
}

impl Key {
    fn version(mut self, version: &str) -> Self {
        self.0.version = version.into();
        self
    }
    fn size(mut self, bits: i32) -> Self {
        self.0.key_size = Some(bits);
        self
    }
    fn curve(mut self, name: &str) -> Self {
        self.0.curve = Some(name.into());
        self
    }
    fn exponent(mut self, big_endian: &[u8]) -> Self {
        self.0.public_exponent = Some(big_endian.to_vec());
        self
    }
    fn ops(mut self, names: &[&str]) -> Self {
        self.0.key_ops = names.iter().map(|op| (*op).to_owned()).collect();
        self
    }
    fn disabled(mut self) -> Self {
        self.0.enabled = false;
        self
    }
    fn not_before(mut self, at: &str) -> Self {
        self.0.not_before = Some(t(at));
        self
    }
    fn expires(mut self, at: &str) -> Self {
        self.0.expires_on = Some(t(at));
        self
    }
    fn no_created(mut self) -> Self {
        self.0.created = None;
        self
    }
    fn tag(mut self, key: &str, value: &str) -> Self {
        self.0.tags.insert(key.into(), value.into());
        self
    }
    fn untag(mut self, key: &str) -> Self {
        self.0.tags.remove(key);
        self
    }
    fn unowned(self) -> Self {
        self.untag(OWNER_TAG).untag(OWNER_UID_TAG)
    }
    fn build(self) -> ObservedKey {
        self.0
    }
}

fn after_create(action: &str, period: &str) -> ObservedAction {
    ObservedAction {
        action: action.into(),
        time_after_create: Some(period.into()),
        time_before_expiry: None,
    }
}

fn before_expiry(action: &str, period: &str) -> ObservedAction {
    ObservedAction {
        action: action.into(),
        time_after_create: None,
        time_before_expiry: Some(period.into()),
    }
}

fn vault_policy(expires_in: Option<&str>, actions: Vec<ObservedAction>) -> ObservedPolicy {
    ObservedPolicy {
        expires_in: expires_in.map(str::to_owned),
        actions,
    }
}

/// What Key Vault reports for a key whose policy was never set.
fn default_vault_policy() -> ObservedPolicy {
    vault_policy(None, vec![before_expiry("Notify", "P30D")])
}

fn days(days: u32) -> Period {
    Period {
        years: 0,
        months: 0,
        days,
    }
}

/// Everything `plan()` reads, with defaults: nothing in the vault, nothing remembered, no
/// import material, the clock at [`NOW`].
struct Scenario {
    desired: DesiredKey,
    owner: Owner,
    observed: Observed,
    remembered: Remembered,
    material: Option<MaterialSummary>,
    now: DateTime<Utc>,
}

fn given(spec_yaml: &str) -> Scenario {
    Scenario {
        desired: desired(spec_yaml),
        owner: owner(),
        observed: Observed::default(),
        remembered: Remembered::default(),
        material: None,
        now: t(NOW),
    }
}

impl Scenario {
    fn with_key(mut self, key: Key) -> Self {
        self.observed.latest = Some(key.build());
        self
    }
    fn with_vault_policy(mut self, policy: ObservedPolicy) -> Self {
        self.observed.policy = Some(policy);
        self
    }
    fn managed_before(mut self) -> Self {
        self.remembered.current_version = Some("v0".into());
        self
    }
    fn remembering_version(mut self, version: &str) -> Self {
        self.remembered.current_version = Some(version.into());
        self
    }
    fn with_deleted(mut self, tags: &[(&str, &str)]) -> Self {
        self.observed.deleted = Some(DeletedKey {
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        self
    }
    fn remembering_correction(mut self, record: CorrectionRecord) -> Self {
        self.remembered.last_correction = Some(record);
        self
    }
    fn remembering_token(mut self, token: &str) -> Self {
        self.remembered.observed_rotate_token = Some(token.into());
        self
    }
    fn pending_rotation(mut self, token: &str, from_version: &str) -> Self {
        self.remembered.pending_rotation = Some(PendingRotation {
            token: token.into(),
            from_version: from_version.into(),
        });
        self
    }
    fn with_material(mut self, thumbprint: &str) -> Self {
        self.material = Some(MaterialSummary {
            thumbprint: thumbprint.into(),
        });
        self
    }
    fn plan(&self) -> Plan {
        super::plan(&PlanInput {
            desired: &self.desired,
            owner: &self.owner,
            observed: &self.observed,
            remembered: &self.remembered,
            material: self.material.as_ref(),
            now: self.now,
        })
    }
    /// The planned steps; panics when the plan is blocked.
    fn steps(&self) -> Vec<Step> {
        match self.plan() {
            Plan::Steps(steps) => steps,
            blocked => panic!("expected steps, got {blocked:?}"),
        }
    }
    fn desired_policy(&self) -> DesiredRotationPolicy {
        self.desired
            .rotation_policy
            .clone()
            .expect("the spec has a rotation policy")
    }
}

fn steps(steps: Vec<Step>) -> Plan {
    Plan::Steps(steps)
}

fn converged() -> Plan {
    Plan::Steps(Vec::new())
}

/// One UpdateProperties on the latest version (`v1`).
fn update(drift: &[&'static str], properties: KeyProperties) -> Step {
    Step::UpdateProperties {
        version: "v1".into(),
        properties,
        drift: drift.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Key absent
// ---------------------------------------------------------------------------------------------

#[test]
fn absent_key_is_created_with_every_property_of_the_spec() {
    let scenario = given(
        r#"
        vaultUrl: https://v.vault.azure.net
        keyType: RSA-HSM
        keySize: 4096
        publicExponent: 65537
        keyOps: [verify, sign]
        attributes:
          enabled: false
          notBefore: "2026-04-01T00:00:00Z"
          expiresOn: "2027-04-01T00:00:00Z"
          exportable: true
        releasePolicy:
          data: '{"anyOf":[]}'
          immutable: true
        tags:
          team: payments
        "#,
    );

    let mut tags = BTreeMap::new();
    tags.insert("team".to_owned(), "payments".to_owned());
    tags.insert(
        "vaultkey.dev/owner".to_owned(),
        "team-a/signing-key".to_owned(),
    );
    tags.insert("vaultkey.dev/owner-uid".to_owned(), "uid-1".to_owned());
    let expected = CreateKey {
        key_type: KeyType::RsaHsm,
        size: Some(4096),
        curve: None,
        public_exponent: Some(65537),
        properties: KeyProperties {
            key_ops: Some(ops(&[KeyOperation::Sign, KeyOperation::Verify])),
            enabled: Some(false),
            not_before: Some(t("2026-04-01T00:00:00Z")),
            expires_on: Some(t("2027-04-01T00:00:00Z")),
            exportable: Some(true),
            release_policy: Some(ReleasePolicy {
                content_type: None,
                data: r#"{"anyOf":[]}"#.into(),
                immutable: Some(true),
            }),
            tags: Some(tags),
        },
    };
    assert_eq!(scenario.plan(), steps(vec![Step::Create(expected)]));
}

#[test]
fn absent_ec_key_gets_the_default_curve_and_the_vaults_default_operations() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC}");
    let expected = CreateKey {
        key_type: KeyType::Ec,
        size: None,
        curve: Some(Curve::P256),
        public_exponent: None,
        properties: KeyProperties {
            enabled: Some(true),
            tags: Some(owned_tags(&[])),
            ..Default::default()
        },
    };
    assert_eq!(scenario.plan(), steps(vec![Step::Create(expected)]));
}

#[test]
fn absent_rsa_and_oct_hsm_keys_get_the_default_sizes() {
    for (yaml, key_type, size) in [
        (
            "{vaultUrl: https://v.vault.azure.net, keyType: RSA}",
            KeyType::Rsa,
            2048,
        ),
        (
            "{vaultUrl: https://v.vault.azure.net, keyType: oct-HSM}",
            KeyType::OctHsm,
            256,
        ),
    ] {
        let expected = CreateKey {
            key_type,
            size: Some(size),
            curve: None,
            public_exponent: None,
            properties: KeyProperties {
                enabled: Some(true),
                tags: Some(owned_tags(&[])),
                ..Default::default()
            },
        };
        assert_eq!(
            given(yaml).plan(),
            steps(vec![Step::Create(expected)]),
            "{yaml}"
        );
    }
}

#[test]
fn absent_key_with_expires_after_expires_relative_to_now() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC, attributes: {expiresAfter: P1Y}}",
    );
    let expected = CreateKey {
        key_type: KeyType::Ec,
        size: None,
        curve: Some(Curve::P256),
        public_exponent: None,
        properties: KeyProperties {
            enabled: Some(true),
            // NOW (2026-03-01T12:00:00Z) + 1 year.
            expires_on: Some(t("2027-03-01T12:00:00Z")),
            tags: Some(owned_tags(&[])),
            ..Default::default()
        },
    };
    assert_eq!(scenario.plan(), steps(vec![Step::Create(expected)]));
}

#[test]
fn absent_key_with_a_policy_is_created_then_given_the_policy() {
    let scenario = given(
        r#"
        vaultUrl: https://v.vault.azure.net
        keyType: EC
        rotationPolicy:
          expiresIn: P90D
          lifetimeActions:
            - action: Notify
              timeBeforeExpiry: P7D
            - action: Rotate
              timeAfterCreate: P30D
        "#,
    );
    let steps = scenario.steps();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(matches!(steps[0], Step::Create(_)), "{steps:?}");
    let expected_policy = DesiredRotationPolicy {
        expires_in: Some(days(90)),
        actions: vec![
            DesiredLifetimeAction {
                action: LifetimeActionType::Rotate,
                trigger: Trigger::AfterCreate(days(30).into()),
            },
            DesiredLifetimeAction {
                action: LifetimeActionType::Notify,
                trigger: Trigger::BeforeExpiry(days(7).into()),
            },
        ],
    };
    assert_eq!(steps[1], Step::SetRotationPolicy(expected_policy));
}

#[test]
fn absent_key_with_a_rotate_token_adopts_the_token_without_rotating() {
    let scenario = given(
        r#"
        vaultUrl: https://v.vault.azure.net
        keyType: EC
        rotateToken: "2026-03"
        rotationPolicy: {expiresIn: P90D}
        "#,
    );
    let steps = scenario.steps();
    assert!(matches!(steps[0], Step::Create(_)), "{steps:?}");
    assert_eq!(
        steps[1..],
        [
            Step::SetRotationPolicy(scenario.desired_policy()),
            Step::AdoptRotateToken {
                token: "2026-03".into()
            },
        ]
    );
}

#[test]
fn absent_key_with_an_already_remembered_token_does_not_adopt_it_again() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC, rotateToken: a}")
        .remembering_token("a");
    let steps = scenario.steps();
    assert!(matches!(steps.as_slice(), [Step::Create(_)]), "{steps:?}");
}

const IMPORT_RSA: &str = "
    vaultUrl: https://v.vault.azure.net
    keyType: RSA
    import: {secretRef: {name: signing-material, key: key.pem}}
";

#[test]
fn absent_imported_key_is_imported_with_the_material_tag() {
    let scenario = given(IMPORT_RSA).with_material("thumb-1");
    let expected = Step::Import {
        properties: KeyProperties {
            enabled: Some(true),
            tags: Some(owned_tags(&[("vaultkey.dev/imported-material", "thumb-1")])),
            ..Default::default()
        },
        hsm: false,
    };
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn absent_imported_hsm_key_is_imported_into_the_hsm_with_its_policy() {
    let scenario = given(
        "
        vaultUrl: https://v.vault.azure.net
        keyType: EC-HSM
        import: {secretRef: {name: signing-material, key: key.pem}}
        rotationPolicy: {expiresIn: P1Y}
        ",
    )
    .with_material("thumb-1");
    let steps = scenario.steps();
    let [
        Step::Import { properties, hsm },
        Step::SetRotationPolicy(policy),
    ] = steps.as_slice()
    else {
        panic!("Import then SetRotationPolicy: {steps:?}");
    };
    assert!(*hsm);
    assert_eq!(
        properties
            .tags
            .as_ref()
            .and_then(|t| t.get(IMPORTED_MATERIAL_TAG)),
        Some(&"thumb-1".to_owned())
    );
    assert_eq!(
        policy.expires_in,
        Some(Period {
            years: 1,
            months: 0,
            days: 0
        })
    );
}

#[test]
fn absent_imported_key_without_material_plans_nothing() {
    assert_eq!(given(IMPORT_RSA).plan(), converged());
}

#[test]
fn key_owned_by_another_vaultkey_blocks_even_with_adopt() {
    for yaml in [
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA}",
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, adopt: true}",
    ] {
        let scenario = given(yaml).with_key(rsa_key().tag(OWNER_TAG, "team-b/signing-key"));
        assert_eq!(
            scenario.plan(),
            Plan::Blocked(Blocker::OwnedByAnotherVaultKey {
                owner: "team-b/signing-key".into()
            }),
            "{yaml}"
        );
    }
}

#[test]
fn key_owned_by_another_vaultkey_blocks_before_any_type_change() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC, adopt: true}")
        .with_key(rsa_key().tag(OWNER_TAG, "team-a/other-key"));
    assert_eq!(
        scenario.plan(),
        Plan::Blocked(Blocker::OwnedByAnotherVaultKey {
            owner: "team-a/other-key".into()
        })
    );
}

#[test]
fn unowned_key_without_adopt_blocks() {
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}").with_key(rsa_key().unowned());
    assert_eq!(scenario.plan(), Plan::Blocked(Blocker::KeyExistsNotAdopted));
}

#[test]
fn unowned_key_with_adopt_is_tagged_with_its_owner() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, adopt: true, tags: {team: payments}}",
    )
    .with_key(rsa_key().unowned().tag("team", "payments"));
    let expected = update(
        &["tags"],
        KeyProperties {
            tags: Some(owned_tags(&[("team", "payments")])),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn adopted_key_is_converged_once_tagged() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, adopt: true}")
        .with_key(rsa_key());
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn recreated_vaultkey_with_a_new_uid_corrects_the_uid_tag_without_blocking() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key().tag(OWNER_UID_TAG, "uid-of-the-deleted-vaultkey"));
    let expected = update(
        &["tags"],
        KeyProperties {
            tags: Some(owned_tags(&[])),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

// ---------------------------------------------------------------------------------------------
// The vault contradicts status: recover, report, never replace silently
// ---------------------------------------------------------------------------------------------

const EC_SPEC: &str = "{vaultUrl: https://v.vault.azure.net, keyType: EC}";

#[test]
fn a_version_is_never_created_already_expired() {
    // NOW is 2026-03-01.
    let spec = "{vaultUrl: https://v.vault.azure.net, keyType: EC, attributes: {expiresOn: '2026-02-01T00:00:00Z'}}";
    assert_eq!(
        given(spec).plan(),
        Plan::Blocked(Blocker::ExpiredAtCreation {
            at: t("2026-02-01T00:00:00Z")
        })
    );
    // The key that exists with that expiry is left as it is: nothing to create.
    let existing = given(spec).with_key(ec_key("P-256").expires("2026-02-01T00:00:00Z"));
    assert_eq!(existing.plan(), converged());
}

#[test]
fn managed_key_gone_without_a_trace_is_reported_not_recreated() {
    let scenario = given(EC_SPEC).remembering_version("v7");
    assert_eq!(
        scenario.plan(),
        Plan::Blocked(Blocker::KeyGone {
            version: "v7".into()
        })
    );
}

#[test]
fn managed_key_found_soft_deleted_with_our_owner_tag_is_recovered() {
    let scenario = given(EC_SPEC)
        .remembering_version("v7")
        .with_deleted(&[(OWNER_TAG, OWNER_VALUE)]);
    assert_eq!(scenario.steps(), vec![Step::Recover]);
}

#[test]
fn our_soft_deleted_key_is_recovered_for_a_new_vaultkey_too() {
    // A VaultKey with deletionPolicy Delete, created again under the same name.
    let scenario =
        given(EC_SPEC).with_deleted(&[(OWNER_TAG, OWNER_VALUE), (OWNER_UID_TAG, "old-uid")]);
    assert_eq!(scenario.steps(), vec![Step::Recover]);
}

#[test]
fn soft_deleted_key_is_not_recovered_when_the_spec_says_no() {
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: EC, recoverSoftDeleted: false}")
            .remembering_version("v7")
            .with_deleted(&[(OWNER_TAG, OWNER_VALUE)]);
    assert_eq!(
        scenario.plan(),
        Plan::Blocked(Blocker::SoftDeleted {
            owner: Some(OWNER_VALUE.into())
        })
    );
}

#[test]
fn another_vaultkeys_soft_deleted_key_is_never_recovered() {
    let scenario = given(EC_SPEC).with_deleted(&[(OWNER_TAG, "team-b/other")]);
    assert_eq!(
        scenario.plan(),
        Plan::Blocked(Blocker::SoftDeleted {
            owner: Some("team-b/other".into())
        })
    );
}

#[test]
fn untagged_soft_deleted_key_is_recovered_only_with_adopt() {
    assert_eq!(
        given(EC_SPEC).with_deleted(&[]).plan(),
        Plan::Blocked(Blocker::SoftDeleted { owner: None })
    );
    let adopting =
        given("{vaultUrl: https://v.vault.azure.net, keyType: EC, adopt: true}").with_deleted(&[]);
    assert_eq!(adopting.steps(), vec![Step::Recover]);
}

#[test]
fn owner_tags_replaced_on_the_version_status_recorded_are_put_back() {
    let scenario = given(EC_SPEC)
        .with_key(ec_key("P-256").unowned().tag("team", "x"))
        .remembering_version("v1");
    match scenario.steps().as_slice() {
        [
            Step::UpdateProperties {
                drift, properties, ..
            },
        ] => {
            assert_eq!(drift, &vec!["tags"]);
            assert_eq!(properties.tags, Some(owned_tags(&[])));
        }
        steps => panic!("expected the tags put back, got {steps:?}"),
    }
}

#[test]
fn owner_tags_replaced_but_our_uid_tag_left_are_put_back() {
    let scenario = given(EC_SPEC).with_key(ec_key("P-256").untag(OWNER_TAG));
    assert!(
        matches!(scenario.steps().as_slice(), [Step::UpdateProperties { drift, .. }] if drift == &vec!["tags"])
    );
}

#[test]
fn untagged_key_at_another_version_than_status_recorded_is_a_strangers() {
    let scenario = given(EC_SPEC)
        .with_key(ec_key("P-256").unowned().version("v2"))
        .remembering_version("v1");
    assert_eq!(scenario.plan(), Plan::Blocked(Blocker::KeyExistsNotAdopted));
}

fn correction_after(scenario: &Scenario) -> CorrectionRecord {
    let latest = scenario.observed.latest.clone().expect("a key");
    match scenario.steps().as_slice() {
        [
            Step::UpdateProperties {
                version,
                properties,
                drift,
            },
        ] => CorrectionRecord {
            version: version.clone(),
            fields: drift.iter().map(|f| (*f).to_owned()).collect(),
            sent: fingerprint_properties(properties),
            // The vault answered without keeping the correction: as it was.
            answered: fingerprint_key(&latest),
        },
        steps => panic!("expected one correction, got {steps:?}"),
    }
}

#[test]
fn a_correction_the_vault_did_not_keep_is_not_sent_again() {
    let spec = "{vaultUrl: https://v.vault.azure.net, keyType: EC, attributes: {expiresOn: '2027-01-01T00:00:00Z'}}";
    let first = given(spec).with_key(ec_key("P-256"));
    let record = correction_after(&first);
    let second = given(spec)
        .with_key(ec_key("P-256"))
        .remembering_correction(record);
    assert_eq!(
        second.plan(),
        Plan::Blocked(Blocker::CorrectionNotKept {
            fields: vec!["expiresOn".into()]
        })
    );
}

#[test]
fn a_correction_is_sent_again_when_the_vault_or_the_spec_changed() {
    let spec = "{vaultUrl: https://v.vault.azure.net, keyType: EC, attributes: {expiresOn: '2027-01-01T00:00:00Z'}}";
    let record = correction_after(&given(spec).with_key(ec_key("P-256")));
    // Someone changed the key since: the vault no longer holds what it answered.
    let vault_changed = given(spec)
        .with_key(ec_key("P-256").ops(&["sign"]))
        .remembering_correction(record.clone());
    assert!(matches!(vault_changed.plan(), Plan::Steps(steps) if !steps.is_empty()));
    // The spec asks for another value: another correction.
    let spec_changed = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC, attributes: {expiresOn: '2028-01-01T00:00:00Z'}}",
    )
    .with_key(ec_key("P-256"))
    .remembering_correction(record);
    assert!(matches!(spec_changed.plan(), Plan::Steps(steps) if steps.len() == 1));
}

// ---------------------------------------------------------------------------------------------
// Converged
// ---------------------------------------------------------------------------------------------

#[test]
fn converged_rsa_key_plans_nothing() {
    let scenario = given(
        r#"
        vaultUrl: https://v.vault.azure.net
        keyType: RSA
        keySize: 3072
        publicExponent: 65537
        keyOps: [sign, verify]
        attributes:
          notBefore: "2026-01-01T00:00:00Z"
          expiresOn: "2027-01-01T00:00:00Z"
        tags: {team: payments, env: prod}
        "#,
    )
    .with_key(
        rsa_key()
            .size(3072)
            .ops(&["sign", "verify"])
            .not_before("2026-01-01T00:00:00Z")
            .expires("2027-01-01T00:00:00Z")
            .tag("team", "payments")
            .tag("env", "prod"),
    );
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn converged_ec_key_plans_nothing() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC-HSM, curve: P-384, keyOps: [sign]}",
    )
    .with_key(owned_key("EC-HSM").curve("P-384").ops(&["sign"]));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn converged_oct_hsm_key_plans_nothing() {
    let scenario = given(
        "
        vaultUrl: https://v.vault.azure.net
        keyType: oct-HSM
        keySize: 128
        keyOps: [wrapKey, unwrapKey]
        ",
    )
    .with_key(owned_key("oct-HSM").ops(&["unwrapKey", "wrapKey"]));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn converged_imported_key_plans_nothing() {
    let scenario = given(IMPORT_RSA)
        .with_material("thumb-1")
        .with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-1"));
    assert_eq!(scenario.plan(), converged());
}

const POLICY_SPEC: &str = "
    vaultUrl: https://v.vault.azure.net
    keyType: RSA
    rotationPolicy:
      expiresIn: P90D
      lifetimeActions:
        - {action: Rotate, timeAfterCreate: P30D}
        - {action: Notify, timeBeforeExpiry: P7D}
";

fn vault_has_policy_spec() -> ObservedPolicy {
    vault_policy(
        Some("P90D"),
        vec![
            after_create("Rotate", "P30D"),
            before_expiry("Notify", "P7D"),
        ],
    )
}

#[test]
fn converged_key_with_policy_plans_nothing() {
    let scenario = given(POLICY_SPEC)
        .with_key(rsa_key())
        .with_vault_policy(vault_has_policy_spec());
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn converged_key_with_expires_after_expires_that_long_after_its_creation() {
    // CREATED is 2026-01-10T08:00:00Z.
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {expiresAfter: P1Y}}",
    )
    .with_key(rsa_key().expires("2027-01-10T08:00:00Z"));
    assert_eq!(scenario.plan(), converged());
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {expiresAfter: P90D}}",
    )
    .with_key(rsa_key().expires("2026-04-10T08:00:00Z"));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn policy_with_expires_in_leaves_the_expiry_of_existing_versions_to_key_vault() {
    for attributes in ["{expiresOn: '2027-01-01T00:00:00Z'}", "{expiresAfter: P1Y}"] {
        let yaml = format!(
            "
            vaultUrl: https://v.vault.azure.net
            keyType: RSA
            attributes: {attributes}
            rotationPolicy: {{expiresIn: P90D}}
            "
        );
        for key in [rsa_key().expires("2026-04-10T08:00:00Z"), rsa_key()] {
            let scenario = given(&yaml)
                .with_key(key)
                .with_vault_policy(vault_policy(Some("P90D"), vec![]));
            assert_eq!(scenario.plan(), converged(), "{yaml}");
        }
    }
}

#[test]
fn policy_with_expires_in_still_lets_the_spec_expire_a_version_the_operator_creates() {
    let scenario = given(
        "
        vaultUrl: https://v.vault.azure.net
        keyType: EC
        attributes: {expiresOn: '2027-01-01T00:00:00Z'}
        rotationPolicy: {expiresIn: P90D}
        ",
    );
    let steps = scenario.steps();
    let Step::Create(create) = &steps[0] else {
        panic!("Create first: {steps:?}")
    };
    assert_eq!(
        create.properties.expires_on,
        Some(t("2027-01-01T00:00:00Z"))
    );
}

#[test]
fn imported_material_tag_on_a_generated_key_is_kept() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-from-an-earlier-import"));
    assert_eq!(scenario.plan(), converged());
}

// ---------------------------------------------------------------------------------------------
// Property drift: each property alone
// ---------------------------------------------------------------------------------------------

const DRIFT_SPEC: &str = r#"
    vaultUrl: https://v.vault.azure.net
    keyType: RSA
    keyOps: [sign, verify]
    attributes:
      notBefore: "2026-01-01T00:00:00Z"
      expiresOn: "2027-01-01T00:00:00Z"
    tags: {team: payments}
"#;

/// The latest version exactly as [`DRIFT_SPEC`] wants it.
fn drift_spec_key() -> Key {
    rsa_key()
        .ops(&["sign", "verify"])
        .not_before("2026-01-01T00:00:00Z")
        .expires("2027-01-01T00:00:00Z")
        .tag("team", "payments")
}

fn drift_plan(key: Key) -> Plan {
    given(DRIFT_SPEC).with_key(key).plan()
}

#[test]
fn drift_spec_key_matches_drift_spec() {
    assert_eq!(drift_plan(drift_spec_key()), converged());
}

#[test]
fn disabled_key_is_enabled_again() {
    let expected = update(
        &["enabled"],
        KeyProperties {
            enabled: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(
        drift_plan(drift_spec_key().disabled()),
        steps(vec![expected])
    );
}

#[test]
fn enabled_key_is_disabled_when_the_spec_says_so() {
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {enabled: false}}")
            .with_key(rsa_key());
    let expected = update(
        &["enabled"],
        KeyProperties {
            enabled: Some(false),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn key_operations_compare_as_a_set() {
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, keyOps: [verify, sign]}")
            .with_key(rsa_key().ops(&["sign", "verify"]));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn missing_or_extra_key_operations_are_replaced() {
    let expected = update(
        &["keyOps"],
        KeyProperties {
            key_ops: Some(ops(&[KeyOperation::Sign, KeyOperation::Verify])),
            ..Default::default()
        },
    );
    for observed in [&["sign"][..], &["sign", "verify", "encrypt"], &[]] {
        assert_eq!(
            drift_plan(drift_spec_key().ops(observed)),
            steps(vec![expected.clone()]),
            "{observed:?}"
        );
    }
}

#[test]
fn key_operations_never_drift_when_the_spec_leaves_them_to_the_vault() {
    for observed in [
        &[][..],
        &["sign"],
        &[
            "encrypt",
            "decrypt",
            "wrapKey",
            "unwrapKey",
            "sign",
            "verify",
        ],
    ] {
        let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
            .with_key(rsa_key().ops(observed));
        assert_eq!(scenario.plan(), converged(), "{observed:?}");
    }
}

#[test]
fn changed_or_missing_not_before_is_corrected() {
    // Both dates travel together: some vaults clear the one a PATCH leaves out.
    let expected = update(
        &["notBefore"],
        KeyProperties {
            not_before: Some(t("2026-01-01T00:00:00Z")),
            expires_on: Some(t("2027-01-01T00:00:00Z")),
            ..Default::default()
        },
    );
    let mut missing = drift_spec_key();
    missing.0.not_before = None;
    for key in [drift_spec_key().not_before("2026-02-01T00:00:00Z"), missing] {
        assert_eq!(drift_plan(key), steps(vec![expected.clone()]));
    }
}

#[test]
fn not_before_in_the_vault_is_left_alone_when_the_spec_has_none() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key().not_before("2026-02-01T00:00:00Z"));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn changed_or_missing_expiry_is_corrected() {
    let expected = update(
        &["expiresOn"],
        KeyProperties {
            not_before: Some(t("2026-01-01T00:00:00Z")),
            expires_on: Some(t("2027-01-01T00:00:00Z")),
            ..Default::default()
        },
    );
    let mut missing = drift_spec_key();
    missing.0.expires_on = None;
    for key in [drift_spec_key().expires("2028-01-01T00:00:00Z"), missing] {
        assert_eq!(drift_plan(key), steps(vec![expected.clone()]));
    }
}

#[test]
fn a_date_correction_carries_the_vaults_other_date_as_it_is() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {notBefore: '2026-01-01T00:00:00Z'}}",
    )
    .with_key(rsa_key().expires("2026-06-01T00:00:00Z"));
    match scenario.steps().as_slice() {
        [
            Step::UpdateProperties {
                properties, drift, ..
            },
        ] => {
            assert_eq!(drift, &vec!["notBefore"]);
            assert_eq!(properties.not_before, Some(t("2026-01-01T00:00:00Z")));
            assert_eq!(properties.expires_on, Some(t("2026-06-01T00:00:00Z")));
        }
        steps => panic!("expected one correction, got {steps:?}"),
    }
}

#[test]
fn expiry_in_the_vault_is_left_alone_when_the_spec_has_none() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key().expires("2026-06-01T00:00:00Z"));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn relative_expiry_is_corrected_to_creation_plus_the_period() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {expiresAfter: P6M}}",
    )
    .with_key(rsa_key().expires("2026-06-01T00:00:00Z"));
    // CREATED (2026-01-10T08:00:00Z) + 6 months, not NOW + 6 months.
    let expected = update(
        &["expiresOn"],
        KeyProperties {
            expires_on: Some(t("2026-07-10T08:00:00Z")),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn relative_expiry_is_not_managed_without_a_creation_time() {
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: RSA, attributes: {expiresAfter: P6M}}",
    )
    .with_key(rsa_key().no_created());
    assert_eq!(scenario.plan(), converged());
}

fn tag_update() -> Step {
    update(
        &["tags"],
        KeyProperties {
            tags: Some(owned_tags(&[("team", "payments")])),
            ..Default::default()
        },
    )
}

#[test]
fn missing_user_tag_is_added() {
    assert_eq!(
        drift_plan(drift_spec_key().untag("team")),
        steps(vec![tag_update()])
    );
}

#[test]
fn user_tag_not_in_the_spec_is_removed() {
    assert_eq!(
        drift_plan(drift_spec_key().tag("cost-center", "42")),
        steps(vec![tag_update()])
    );
}

#[test]
fn changed_user_tag_is_restored() {
    assert_eq!(
        drift_plan(drift_spec_key().tag("team", "billing")),
        steps(vec![tag_update()])
    );
}

#[test]
fn unknown_operator_tag_is_removed() {
    assert_eq!(
        drift_plan(drift_spec_key().tag("vaultkey.dev/legacy", "x")),
        steps(vec![tag_update()])
    );
}

#[test]
fn missing_owner_uid_tag_is_restored() {
    assert_eq!(
        drift_plan(drift_spec_key().untag(OWNER_UID_TAG)),
        steps(vec![tag_update()])
    );
}

#[test]
fn tag_correction_keeps_the_imported_material_tag() {
    let scenario = given(DRIFT_SPEC).with_key(
        drift_spec_key()
            .tag(IMPORTED_MATERIAL_TAG, "thumb-1")
            .untag("team"),
    );
    let expected = update(
        &["tags"],
        KeyProperties {
            tags: Some(owned_tags(&[
                ("team", "payments"),
                (IMPORTED_MATERIAL_TAG, "thumb-1"),
            ])),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn every_drifted_property_is_corrected_in_one_update_of_the_latest_version() {
    let key = drift_spec_key()
        .version("v9")
        .disabled()
        .ops(&["sign"])
        .not_before("2026-02-01T00:00:00Z")
        .expires("2028-01-01T00:00:00Z")
        .tag("team", "billing");
    let expected = Step::UpdateProperties {
        version: "v9".into(),
        properties: KeyProperties {
            key_ops: Some(ops(&[KeyOperation::Sign, KeyOperation::Verify])),
            enabled: Some(true),
            not_before: Some(t("2026-01-01T00:00:00Z")),
            expires_on: Some(t("2027-01-01T00:00:00Z")),
            exportable: None,
            release_policy: None,
            tags: Some(owned_tags(&[("team", "payments")])),
        },
        drift: vec!["enabled", "keyOps", "notBefore", "expiresOn", "tags"],
    };
    assert_eq!(drift_plan(key), steps(vec![expected]));
}

// BUG: Key Vault keeps `nbf` and `exp` in whole seconds (keyvault/azure.rs `to_offset` also
// drops the fraction when writing), but plan compares the spec's timestamps exactly. A manifest
// with fractional seconds (valid RFC 3339, accepted by validate and by the CRD's date-time
// format) therefore never converges: every reconcile plans the same UpdateProperties, forever.
#[test]
fn sub_second_timestamps_converge_once_key_vault_has_truncated_them() {
    let scenario = given(
        r#"
        vaultUrl: https://v.vault.azure.net
        keyType: RSA
        attributes:
          notBefore: "2026-01-01T00:00:00.250Z"
          expiresOn: "2027-01-01T00:00:00.750Z"
        "#,
    )
    .with_key(
        rsa_key()
            .not_before("2026-01-01T00:00:00Z")
            .expires("2027-01-01T00:00:00Z"),
    );
    assert_eq!(scenario.plan(), converged());
}

// ---------------------------------------------------------------------------------------------
// New versions: type, size, curve, exponent, imported material
// ---------------------------------------------------------------------------------------------

fn create_of(scenario: &Scenario) -> CreateKey {
    let steps = scenario.steps();
    match steps.as_slice() {
        [Step::Create(create)] => create.clone(),
        other => panic!("expected a single Create, got {other:?}"),
    }
}

#[test]
fn type_change_creates_a_new_version_instead_of_updating_properties() {
    // The latest version also drifted (disabled, a foreign tag): the new version carries the
    // spec's properties, so no UpdateProperties of the old one.
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC, keyOps: [sign]}")
        .with_key(rsa_key().disabled().tag("cost-center", "42"));
    let expected = CreateKey {
        key_type: KeyType::Ec,
        size: None,
        curve: Some(Curve::P256),
        public_exponent: None,
        properties: KeyProperties {
            key_ops: Some(ops(&[KeyOperation::Sign])),
            enabled: Some(true),
            tags: Some(owned_tags(&[])),
            ..Default::default()
        },
    };
    assert_eq!(scenario.plan(), steps(vec![Step::Create(expected)]));
}

#[test]
fn hsm_protection_change_creates_a_new_version() {
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: RSA-HSM}").with_key(rsa_key());
    assert_eq!(create_of(&scenario).key_type, KeyType::RsaHsm);
}

#[test]
fn key_type_compares_case_insensitively() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(owned_key("rsa").size(2048));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn rsa_size_change_creates_a_new_version() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, keySize: 4096}")
        .with_key(rsa_key());
    let create = create_of(&scenario);
    assert_eq!((create.key_type, create.size), (KeyType::Rsa, Some(4096)));
}

#[test]
fn unset_rsa_size_is_not_compared_so_adopting_a_larger_key_keeps_it() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, adopt: true}")
        .with_key(rsa_key().unowned().size(4096));
    let steps = scenario.steps();
    assert!(
        matches!(steps.as_slice(), [Step::UpdateProperties { drift, .. }] if drift == &vec!["tags"]),
        "only the ownership tags are added: {steps:?}"
    );
}

#[test]
fn unset_rsa_size_creates_with_key_vaults_default() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}");
    assert_eq!(create_of(&scenario).size, Some(2048));
}

#[test]
fn rsa_size_is_not_compared_when_the_vault_does_not_report_it() {
    let mut key = rsa_key();
    key.0.key_size = None;
    let scenario =
        given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, keySize: 4096}").with_key(key);
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn oct_hsm_size_is_not_compared() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: oct-HSM, keySize: 128}")
        .with_key(owned_key("oct-HSM").size(256));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn curve_change_creates_a_new_version() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC, curve: P-521}")
        .with_key(ec_key("P-256"));
    let create = create_of(&scenario);
    assert_eq!(
        (create.key_type, create.curve),
        (KeyType::Ec, Some(Curve::P521))
    );
}

#[test]
fn unset_curve_is_not_compared_and_creates_p256() {
    for curve in ["P-256", "P-256K", "P-384"] {
        let existing =
            given("{vaultUrl: https://v.vault.azure.net, keyType: EC}").with_key(ec_key(curve));
        assert_eq!(existing.plan(), converged(), "{curve}");
    }
    let new = given("{vaultUrl: https://v.vault.azure.net, keyType: EC}");
    assert_eq!(create_of(&new).curve, Some(Curve::P256));
}

#[test]
fn exponent_change_creates_a_new_version() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, publicExponent: 3}")
        .with_key(rsa_key());
    assert_eq!(create_of(&scenario).public_exponent, Some(3));
}

#[test]
fn exponent_compares_by_value() {
    for observed in [&[1, 0, 1][..], &[0, 1, 0, 1]] {
        let scenario =
            given("{vaultUrl: https://v.vault.azure.net, keyType: RSA, publicExponent: 65537}")
                .with_key(rsa_key().exponent(observed));
        assert_eq!(scenario.plan(), converged(), "{observed:?}");
    }
}

#[test]
fn unset_exponent_is_not_compared() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key().exponent(&[3]));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn changed_imported_material_is_imported_as_a_new_version() {
    // The old version also drifted: the import carries the spec's properties instead.
    let scenario = given(IMPORT_RSA)
        .with_material("thumb-2")
        .with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-1").disabled());
    let expected = Step::Import {
        properties: KeyProperties {
            enabled: Some(true),
            tags: Some(owned_tags(&[(IMPORTED_MATERIAL_TAG, "thumb-2")])),
            ..Default::default()
        },
        hsm: false,
    };
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

#[test]
fn imported_key_without_the_material_tag_is_imported() {
    let scenario = given(IMPORT_RSA)
        .with_material("thumb-1")
        .with_key(rsa_key());
    let steps = scenario.steps();
    assert!(
        matches!(steps.as_slice(), [Step::Import { hsm: false, .. }]),
        "{steps:?}"
    );
}

#[test]
fn imported_key_never_gets_a_generated_version() {
    // An import spec of another type than the vault holds: only the material decides.
    let scenario = given(
        "
        vaultUrl: https://v.vault.azure.net
        keyType: EC
        import: {secretRef: {name: signing-material, key: key.pem}}
        ",
    )
    .with_material("thumb-1")
    .with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-1"));
    assert_eq!(scenario.plan(), converged());
}

#[test]
fn imported_key_without_material_still_gets_its_properties_corrected() {
    let scenario =
        given(IMPORT_RSA).with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-1").disabled());
    let expected = update(
        &["enabled"],
        KeyProperties {
            enabled: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(scenario.plan(), steps(vec![expected]));
}

// ---------------------------------------------------------------------------------------------
// Rotation policy
// ---------------------------------------------------------------------------------------------

#[test]
fn policy_missing_from_the_vault_is_set() {
    for observed in [
        None,
        Some(default_vault_policy()),
        Some(ObservedPolicy::default()),
    ] {
        let mut scenario = given(POLICY_SPEC).with_key(rsa_key());
        scenario.observed.policy = observed.clone();
        assert_eq!(
            scenario.plan(),
            steps(vec![Step::SetRotationPolicy(scenario.desired_policy())]),
            "{observed:?}"
        );
    }
}

#[test]
fn policy_matches_with_lowercase_actions_weeks_and_any_order() {
    let observed = vault_policy(
        Some("P90D"),
        vec![
            before_expiry("notify", "P1W"),
            after_create("rotate", "P30D"),
        ],
    );
    let scenario = given(POLICY_SPEC)
        .with_key(rsa_key())
        .with_vault_policy(observed);
    assert_eq!(scenario.plan(), converged());
}

/// The desired policy of an EC key whose spec has this `rotationPolicy` (flow YAML).
fn spec_policy(rotation_policy: &str) -> DesiredRotationPolicy {
    let yaml = format!(
        "{{vaultUrl: https://v.vault.azure.net, keyType: EC, rotationPolicy: {rotation_policy}}}"
    );
    desired(&yaml)
        .rotation_policy
        .expect("the spec has a rotation policy")
}

#[test]
fn policy_periods_compare_by_value() {
    let in_days = spec_policy(
        "{expiresIn: P28D, lifetimeActions: [{action: Rotate, timeAfterCreate: P14D}]}",
    );
    let in_weeks =
        spec_policy("{expiresIn: P4W, lifetimeActions: [{action: Rotate, timeAfterCreate: P2W}]}");
    let vault_in_days = vault_policy(Some("P28D"), vec![after_create("Rotate", "P14D")]);
    let vault_in_weeks = vault_policy(Some("P4W"), vec![after_create("Rotate", "P2W")]);
    for spec in [&in_days, &in_weeks] {
        for vault in [&vault_in_days, &vault_in_weeks] {
            assert!(policy_matches(spec, Some(vault)), "{spec:?} vs {vault:?}");
        }
    }
}

#[test]
fn different_policy_expiry_is_set() {
    for expires_in in [Some("P60D"), None, Some("90 days")] {
        let observed = vault_policy(
            expires_in,
            vec![
                after_create("Rotate", "P30D"),
                before_expiry("Notify", "P7D"),
            ],
        );
        let scenario = given(POLICY_SPEC)
            .with_key(rsa_key())
            .with_vault_policy(observed);
        assert_eq!(
            scenario.plan(),
            steps(vec![Step::SetRotationPolicy(scenario.desired_policy())]),
            "{expires_in:?}"
        );
    }
}

#[test]
fn policy_expiry_in_the_vault_but_not_in_the_spec_is_set() {
    let spec = spec_policy("{lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}]}");
    let rotate = vec![after_create("Rotate", "P30D")];
    assert!(policy_matches(
        &spec,
        Some(&vault_policy(None, rotate.clone()))
    ));
    assert!(!policy_matches(
        &spec,
        Some(&vault_policy(Some("P90D"), rotate))
    ));
}

#[test]
fn different_policy_actions_are_set() {
    let cases = [
        vec![after_create("Rotate", "P30D")],
        vec![before_expiry("Notify", "P7D")],
        vec![
            after_create("Rotate", "P31D"),
            before_expiry("Notify", "P7D"),
        ],
        vec![
            before_expiry("Rotate", "P30D"),
            before_expiry("Notify", "P7D"),
        ],
        vec![
            after_create("Rotate", "P30D"),
            before_expiry("Notify", "P8D"),
        ],
        vec![
            after_create("Rotate", "P30D"),
            before_expiry("Notify", "P7D"),
            before_expiry("Notify", "P7D"),
        ],
    ];
    for actions in cases {
        let scenario = given(POLICY_SPEC)
            .with_key(rsa_key())
            .with_vault_policy(vault_policy(Some("P90D"), actions.clone()));
        assert_eq!(
            scenario.plan(),
            steps(vec![Step::SetRotationPolicy(scenario.desired_policy())]),
            "{actions:?}"
        );
    }
}

#[test]
fn unreadable_vault_actions_never_match() {
    let spec = given(POLICY_SPEC).desired_policy();
    let notify = before_expiry("Notify", "P7D");
    let unreadable = [
        after_create("Delete", "P30D"),
        ObservedAction {
            action: "Rotate".into(),
            time_after_create: Some("P30D".into()),
            time_before_expiry: Some("P30D".into()),
        },
        ObservedAction {
            action: "Rotate".into(),
            time_after_create: None,
            time_before_expiry: None,
        },
        after_create("Rotate", "30 days"),
        before_expiry("Rotate", "soon"),
    ];
    for action in unreadable {
        let observed = vault_policy(Some("P90D"), vec![action.clone(), notify.clone()]);
        assert!(!policy_matches(&spec, Some(&observed)), "{action:?}");
    }
}

#[test]
fn no_policy_in_the_vault_never_matches() {
    let empty = spec_policy("{}");
    assert!(!policy_matches(&empty, None));
    assert!(policy_matches(&empty, Some(&ObservedPolicy::default())));
}

#[test]
fn spec_without_policy_never_touches_the_vaults_policy() {
    for observed in [
        None,
        Some(default_vault_policy()),
        Some(vault_has_policy_spec()),
    ] {
        let mut scenario =
            given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}").with_key(rsa_key());
        scenario.observed.policy = observed.clone();
        assert_eq!(scenario.plan(), converged(), "{observed:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// rotateToken
// ---------------------------------------------------------------------------------------------

const TOKEN_SPEC: &str = "{vaultUrl: https://v.vault.azure.net, keyType: RSA, rotateToken: '2'}";

/// The vault holds v7; status never showed a version (a new, re-created or adopting VaultKey).
fn token_scenario() -> Scenario {
    given(TOKEN_SPEC).with_key(rsa_key().version("v7"))
}

/// The VaultKey has managed v7 before and remembers this token.
fn managed_remembering(token: &str) -> Scenario {
    token_scenario().managed_before().remembering_token(token)
}

fn rotate_v7() -> Step {
    Step::Rotate {
        token: "2".into(),
        from_version: "v7".into(),
    }
}

#[test]
fn first_sight_of_a_key_with_a_token_adopts_the_token_without_rotating() {
    let adopt = steps(vec![Step::AdoptRotateToken { token: "2".into() }]);
    assert_eq!(token_scenario().plan(), adopt);
    assert_eq!(token_scenario().pending_rotation("2", "v6").plan(), adopt);
    assert_eq!(token_scenario().remembering_token("1").plan(), adopt);
}

#[test]
fn token_added_to_a_key_managed_before_rotates_it() {
    assert_eq!(
        token_scenario().managed_before().plan(),
        steps(vec![rotate_v7()])
    );
}

#[test]
fn unchanged_token_plans_nothing() {
    assert_eq!(managed_remembering("2").plan(), converged());
    assert_eq!(token_scenario().remembering_token("2").plan(), converged());
}

#[test]
fn changed_token_rotates_the_latest_version() {
    assert_eq!(managed_remembering("1").plan(), steps(vec![rotate_v7()]));
}

#[test]
fn rotation_that_already_happened_is_recorded_not_repeated() {
    // Pending from v6; the vault's latest is v7: the rotate call went through.
    let scenario = managed_remembering("1").pending_rotation("2", "v6");
    assert_eq!(
        scenario.plan(),
        steps(vec![Step::RecordRotation { token: "2".into() }])
    );
}

#[test]
fn pending_rotation_that_did_not_happen_is_retried() {
    let scenario = managed_remembering("1").pending_rotation("2", "v7");
    assert_eq!(scenario.plan(), steps(vec![rotate_v7()]));
}

#[test]
fn pending_rotation_of_an_older_token_does_not_count_for_the_new_one() {
    let scenario = managed_remembering("1").pending_rotation("1b", "v6");
    assert_eq!(scenario.plan(), steps(vec![rotate_v7()]));
}

#[test]
fn new_version_from_a_type_change_serves_the_rotation_request() {
    // One edit that changes the type and the token makes one new version, not two.
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: EC, rotateToken: '2'}")
        .with_key(rsa_key().version("v7"))
        .managed_before()
        .remembering_token("1");
    let steps = scenario.steps();
    assert!(
        matches!(steps.as_slice(), [Step::Create(_), Step::AdoptRotateToken { token }] if token == "2"),
        "{steps:?}"
    );
}

#[test]
fn key_gone_from_the_vault_is_recreated_when_the_spec_asks_and_the_new_token_adopted() {
    // Creation serves the token: no rotation of the brand-new key.
    let scenario = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC, rotateToken: '2', recreateIfGone: true}",
    )
        .managed_before()
        .remembering_token("1");
    let steps = scenario.steps();
    assert!(
        matches!(steps.as_slice(), [Step::Create(_), Step::AdoptRotateToken { token }] if token == "2"),
        "{steps:?}"
    );
}

#[test]
fn spec_without_a_token_never_rotates() {
    let scenario = given("{vaultUrl: https://v.vault.azure.net, keyType: RSA}")
        .with_key(rsa_key())
        .remembering_token("1")
        .pending_rotation("1", "v0");
    assert_eq!(scenario.plan(), converged());
}

// ---------------------------------------------------------------------------------------------
// Step order
// ---------------------------------------------------------------------------------------------

const EVERYTHING_SPEC: &str = "
    vaultUrl: https://v.vault.azure.net
    keyType: RSA
    rotateToken: '2'
    rotationPolicy: {expiresIn: P90D}
";

#[test]
fn properties_are_corrected_before_the_policy_is_set_before_the_rotation() {
    let scenario = given(EVERYTHING_SPEC)
        .with_key(rsa_key().disabled())
        .with_vault_policy(default_vault_policy())
        .managed_before()
        .remembering_token("1");
    assert_eq!(
        scenario.plan(),
        steps(vec![
            update(
                &["enabled"],
                KeyProperties {
                    enabled: Some(true),
                    ..Default::default()
                }
            ),
            Step::SetRotationPolicy(scenario.desired_policy()),
            Step::Rotate {
                token: "2".into(),
                from_version: "v1".into()
            },
        ])
    );
}

#[test]
fn new_version_comes_before_the_policy_and_replaces_the_rotation() {
    let scenario = given(&format!("{EVERYTHING_SPEC}    keySize: 2048\n"))
        .with_key(rsa_key().size(4096).disabled())
        .with_vault_policy(default_vault_policy())
        .managed_before()
        .remembering_token("1");
    let steps = scenario.steps();
    let [
        Step::Create(create),
        Step::SetRotationPolicy(policy),
        Step::AdoptRotateToken { token },
    ] = steps.as_slice()
    else {
        panic!("Create, SetRotationPolicy, then the token recorded: {steps:?}");
    };
    assert_eq!(token, "2");
    assert_eq!(create.size, Some(2048));
    assert_eq!(*policy, scenario.desired_policy());
}

#[test]
fn import_comes_before_the_policy() {
    let scenario = given(
        "
        vaultUrl: https://v.vault.azure.net
        keyType: RSA
        import: {secretRef: {name: signing-material, key: key.pem}}
        rotationPolicy: {expiresIn: P90D}
        ",
    )
    .with_material("thumb-2")
    .with_key(rsa_key().tag(IMPORTED_MATERIAL_TAG, "thumb-1"));
    let steps = scenario.steps();
    assert!(
        matches!(
            steps.as_slice(),
            [Step::Import { .. }, Step::SetRotationPolicy(_)]
        ),
        "{steps:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// next_rotation_time
// ---------------------------------------------------------------------------------------------

#[test]
fn next_rotation_counts_time_after_create_from_creation() {
    let policy = vault_policy(
        Some("P90D"),
        vec![
            before_expiry("Notify", "P7D"),
            after_create("Rotate", "P30D"),
        ],
    );
    // CREATED is 2026-01-10T08:00:00Z.
    assert_eq!(
        next_rotation_time(&policy, &rsa_key().build()),
        Some(t("2026-02-09T08:00:00Z"))
    );
}

#[test]
fn next_rotation_counts_time_before_expiry_back_from_the_expiry() {
    let policy = vault_policy(Some("P90D"), vec![before_expiry("rotate", "P1M")]);
    let key = rsa_key().expires("2026-04-10T08:00:00Z").build();
    assert_eq!(
        next_rotation_time(&policy, &key),
        Some(t("2026-03-10T08:00:00Z"))
    );
}

#[test]
fn no_next_rotation_without_a_rotate_action() {
    let key = rsa_key().expires("2026-04-10T08:00:00Z").build();
    assert_eq!(next_rotation_time(&default_vault_policy(), &key), None);
    assert_eq!(next_rotation_time(&ObservedPolicy::default(), &key), None);
}

#[test]
fn no_next_rotation_without_the_date_it_counts_from() {
    let after = vault_policy(None, vec![after_create("Rotate", "P30D")]);
    assert_eq!(
        next_rotation_time(&after, &rsa_key().no_created().build()),
        None
    );
    let before = vault_policy(Some("P90D"), vec![before_expiry("Rotate", "P30D")]);
    assert_eq!(next_rotation_time(&before, &rsa_key().build()), None);
}

#[test]
fn no_next_rotation_from_an_unreadable_period() {
    let key = rsa_key().expires("2026-04-10T08:00:00Z").build();
    assert_eq!(
        next_rotation_time(
            &vault_policy(None, vec![after_create("Rotate", "30 days")]),
            &key
        ),
        None
    );
    assert_eq!(
        next_rotation_time(
            &vault_policy(None, vec![before_expiry("Rotate", "soon")]),
            &key
        ),
        None
    );
}

#[test]
fn the_notify_action_key_vault_adds_is_not_drift() {
    // Key Vault answers a policy set without a Notify action with its default Notify added.
    let desired = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC, rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}]}}",
    )
    .desired_policy();
    let as_returned = ObservedPolicy {
        expires_in: Some("P90D".into()),
        actions: vec![
            ObservedAction {
                action: "Rotate".into(),
                time_after_create: Some("P30D".into()),
                time_before_expiry: None,
            },
            ObservedAction {
                action: "Notify".into(),
                time_after_create: None,
                time_before_expiry: Some("P30D".into()),
            },
        ],
    };
    assert!(policy_matches(&desired, Some(&as_returned)));
    // A Notify the spec asks for is still compared.
    let with_notify = given(
        "{vaultUrl: https://v.vault.azure.net, keyType: EC, rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}, {action: Notify, timeBeforeExpiry: P7D}]}}",
    )
    .desired_policy();
    assert!(!policy_matches(&with_notify, Some(&as_returned)));
}

/// The owner tag fits Key Vault's tag value limit for every legal namespace (DNS label, up to
/// 63 characters) and name (DNS subdomain, up to 253), stays `namespace/name` when that fits,
/// and tells different VaultKeys apart.
mod owner_tag {
    use super::super::{Owner, owner_tag_value};
    use crate::keyvault_rules::MAX_TAG_VALUE_LEN;
    use proptest::prelude::*;

    fn namespace() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            "[a-z][a-z0-9-]{61}[a-z]",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?",
            // Long subdomains: labels of up to 63 characters, 253 in all.
            prop::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..5)
                .prop_map(|labels| labels.join("."))
                .prop_filter("253 characters at most", |n| n.len() <= 253),
        ]
    }

    #[test]
    fn the_longest_legal_names_fit() {
        let owner = Owner {
            namespace: "n".repeat(63),
            name: format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
            uid: "u".into(),
        };
        assert_eq!(format!("{}/{}", owner.namespace, owner.name).len(), 317);
        let tag = owner.tag_value();
        assert_eq!(tag.chars().count(), MAX_TAG_VALUE_LEN, "{tag}");
        assert!(tag.starts_with(&format!("{}/aaa", owner.namespace)));
        assert_eq!(owner_tag_value("payments", "key"), "payments/key");
    }

    proptest! {
        #[test]
        fn owner_tags_fit_and_differ(
            ns1 in namespace(), n1 in name(), ns2 in namespace(), n2 in name(),
        ) {
            let t1 = owner_tag_value(&ns1, &n1);
            prop_assert!(t1.chars().count() <= MAX_TAG_VALUE_LEN, "{} chars", t1.len());
            let full = format!("{ns1}/{n1}");
            if full.len() <= MAX_TAG_VALUE_LEN {
                prop_assert_eq!(&t1, &full);
            }
            prop_assert_eq!(&t1, &owner_tag_value(&ns1, &n1));
            let t2 = owner_tag_value(&ns2, &n2);
            if (ns1.as_str(), n1.as_str()) != (ns2.as_str(), n2.as_str()) {
                prop_assert_ne!(t1, t2);
            }
        }

        /// Two long names that share a start still get different tags.
        #[test]
        fn shared_prefixes_differ(ns in namespace(), stem in "[a-z]{252}", a in "[a-z]", b in "[a-z]") {
            prop_assume!(a != b);
            prop_assert_ne!(
                owner_tag_value(&ns, &format!("{}{a}", &stem[..252])),
                owner_tag_value(&ns, &format!("{}{b}", &stem[..252]))
            );
        }
    }
}

/// The generative proof of issue 11: every generated spec either fails `validate` naming a
/// field, or plans (with nothing observed: a new key) only requests that Key Vault's rules
/// (`keyvault_rules`, the checks the emulator makes) accept.
mod requests_key_vault_accepts {
    use super::super::*;
    use crate::api::VaultKeySpec;
    use crate::keyvault::KeyProperties;
    use crate::keyvault_rules::{self as rules, PolicyAction, PolicyTrigger};
    use crate::validate::proptests::{key_name, spec_json};
    use crate::validate::validate_spec_at;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn seconds(p: Period) -> i64 {
        i64::try_from(p.approx_days()).unwrap() * rules::DAY_SECONDS
    }

    fn accepted(properties: &KeyProperties, now: DateTime<Utc>) -> Result<(), String> {
        let tags = properties
            .tags
            .as_ref()
            .ok_or("a new version carries tags")?;
        rules::check_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.message)?;
        rules::check_exportable(
            properties.exportable.unwrap_or(false),
            properties.release_policy.is_some(),
        )?;
        for t in [properties.expires_on, properties.not_before]
            .into_iter()
            .flatten()
        {
            if !rules::unix_time_ok(t.timestamp()) {
                return Err(format!("{t} is outside Key Vault's dates"));
            }
        }
        if let Some(exp) = properties.expires_on {
            if exp <= now {
                return Err(format!("expired at creation ({exp})"));
            }
            if properties.not_before.is_some_and(|nbf| nbf >= exp) {
                return Err("notBefore not before expiry".into());
            }
        }
        Ok(())
    }

    fn check_step(step: &Step, desired: &crate::validate::DesiredKey) -> Result<(), String> {
        match step {
            Step::Create(create) => {
                if !rules::key_name_ok(&desired.key_name) {
                    return Err("key name".into());
                }
                match create.key_type {
                    KeyType::Rsa | KeyType::RsaHsm => {
                        if !create
                            .size
                            .is_some_and(|s| rules::RSA_KEY_SIZES.contains(&s))
                        {
                            return Err(format!("RSA size {:?}", create.size));
                        }
                    }
                    KeyType::OctHsm => {
                        if !create
                            .size
                            .is_some_and(|s| rules::OCT_KEY_SIZES.contains(&s))
                        {
                            return Err(format!("oct size {:?}", create.size));
                        }
                    }
                    KeyType::Ec | KeyType::EcHsm => {
                        if create.size.is_some() || create.curve.is_none() {
                            return Err("EC takes a curve, no size".into());
                        }
                    }
                }
                accepted(&create.properties, now())
            }
            Step::Import { properties, .. } => accepted(properties, now()),
            Step::SetRotationPolicy(policy) => {
                let actions: Vec<_> = policy
                    .actions
                    .iter()
                    .map(|a| {
                        (
                            match a.action {
                                LifetimeActionType::Rotate => PolicyAction::Rotate,
                                LifetimeActionType::Notify => PolicyAction::Notify,
                            },
                            match a.trigger {
                                Trigger::AfterCreate(p) => {
                                    PolicyTrigger::AfterCreate(seconds(p.into()))
                                }
                                Trigger::BeforeExpiry(p) => {
                                    PolicyTrigger::BeforeExpiry(seconds(p.into()))
                                }
                            },
                        )
                    })
                    .collect();
                rules::check_rotation_policy(policy.expires_in.map(seconds), &actions)
                    .map_err(|e| e.message)
            }
            Step::AdoptRotateToken { .. } => Ok(()),
            other => Err(format!("unexpected step for a new key: {other:?}")),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn a_valid_spec_plans_only_requests_key_vault_accepts(spec in spec_json(), name in key_name()) {
            let Ok(parsed) = serde_json::from_value::<VaultKeySpec>(spec.clone()) else {
                return Ok(());
            };
            let desired = match validate_spec_at(&parsed, name, now()) {
                Err(e) => {
                    prop_assert!(!e.field.is_empty() && !e.message.trim().is_empty());
                    return Ok(());
                }
                Ok(desired) => desired,
            };
            // The longest legal owner: the owner tag must still fit.
            let owner = Owner {
                namespace: "n".repeat(63),
                name: format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)),
                uid: "0f7c2a4e-0000-4000-8000-000000000001".into(),
            };
            let material = MaterialSummary { thumbprint: format!("sha256:{}", "A".repeat(43)) };
            let plan = plan(&PlanInput {
                desired: &desired,
                owner: &owner,
                observed: &Observed::default(),
                remembered: &Remembered::default(),
                material: Some(&material),
                now: now(),
            });
            let steps = match plan {
                Plan::Steps(steps) => steps,
                // An expiry that has passed is refused when the version would be created (the
                // condition names spec.attributes.expiresOn); nothing is sent.
                Plan::Blocked(Blocker::ExpiredAtCreation { at }) => {
                    prop_assert!(at <= now());
                    return Ok(());
                }
                blocked => {
                    return Err(TestCaseError::fail(format!("a new key is blocked: {blocked:?}")));
                }
            };
            prop_assert!(!steps.is_empty());
            for step in &steps {
                if let Err(why) = check_step(step, &desired) {
                    return Err(TestCaseError::fail(format!("{spec}: Key Vault would refuse {step:?}: {why}")));
                }
            }
        }
    }
}
