//! A Server-Sent Events reader for the admin API's `/api/v1/events`, as the dashboard reads it:
//! a plain HTTP response with the token in the `Authorization` header.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// One event: its name and its JSON data.
pub type SseEvent = (String, Value);

pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Opens the stream at `url` with `token`; panics unless it answers 200 `text/event-stream`.
    pub async fn open(url: &str, token: &str) -> EventStream {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("the event stream answers");
        assert_eq!(response.status(), 200, "GET {url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event within `wait`, skipping keep-alive comments; `None` on timeout or end.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(event) = self.take_buffered() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// The first event named `name` within `wait`, with the events skipped before it.
    pub async fn until(&mut self, name: &str, wait: Duration) -> (Option<Value>, Vec<SseEvent>) {
        let deadline = Instant::now() + wait;
        let mut skipped = Vec::new();
        while let Some(event) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if event.0 == name {
                return (Some(event.1), skipped);
            }
            skipped.push(event);
        }
        (None, skipped)
    }

    fn take_buffered(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if !data.is_empty() {
                let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
                return Some((name, data));
            }
        }
        None
    }
}
