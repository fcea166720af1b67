use super::*;
use crate::api::Curve;
use chrono::{Duration, TimeZone};
use std::collections::BTreeSet;

const KID: &str = "https://v.vault.azure.net/keys/k";

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap()
}

fn ec(seed: u8) -> PublicKey {
    // The public points of fixed scalars (1·G, 2·G, ...) are real points on P-256.
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let scalar = p256::NonZeroScalar::from_uint(p256::U256::from_u8(seed)).unwrap();
    let point = p256::PublicKey::from_secret_scalar(&scalar).to_encoded_point(false);
    PublicKey::Ec {
        curve: Curve::P256,
        x: point.x().unwrap().to_vec(),
        y: point.y().unwrap().to_vec(),
    }
}

fn version(v: &str, created: u32, enabled: bool, expires: Option<u32>) -> KeyVersion {
    KeyVersion {
        version: v.into(),
        enabled,
        created: Some(at(created)),
        expires_on: expires.map(at),
        not_before: None,
    }
}

fn current(v: &str, created: u32, public_key: Option<PublicKey>) -> ObservedKey {
    ObservedKey {
        key_id: KID.into(),
        version: v.into(),
        key_type: if public_key.is_some() {
            "EC"
        } else {
            "oct-HSM"
        }
        .into(),
        key_size: None,
        curve: None,
        public_exponent: None,
        key_ops: BTreeSet::new(),
        enabled: true,
        not_before: None,
        expires_on: Some(at(created) + Duration::days(90)),
        created: Some(at(created)),
        updated: None,
        tags: BTreeMap::new(),
        public_thumbprint: None,
        public_key,
    }
}

fn vk(yaml: &str) -> VaultKey {
    serde_norway::from_str(yaml).unwrap()
}

const VK: &str = "
apiVersion: vaultkey.dev/v1alpha1
kind: VaultKey
metadata: {name: payments, namespace: team, uid: 0000-1111}
spec: {vaultUrl: 'https://v.vault.azure.net', keyType: EC, publish: {}}
";

fn kids(data: &BTreeMap<String, String>) -> Vec<String> {
    let jwks: Value = serde_json::from_str(&data[JWKS]).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_jwks_lists_enabled_unexpired_versions_newest_first() {
    let now = at(20);
    let cur = current("c", 15, Some(ec(3)));
    // Listed in the vault's order (any): disabled, expired, expiring later, no expiry.
    let versions = [
        version("a", 1, true, None),
        version("off", 12, false, None),
        version("c", 15, true, Some(28)),
        version("gone", 5, true, Some(19)),
        version("b", 10, true, Some(21)),
    ];
    let listed = listed_versions(&cur, &versions, now);
    assert_eq!(listed, ["c", "b", "a"]);
    // Made in the same second as an older version (whole-second times), the current version
    // still comes first.
    let same_second = current("a0", 10, Some(ec(4)));
    assert_eq!(
        listed_versions(&same_second, &versions, now),
        ["a0", "c", "b", "a"]
    );
    let keys = BTreeMap::from([
        ("a".to_owned(), ec(1)),
        ("b".to_owned(), ec(2)),
        ("c".to_owned(), ec(3)),
    ]);
    let data = data(&Published {
        key_name: "k",
        current: &cur,
        versions: &versions,
        public_keys: &keys,
        next_rotation: Some(at(25)),
        now,
    })
    .unwrap();
    assert_eq!(
        kids(&data),
        [format!("{KID}/c"), format!("{KID}/b"), format!("{KID}/a")]
    );
    assert_eq!(data[KEY_ID], format!("{KID}/c"));
    assert_eq!(data[KEY_ID_VERSIONLESS], KID);
    assert_eq!(data[VERSION], "c");
    assert_eq!(data[KEY_NAME], "k");
    assert_eq!(data[KEY_TYPE], "EC");
    // The current version's own read decides its expiry (the list said the 28th).
    assert_eq!(data[EXPIRES_ON], "2027-02-13T00:00:00Z");
    assert_eq!(data[NEXT_ROTATION_TIME], "2026-11-25T00:00:00Z");
    assert!(data[PUBLIC_KEY_PEM].starts_with("-----BEGIN PUBLIC KEY-----"));
    let jwk: Value = serde_json::from_str(&data[PUBLIC_KEY_JWK]).unwrap();
    assert_eq!(jwk["kid"], format!("{KID}/c"));
    assert_eq!(jwk["crv"], "P-256");

    // Time passes: b expires and leaves; a disabled current version leaves too, but its
    // identifiers and public key stay published (consumers of the current id still need them).
    let mut off = cur.clone();
    off.enabled = false;
    let later = data_at(&off, &versions, &keys, at(22));
    assert_eq!(kids(&later), [format!("{KID}/a")]);
    assert_eq!(later[KEY_ID], format!("{KID}/c"));
    assert!(later.contains_key(PUBLIC_KEY_PEM));
}

fn data_at(
    cur: &ObservedKey,
    versions: &[KeyVersion],
    keys: &BTreeMap<String, PublicKey>,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    data(&Published {
        key_name: "k",
        current: cur,
        versions,
        public_keys: keys,
        next_rotation: None,
        now,
    })
    .unwrap()
}

#[test]
fn only_versions_whose_public_part_is_unknown_are_read() {
    let cur = current("c", 15, Some(ec(3)));
    let versions = [version("a", 1, true, None), version("b", 10, true, None)];
    let listed = listed_versions(&cur, &versions, at(20));
    let mut known = BTreeMap::from([("c".to_owned(), ec(3))]);
    assert_eq!(to_read(&listed, &known), ["b", "a"]);
    known.insert("a".into(), ec(1));
    known.insert("b".into(), ec(2));
    // Steady state: nothing to read.
    assert!(to_read(&listed, &known).is_empty());
    // A version disabled by hand needs no read; one enabled again is read once more only if
    // its key was forgotten.
    let disabled = [version("a", 1, false, None), version("b", 10, true, None)];
    assert!(to_read(&listed_versions(&cur, &disabled, at(20)), &known).is_empty());
}

#[test]
fn a_key_without_a_public_part_publishes_its_identifiers_only() {
    let cur = current("c", 15, None);
    let data = data_at(&cur, &[], &BTreeMap::new(), at(20));
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            KEY_ID,
            KEY_ID_VERSIONLESS,
            KEY_NAME,
            VERSION,
            KEY_TYPE,
            EXPIRES_ON
        ])
    );
    assert_eq!(data[KEY_TYPE], "oct-HSM");
}

