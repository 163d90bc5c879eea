//! The tutorials, end to end: Istio's tcp-echo traffic shifting, port
//! routing (seed 002) and a Kafka-style broker on a custom port in another
//! namespace (seed 003).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{ConfigDir, EchoBackend, Ports, Ringway, say, tcp_echo};

#[test]
fn tutorial_all_v1_answers_only_one() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let listen = ports.listener();
    let config = tcp_echo(listen, &v1, &v2, false);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    for i in 0..10 {
        assert_eq!(say(listen, &format!("hello {i}")), format!("one hello {i}"));
    }
}

#[test]
fn tutorial_80_20_on_one_worker_gives_exactly_8_of_10_to_v1() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let listen = ports.listener();
    let config = tcp_echo(listen, &v1, &v2, true);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let replies: Vec<String> = (0..10).map(|_| say(listen, "hi")).collect();
    let ones = replies.iter().filter(|r| *r == "one hi").count();
    let twos = replies.iter().filter(|r| *r == "two hi").count();
    assert_eq!((ones, twos), (8, 2), "replies: {replies:?}");
}

#[test]
fn seed_002_port_routing_sends_each_port_to_its_version() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (p1, p2) = (ports.listener(), ports.listener());
    let config = ConfigDir::new().example(
        "port-routing.yaml",
        "port-routing.yaml",
        &[
            ("31400", p1.to_string()),
            ("31401", p2.to_string()),
            ("13333", v1.port.to_string()),
            ("23333", v2.port.to_string()),
        ],
    );
    let Some(_gw) = Ringway::start(&config, &[]) else {
        return;
    };
    for _ in 0..3 {
        assert_eq!(say(p1, "a"), "one a");
        assert_eq!(say(p2, "b"), "two b");
    }
}

#[test]
fn seed_003_kafka_broker_on_a_custom_port_in_another_namespace() {
    let ports = Ports::new();
    let broker = EchoBackend::lines("kafka");
    let listen = ports.listener();
    let config = ConfigDir::new().example(
        "kafka-rcmd.yaml",
        "kafka.yaml",
        &[
            ("16354", listen.to_string()),
            ("19092", broker.port.to_string()),
        ],
    );
    let Some(_gw) = Ringway::start(&config, &["--workers", "2"]) else {
        return;
    };
    for i in 0..4 {
        assert_eq!(
            say(listen, &format!("produce {i}")),
            format!("kafka produce {i}")
        );
    }
}

#[test]
fn a_gateway_without_a_bound_virtual_service_opens_no_port_and_keeps_running() {
    let ports = Ports::new();
    let listen = ports.listener();
    // Only the Gateway of the tutorial: no VirtualService binds it.
    let config = ConfigDir::new().file(
        "gateway.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: tcp-echo-gateway\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: {listen}\n      name: tcp\n      protocol: TCP\n    hosts:\n    - \"*\"\n"
        ),
    );
    let Some(gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let refused = std::net::TcpStream::connect(("127.0.0.1", listen));
    assert!(refused.is_err(), "port {listen} is open");
    assert!(gw.logged("opens no listener"), "{}", gw.log_text());
    let status = gw.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn the_full_spec_command_line_is_accepted() {
    let ports = Ports::new();
    let v1 = EchoBackend::lines("one");
    let v2 = EchoBackend::lines("two");
    let listen = ports.listener();
    let config = tcp_echo(listen, &v1, &v2, false);
    let args = [
        "--workers",
        "1",
        "--admin",
        "off",
        "--drain-timeout",
        "5s",
        "--access-log",
        "off",
        "--log-format",
        "json",
        "--connect-attempts",
        "2",
        "--max-connections",
        "100",
        "--labels",
        "istio=ingressgateway",
        "--namespace",
        "default",
    ];
    let Some(gw) = Ringway::start(&config, &args) else {
        return;
    };
    assert_eq!(say(listen, "json"), "one json");
    assert!(
        gw.log_text().contains("\"level\":\"INFO\""),
        "JSON log lines expected"
    );
}

#[test]
fn proxy_protocol_v1_tells_the_upstream_who_connected() {
    use std::io::{BufRead, BufReader, Write};
    let ports = Ports::new();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (conn, _) = upstream.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut conn = conn;
        conn.write_all(format!("{}|{line}", header.trim_end()).as_bytes())
            .unwrap();
    });
    let listen = ports.listener();
    let policy = "    proxyProtocol:\n      version: V1\n";
    let config = common::tcp_service(listen, &[port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = common::connect(listen);
    let client_port = s.local_addr().unwrap().port();
    s.write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert_eq!(
        reply,
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {listen}|hello\n")
    );
}
