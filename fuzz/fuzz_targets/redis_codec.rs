//! The Redis reply decoders (`core/src/store/redis/codec.rs` `parse_session`, `parse_policy`,
//! `parse_anchor`; `feed.rs` `decode_push`), reached through the `fuzzing` feature's
//! `store::redis_decoders`: arbitrary hash fields, arbitrary RESP values and structured
//! change-feed messages. A decoded value must be what the fields say, and a decoded change
//! event must survive the JSON round trip the dashboard's event stream makes.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use grantflow_core::store::ChangeEvent;
use grantflow_core::store::redis_decoders::{
    decode_push, parse_anchor, parse_policy, parse_session,
};
use grantflow_fuzz::Json;
use libfuzzer_sys::fuzz_target;
use redis::{Value, VerbatimFormat};
use serde_json::json;

#[derive(Arbitrary, Debug)]
enum Field {
    User,
    Dn,
    Anchor,
    Started,
    Seen,
    Ip,
    Ua,
    MaxAgeMs,
    Source,
    Any(String),
}

impl Field {
    fn name(&self) -> String {
        match self {
            Field::User => "user".into(),
            Field::Dn => "dn".into(),
            Field::Anchor => "anchor".into(),
            Field::Started => "started".into(),
            Field::Seen => "seen".into(),
            Field::Ip => "ip".into(),
            Field::Ua => "ua".into(),
            Field::MaxAgeMs => "max_age_ms".into(),
            Field::Source => "source".into(),
            Field::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Resp {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Simple(String),
    Okay,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Double(f64),
    Boolean(bool),
    Verbatim(String),
}

impl Resp {
    fn value(&self) -> Value {
        match self {
            Resp::Nil => Value::Nil,
            Resp::Int(i) => Value::Int(*i),
            Resp::Bulk(b) => Value::BulkString(b.clone()),
            Resp::Simple(s) => Value::SimpleString(s.clone()),
            Resp::Okay => Value::Okay,
            Resp::Array(items) => Value::Array(items.iter().map(Resp::value).collect()),
            Resp::Map(pairs) => {
                Value::Map(pairs.iter().map(|(k, v)| (k.value(), v.value())).collect())
            }
            Resp::Set(items) => Value::Set(items.iter().map(Resp::value).collect()),
            Resp::Double(d) => Value::Double(*d),
            Resp::Boolean(b) => Value::Boolean(*b),
            Resp::Verbatim(text) => Value::VerbatimString {
                format: VerbatimFormat::Text,
                text: text.clone(),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Created,
    Ended,
    Blocks,
    Policy,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Session {
        tenant: String,
        id: String,
        fields: Vec<(Field, String)>,
    },
    Policy {
        fields: Vec<(Field, String)>,
        default_secs: u32,
    },
    Anchor(String),
    /// A push of arbitrary RESP values.
    Push(Vec<Resp>),
    /// A well-formed push whose message is built from parts.
    Message {
        tenant: String,
        kind: Kind,
        fields: Vec<(Field, Json)>,
        key: Option<String>,
        bulk: bool,
    },
}

fn check_event(data: &[Value]) {
    let Some(event) = decode_push(data) else {
        return;
    };
    let channel: String = redis::from_redis_value(data[0].clone()).expect("a channel");
    assert_eq!(channel, format!("gf:{{{}}}:changes", event.tenant()));
    let json = serde_json::to_string(&event).expect("an event serializes");
    let back: ChangeEvent = serde_json::from_str(&json).expect("an event deserializes");
    assert_eq!(back, event, "the event changed through JSON: {json}");
}

fuzz_target!(|input: Input| {
    match input {
        Input::Session { tenant, id, fields } => {
            let fields: HashMap<String, String> =
                fields.iter().map(|(f, v)| (f.name(), v.clone())).collect();
            if let Some(record) = parse_session(&tenant, &id, fields.clone()) {
                assert_eq!(record.tenant, tenant);
                assert_eq!(record.id, id);
                assert_eq!(Some(&record.user), fields.get("user"));
                assert_eq!(
                    Some(record.anchor.as_str()),
                    fields.get("anchor").map(String::as_str)
                );
                assert_eq!(fields["started"].parse().ok(), Some(record.started_at));
                assert_eq!(fields["seen"].parse().ok(), Some(record.last_seen));
            }
        }
        Input::Policy {
            fields,
            default_secs,
        } => {
            let fields: HashMap<String, String> =
                fields.iter().map(|(f, v)| (f.name(), v.clone())).collect();
            let default = Duration::from_secs(u64::from(default_secs));
            match parse_policy(&fields, default) {
                Ok(policy) => match fields.get("max_age_ms") {
                    None => assert_eq!(policy.max_session_age, default),
                    Some(ms) => assert_eq!(
                        policy.max_session_age,
                        Duration::from_millis(ms.parse().expect("parsed before"))
                    ),
                },
                Err(_) => assert!(fields.contains_key("max_age_ms")),
            }
        }
        Input::Anchor(text) => {
            let anchor = parse_anchor(&text);
            assert_eq!(
                anchor.is_some(),
                matches!(text.as_str(), "sid" | "tokenid" | "token")
            );
            if let Some(a) = anchor {
                assert_eq!(a.as_str(), text);
            }
        }
        Input::Push(values) => {
            let data: Vec<Value> = values.iter().map(Resp::value).collect();
            check_event(&data);
        }
        Input::Message {
            tenant,
            kind,
            fields,
            key,
            bulk,
        } => {
            let t = match kind {
                Kind::Created => "created".to_owned(),
                Kind::Ended => "ended".to_owned(),
                Kind::Blocks => "blocks".to_owned(),
                Kind::Policy => "policy".to_owned(),
                Kind::Any(s) => s,
            };
            let mut message = json!({ "t": t });
            if let Some(key) = key {
                message["key"] = json!(key);
            }
            for (field, value) in &fields {
                // Mostly strings, as the Lua scripts publish them.
                let value = match value {
                    Json::Int(i) => json!(i.to_string()),
                    other => other.to_value(),
                };
                message[field.name()] = value;
            }
            let channel = format!("gf:{{{tenant}}}:changes");
            let payload = message.to_string();
            let data = if bulk {
                vec![
                    Value::BulkString(channel.into_bytes()),
                    Value::BulkString(payload.into_bytes()),
                ]
            } else {
                vec![Value::SimpleString(channel), Value::SimpleString(payload)]
            };
            check_event(&data);
        }
    }
});
