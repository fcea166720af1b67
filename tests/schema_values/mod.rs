//! Values a Kubernetes structural schema (a CRD's `openAPIV3Schema`) admits, as proptest
//! strategies: an interpreter of the schema keywords the API server enforces, modelled on what
//! the API server does rather than on what our Rust types expect.
//!
//! Modelled: `type` (object, array, string, integer, number, boolean), `enum`, `nullable`
//! (null only where nullable: the API server prunes other nulls), `required` and optional
//! `properties` (omitted ones get their `default`, as the API server fills it in),
//! `additionalProperties` maps with `minProperties`/`maxProperties` and any string as a key,
//! `minimum`/`maximum` (and their `exclusive*` flags; `format: int32`/`int64` is NOT a bound:
//! the API server admits any int64), `multipleOf`, `minLength`/`maxLength` (in characters, as
//! the API server counts), `pattern` (Go RE2 syntax, unanchored; `\d`, `\s`, `\w` are ASCII as
//! in RE2), `format: date-time` (as kube-openapi's `strfmt.IsDateTime` accepts it, which is
//! looser than RFC 3339), `minItems`/`maxItems`, `x-kubernetes-list-type: set`/`map` (unique
//! items / keys), `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`.
//!
//! Not modelled: CEL rules (`x-kubernetes-validations`): the point is what the structural
//! schema admits. A keyword or format the interpreter does not know fails loudly, so a schema
//! change cannot silently escape the generator.

#![allow(dead_code)] // each test binary uses a different part of this module

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Unbounded strings, lists and maps are generated up to these sizes.
const UNBOUNDED_STRING: usize = 64;
const UNBOUNDED_ITEMS: usize = 5;
const UNBOUNDED_PROPERTIES: usize = 6;

/// Keywords that do not constrain values (or are CEL, deliberately not evaluated).
const IGNORED: &[&str] = &[
    "description",
    "title",
    "example",
    "externalDocs",
    "x-kubernetes-validations",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
];

const HANDLED: &[&str] = &[
    "type",
    "format",
    "enum",
    "nullable",
    "default",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "x-kubernetes-list-type",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
];

/// Values admitted by `schema` (a structural schema node, as JSON).
pub fn admitted(schema: &Value) -> BoxedStrategy<Value> {
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("schema node is not an object: {schema}"));
    for key in obj.keys() {
        assert!(
            HANDLED.contains(&key.as_str()) || IGNORED.contains(&key.as_str()),
            "schema keyword {key:?} is not modelled by the schema_values interpreter: {schema}"
        );
    }
    let non_null = non_null_values(obj);
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        prop_oneof![9 => non_null, 1 => Just(Value::Null)].boxed()
    } else {
        non_null
    }
}

fn non_null_values(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    if let Some(values) = obj.get("enum") {
        let values: Vec<Value> = values
            .as_array()
            .expect("enum is a list")
            .iter()
            // A null in an enum only matters where the field is nullable; `admitted` adds it.
            .filter(|v| !v.is_null())
            .cloned()
            .collect();
        assert!(!values.is_empty(), "enum without non-null values");
        return prop::sample::select(values).boxed();
    }
    if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return prop_oneof![integers(obj), strings(obj)].boxed();
    }
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && obj.get("type").is_none_or(|t| t == "object")
        && obj.get("properties").is_none()
    {
        return arbitrary_json().boxed();
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("object") => objects(obj),
        Some("array") => arrays(obj),
        Some("string") => strings(obj),
        Some("integer") => integers(obj),
        Some("number") => numbers(obj),
        Some("boolean") => any::<bool>().prop_map(Value::Bool).boxed(),
        other => panic!("schema type {other:?} is not modelled: {obj:?}"),
    }
}

fn usize_of(obj: &Map<String, Value>, key: &str) -> Option<usize> {
    obj.get(key).map(|v| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{key} is not a count: {v}")) as usize
    })
}

