//! Plivo's XML, Audio Streams codec, REST requests and callbacks, against the documented shapes.

use super::*;
use serde_json::{Value, json};

fn started() -> PlivoStream {
    let mut stream = PlivoStream::default();
    let start = json!({"event":"start","sequenceNumber":1,"start":{
        "callId":"c-1","streamId":"s-1","accountId":"MA1","tracks":["inbound"],
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},
        "extra_headers":"direction=inbound;from=14155550100"});
    match stream.parse(&start.to_string()).unwrap() {
        PhoneEvent::Started(s) => {
            assert_eq!(s.call_id, "c-1");
            assert_eq!(s.stream_id, "s-1");
            assert_eq!(s.params["from"], "14155550100");
            assert_eq!(s.params["direction"], "inbound");
        }
        other => panic!("expected start, got {other:?}"),
    }
    stream
}

#[test]
fn media_and_controls_are_read() {
    let mut stream = started();
    let media = r#"{"event":"media","sequenceNumber":42,"streamId":"s-1","media":{"track":"inbound","timestamp":"1705312200000","chunk":41,"payload":"AAEC"},"extra_headers":"a=1"}"#;
    assert_eq!(stream.parse(media).unwrap(), PhoneEvent::Audio(&[0, 1, 2]));
    let played = r#"{"event":"playedStream","sequenceNumber":50,"streamId":"s-1","name":"turn-1"}"#;
    assert_eq!(
        stream.parse(played).unwrap(),
        PhoneEvent::MarkPlayed("turn-1".into())
    );
    let cleared = r#"{"event":"clearedAudio","sequenceNumber":51,"streamId":"s-1"}"#;
    assert_eq!(stream.parse(cleared).unwrap(), PhoneEvent::Cleared);
    let dtmf = r#"{"event":"dtmf","sequenceNumber":7,"streamId":"s-1","dtmf":{"track":"inbound","digit":"5","timestamp":"1"}}"#;
    assert_eq!(stream.parse(dtmf).unwrap(), PhoneEvent::Dtmf("5".into()));
    assert_eq!(
        stream
            .parse(r#"{"event":"stop","reason":"hangup"}"#)
            .unwrap(),
        PhoneEvent::Stopped
    );
}

#[test]
fn extra_headers_in_every_documented_form() {
    for raw in [
        json!("a=1;b=2"),
        json!("a=1,b=2"),
        json!("{\"a\":\"1\",\"b\":2}"),
        json!({"a":"1","b":2}),
    ] {
        let params = parse_extra_headers(raw.clone());
        assert_eq!(params.get("a").map(String::as_str), Some("1"), "{raw}");
        assert_eq!(params.get("b").map(String::as_str), Some("2"), "{raw}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut stream = started();
    assert!(stream.parse("\u{0}").is_err());
    assert!(
        stream
            .parse(r#"{"event":"media","media":{"payload":"@@"}}"#)
            .is_err()
    );
    assert!(stream.parse(r#"{"event":"playedStream"}"#).is_err());
    assert_eq!(
        stream.parse(r#"{"event":"muteStream"}"#).unwrap(),
        PhoneEvent::Ignored
    );
}

#[test]
fn commands_use_plivo_shapes() {
    let stream = started();
    let play: Value =
        serde_json::from_str(&stream.encode(PhoneCommand::Play(&[0xFF; 160]))).unwrap();
    assert_eq!(play["event"], "playAudio");
    assert_eq!(play["media"]["contentType"], "audio/x-mulaw");
    assert_eq!(play["media"]["sampleRate"], 8000);
    assert_eq!(play["media"]["payload"].as_str().unwrap().len(), 216);
    let clear: Value = serde_json::from_str(&stream.encode(PhoneCommand::Clear)).unwrap();
    assert_eq!(clear, json!({"event":"clearAudio","streamId":"s-1"}));
    let mark: Value = serde_json::from_str(&stream.encode(PhoneCommand::Mark("t1"))).unwrap();
    assert_eq!(
        mark,
        json!({"event":"checkpoint","streamId":"s-1","name":"t1"})
    );
}

#[test]
fn answer_xml_keeps_the_call_alive_with_mulaw() {
    let xml = Plivo.answer_xml(
        "wss://h.io/plivo/stream",
        &[("from", "+1 415-555"), ("direction", "inbound")],
    );
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Stream bidirectional=\"true\" keepCallAlive=\"true\" audioTrack=\"inbound\" contentType=\"audio/x-mulaw;rate=8000\" extraHeaders=\"from=1415555,direction=inbound\">wss://h.io/plivo/stream</Stream></Response>"
    );
}