#[test]
fn a_public_key_the_vault_got_wrong_is_an_error_not_a_published_key() {
    let PublicKey::Ec { curve, x, mut y } = ec(1) else {
        unreachable!()
    };
    y[5] ^= 1;
    let cur = current("c", 15, Some(PublicKey::Ec { curve, x, y }));
    assert!(
        data(&Published {
            key_name: "k",
            current: &cur,
            versions: &[],
            public_keys: &BTreeMap::new(),
            next_rotation: None,
            now: at(20),
        })
        .is_err()
    );
}

#[test]
fn the_config_map_is_named_owned_and_marked_for_reloaders() {
    let owner = vk(VK);
    assert_eq!(
        config_map_name(&owner).as_deref(),
        Some("payments-vaultkey")
    );
    let named = vk(&VK.replace("publish: {}", "publish: {configMapName: pay-jwks}"));
    assert_eq!(config_map_name(&named).as_deref(), Some("pay-jwks"));
    let silent = vk(&VK.replace(", publish: {}", ""));
    assert_eq!(config_map_name(&silent), None);

    let cm = config_map(&owner, "payments-vaultkey", BTreeMap::new());
    assert_eq!(cm.metadata.namespace.as_deref(), Some("team"));
    let refs = cm.owner_references();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].kind, "VaultKey");
    assert_eq!(refs[0].uid, "0000-1111");
    assert_eq!(refs[0].controller, Some(true));
    assert!(owned_by(&cm, "0000-1111"));
    assert!(!owned_by(&cm, "2222"));
    assert!(!owned_by(&ConfigMap::default(), "0000-1111"));
    assert_eq!(cm.annotations()[RELOADER_MATCH_ANNOTATION], "true");
    assert_eq!(cm.annotations()[VAULTKEY_ANNOTATION], "payments");
    assert_eq!(cm.labels()[MANAGED_BY_LABEL], MANAGED_BY);
}

#[test]
fn only_a_change_of_what_the_operator_writes_is_a_difference() {
    let owner = vk(VK);
    let cur = current("c", 15, Some(ec(3)));
    let keys = BTreeMap::from([("c".to_owned(), ec(3))]);
    let desired = config_map(&owner, "x", data_at(&cur, &[], &keys, at(20)));
    assert!(up_to_date(&desired, &desired));

    // What others add (data keys, labels, annotations, owners) is no difference.
    let mut decorated = desired.clone();
    decorated
        .data
        .as_mut()
        .unwrap()
        .insert("extra".into(), "1".into());
    decorated.labels_mut().insert("team".into(), "a".into());
    decorated
        .annotations_mut()
        .insert("note".into(), "b".into());
    decorated.metadata.resource_version = Some("42".into());
    assert!(up_to_date(&decorated, &desired));

    let changes: [fn(&mut ConfigMap); 6] = [
        |cm| {
            cm.data.as_mut().unwrap().insert(VERSION.into(), "b".into());
        },
        // A key the operator no longer writes (the expiry was removed) must go.
        |cm| {
            cm.data
                .as_mut()
                .unwrap()
                .insert(NEXT_ROTATION_TIME.into(), "x".into());
        },
        |cm| {
            cm.data.as_mut().unwrap().remove(JWKS);
        },
        |cm| {
            cm.annotations_mut().remove(RELOADER_MATCH_ANNOTATION);
        },
        |cm| {
            cm.labels_mut().clear();
        },
        |cm| cm.metadata.owner_references = None,
    ];
    for change in changes {
        let mut changed = desired.clone();
        change(&mut changed);
        assert!(!up_to_date(&changed, &desired), "{changed:?}");
    }
}