fn objects(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    let required: Vec<String> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .map(|v| v.as_str().expect("required names").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let min = usize_of(obj, "minProperties").unwrap_or(0);
    let max = usize_of(obj, "maxProperties");
    if let Some(additional) = obj.get("additionalProperties") {
        assert!(
            obj.get("properties").is_none(),
            "properties together with additionalProperties are not modelled"
        );
        let values = match additional {
            Value::Bool(true) => arbitrary_json().boxed(),
            Value::Bool(false) => Just(Value::Null).boxed(),
            schema => admitted(schema),
        };
        let max = max.unwrap_or(min.max(UNBOUNDED_PROPERTIES));
        return prop::collection::btree_map(map_key(), values, min..=max)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed();
    }
    let properties: Vec<(String, Value)> = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = properties
        .into_iter()
        .map(|(name, schema)| {
            let values = admitted(&schema);
            let key = name.clone();
            let present = values.prop_map(move |v| Some((key.clone(), v)));
            if required.contains(&name) {
                present.boxed()
            } else {
                // Absent: the API server fills in the default, if any.
                let absent = match schema.get("default") {
                    Some(default) => Just(Some((name, default.clone()))).boxed(),
                    None => Just(None).boxed(),
                };
                // Absent first, so that shrinking removes fields.
                prop_oneof![absent, present].boxed()
            }
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .prop_filter("minProperties/maxProperties", move |v| {
            let n = v.as_object().map_or(0, Map::len);
            n >= min && max.is_none_or(|max| n <= max)
        })
        .boxed()
}

/// Map keys: any string the API server stores as a JSON object key, empty and long ones
/// included.
fn map_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9._/-]{1,20}",
        2 => "(?i:vaultkey\\.dev)/[a-z-]{0,12}",
        1 => Just(String::new()),
        1 => ".{1,16}",
        1 => "[a-z]{500,600}",
    ]
}

fn arrays(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    let items = admitted(obj.get("items").expect("array schema has items"));
    let min = usize_of(obj, "minItems").unwrap_or(0);
    let max = usize_of(obj, "maxItems").unwrap_or(min.max(UNBOUNDED_ITEMS));
    let list_type = obj
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
        .unwrap_or("atomic");
    let unique_by: Option<Vec<String>> = match list_type {
        "set" => Some(Vec::new()),
        "map" => Some(
            obj.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .expect("a map list has x-kubernetes-list-map-keys")
                .iter()
                .map(|k| k.as_str().expect("map key name").to_owned())
                .collect(),
        ),
        "atomic" if obj.get("uniqueItems") == Some(&Value::Bool(true)) => Some(Vec::new()),
        "atomic" => None,
        other => panic!("x-kubernetes-list-type {other:?} is not modelled"),
    };
    prop::collection::vec(items, min..=max)
        .prop_map(move |items| {
            let Some(keys) = &unique_by else {
                return items;
            };
            // Keep the first of each key (set: the whole item), as the API server requires.
            let identity = |v: &Value| -> Value {
                if keys.is_empty() {
                    v.clone()
                } else {
                    Value::Array(keys.iter().map(|k| v[k.as_str()].clone()).collect())
                }
            };
            let mut seen = Vec::new();
            items
                .into_iter()
                .filter(|v| {
                    let id = identity(v);
                    let fresh = !seen.contains(&id);
                    seen.push(id);
                    fresh
                })
                .collect()
        })
        .prop_filter("minItems after removing duplicates", move |v| {
            v.len() >= min
        })
        .prop_map(Value::Array)
        .boxed()
}

fn integers(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    match obj.get("format").and_then(Value::as_str) {
        None | Some("int32") | Some("int64") => {}
        Some(other) => panic!("integer format {other:?} is not modelled"),
    }
    // The API server decodes JSON integers as int64; `format` does not narrow them.
    let bound = |key: &str| {
        obj.get(key).map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
        })
    };
    let exclusive = |key: &str| obj.get(key) == Some(&Value::Bool(true));
    // The API server compares an int64 against the bound as float64s; `as` saturates, so a
    // maximum of 2^63 (what i64::MAX becomes as a float64) admits i64::MAX.
    let min = bound("minimum").map_or(i64::MIN, |m| {
        let lo = m.ceil() as i64;
        if exclusive("exclusiveMinimum") && lo as f64 == m {
            lo + 1
        } else {
            lo
        }
    });
    let max = bound("maximum").map_or(i64::MAX, |m| {
        let hi = m.floor() as i64;
        if exclusive("exclusiveMaximum") && hi as f64 == m {
            hi - 1
        } else {
            hi
        }
    });
    assert!(min <= max, "empty integer range {min}..={max}: {obj:?}");
    let multiple_of = obj.get("multipleOf").map(|v| {
        v.as_i64()
            .unwrap_or_else(|| panic!("non-integer multipleOf {v}"))
    });
    let mut edges = vec![
        min,
        max,
        min.saturating_add(1).min(max),
        max.saturating_sub(1).max(min),
    ];
    for v in [
        0,
        1,
        -1,
        i32::MAX as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
    ] {
        if (min..=max).contains(&v) {
            edges.push(v);
        }
    }
    let small_hi = max.min(min.saturating_add(10_000));
    prop_oneof![
        2 => prop::sample::select(edges),
        3 => min..=max,
        3 => min..=small_hi,
    ]
    .prop_filter("multipleOf", move |v| {
        multiple_of.is_none_or(|m| v % m == 0)
    })
    .prop_map(Value::from)
    .boxed()
}

fn numbers(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    let min = obj.get("minimum").and_then(Value::as_f64).unwrap_or(-1e12);
    let max = obj.get("maximum").and_then(Value::as_f64).unwrap_or(1e12);
    (min..=max).prop_map(Value::from).boxed()
}

fn strings(obj: &Map<String, Value>) -> BoxedStrategy<Value> {
    let min = usize_of(obj, "minLength").unwrap_or(0);
    let max = usize_of(obj, "maxLength");
    let pattern = obj
        .get("pattern")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let format = obj.get("format").and_then(Value::as_str).map(str::to_owned);
    // A CEL rule `self.matches(r'RE')` is not evaluated, but guides generation: most strings
    // match RE (so the generator reaches values the CEL admits), the rest are anything the
    // structural schema admits.
    let cel_pattern = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("rule").and_then(Value::as_str))
        .find_map(|rule| rule.strip_prefix("self.matches(r'")?.strip_suffix("')"))
        .map(str::to_owned);
    let base: BoxedStrategy<String> = match (&pattern, format.as_deref()) {
        (Some(p), _) => proptest::string::string_regex(&rust_regex(p))
            .unwrap_or_else(|e| panic!("pattern {p:?} cannot be generated from: {e}"))
            .boxed(),
        (None, _) if cel_pattern.is_some() => {
            let p = cel_pattern.as_deref().unwrap_or_default();
            let hinted = proptest::string::string_regex(&rust_regex(p))
                .unwrap_or_else(|e| panic!("CEL pattern {p:?} cannot be generated from: {e}"));
            let any_string = prop::collection::vec(
                proptest::char::range(' ', '~'),
                min..=max.unwrap_or(UNBOUNDED_STRING).min(40),
            )
            .prop_map(|cs| cs.into_iter().collect::<String>());
            prop_oneof![9 => hinted, 1 => any_string].boxed()
        }
        (None, Some("date-time")) => go_openapi_date_time().boxed(),
        (None, Some(other)) => panic!("string format {other:?} is not modelled"),
        (None, None) => {
            let hi = max.unwrap_or(min.max(UNBOUNDED_STRING));
            let chars = prop_oneof![
                8 => proptest::char::range(' ', '~'),
                1 => any::<char>(),
            ];
            prop_oneof![
                3 => prop::collection::vec(chars.clone(), min..=hi.min(min.max(24))),
                1 => prop::collection::vec(chars, min..=hi),
            ]
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .boxed()
        }
    };
    // Strings generated from a pattern match it by construction.
    base.prop_filter("minLength/maxLength/format", move |s| {
        let n = s.chars().count();
        n >= min
            && max.is_none_or(|max| n <= max)
            && (format.as_deref() != Some("date-time") || is_date_time(s))
    })
    .prop_map(Value::String)
    .boxed()
}

/// A Go RE2 pattern as a Rust regex with the same meaning: Perl classes are ASCII in RE2.
fn ascii_classes(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_class = 0usize;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().expect("pattern ends in a backslash");
                let (inside, outside) = match next {
                    'd' => ("0-9", "[0-9]"),
                    's' => ("\\t\\n\\x0C\\r ", "[\\t\\n\\x0C\\r ]"),
                    'w' => ("0-9A-Za-z_", "[0-9A-Za-z_]"),
                    'D' | 'S' | 'W' => panic!("negated Perl class \\{next} is not modelled"),
                    _ => {
                        out.push('\\');
                        out.push(next);
                        continue;
                    }
                };
                out.push_str(if in_class > 0 { inside } else { outside });
            }
            '[' => {
                in_class += 1;
                out.push(c);
                // A ']' right after '[' or '[^' is a literal.
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap());
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            ']' if in_class > 0 => {
                in_class -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// For generation: proptest cannot generate anchors, and a string matching the whole pattern
/// also matches it unanchored; so only patterns anchored at both ends or at neither are
/// accepted here.
fn rust_regex(pattern: &str) -> String {
    let converted = ascii_classes(pattern);
    let inner = converted.strip_prefix('^').unwrap_or(&converted);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    assert!(
        !inner.replace("[^", "[").replace("\\^", "").contains('^')
            && !inner.replace("\\$", "").contains('$'),
        "pattern {pattern:?} has anchors inside; not modelled"
    );
    inner.to_owned()
}

/// Date-times as kube-openapi's `strfmt.IsDateTime` accepts them: lower-cased and split at
/// every `t`, the first part a Go `2006-01-02` date and the second matching
/// `^(\d\d):(\d\d):(\d\d)(.[0-9]+)?(z|([+-]\d\d:\d\d))$` with hours <= 23, minutes and
/// seconds <= 59; anything after a further `t` is not looked at.
pub fn go_openapi_date_time() -> impl Strategy<Value = String> {
    let date = (0u32..=9999, 1u32..=12, 1u32..=31)
        .prop_filter("day exists", |&(y, m, d)| d <= days_in_month(y, m))
        .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    let separator = prop_oneof![4 => Just('T'), 1 => Just('t')];
    let time =
        (0u32..=23, 0u32..=59, 0u32..=59).prop_map(|(h, m, s)| format!("{h:02}:{m:02}:{s:02}"));
    let fraction = prop::option::of((
        prop_oneof![4 => Just('.'), 1 => Just(','), 1 => Just('x')],
        "[0-9]{1,12}",
    ))
    .prop_map(|f| {
        f.map(|(sep, digits)| format!("{sep}{digits}"))
            .unwrap_or_default()
    });
    let zone = prop_oneof![
        4 => Just("Z".to_owned()),
        1 => Just("z".to_owned()),
        3 => ("[+-]", 0u32..=23, 0u32..=59).prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
        1 => ("[+-]", 0u32..=99, 0u32..=99).prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
    ];
    let tail = prop_oneof![8 => Just(String::new()), 1 => "[Tt][a-z0-9 :]{0,8}"];
    (date, separator, time, fraction, zone, tail)
        .prop_map(|(date, sep, time, fraction, zone, tail)| {
            format!("{date}{sep}{time}{fraction}{zone}{tail}")
        })
        .prop_filter("IsDateTime", |s| is_date_time(s))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// kube-openapi's `strfmt.IsDateTime`, ported.
pub fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_go_date(parts[0]) {
        return false;
    }
    let time = parts[1].as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        time.get(r)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    if time.len() < 9
        || !digits(0..2)
        || time[2] != b':'
        || !digits(3..5)
        || time[5] != b':'
        || !digits(6..8)
    {
        return false;
    }
    if &parts[1][0..2] > "23" || &parts[1][3..5] > "59" || &parts[1][6..8] > "59" {
        return false;
    }
    let rest = &parts[1][8..];
    // (.[0-9]+)? then the zone; `.` is any character but a newline.
    let with_fraction = rest.chars().next().is_some_and(|c| {
        let after = &rest[c.len_utf8()..];
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        c != '\n' && n > 0 && zone_ok(&after[n..])
    });
    with_fraction || zone_ok(rest)
}

fn zone_ok(zone: &str) -> bool {
    let b = zone.as_bytes();
    zone == "z"
        || (b.len() == 6
            && (b[0] == b'+' || b[0] == b'-')
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && b[3] == b':'
            && b[4].is_ascii_digit()
            && b[5].is_ascii_digit())
}

/// Go's `time.Parse("2006-01-02", s)`.
fn is_go_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// Any JSON, for `x-kubernetes-preserve-unknown-fields` and `additionalProperties: true`.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
