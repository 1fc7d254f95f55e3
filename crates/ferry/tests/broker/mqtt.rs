//! A private Mosquitto on a port of its own (persistence on, no bound on the messages queued
//! for a session that is away), driven through rumqttc. MQTT keeps messages only for
//! sessions: ferry's session (client id `ferry-e2e`) is made before the source is filled, and a
//! collector's session takes what ferry writes to the target. The payloads are unique, so the
//! puller names messages by their hash (`external_id: payload_hash`): with the default (a fresh
//! id each time) every message the broker sent and had no acknowledgement for when ferry was
//! killed is seated again, which was 21,295 copies of 100,000 in one run, against 21 and 757
//! (the pusher's re-push) with it.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{Process, free_port, runtime, wait_for_port};
use crate::{Broker, payload};

const FERRY_CLIENT: &str = "ferry-e2e";

pub struct Mqtt {
    port: u16,
    dir: tempfile::TempDir,
    process: Process,
    runtime: tokio::runtime::Runtime,
    collected: Arc<Mutex<Vec<String>>>,
}

fn server(port: u16, dir: &std::path::Path) -> Process {
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    wait_for_port(port, "mosquitto");
    Process(child)
}

impl Mqtt {
    pub fn start() -> Mqtt {
        use std::os::unix::fs::PermissionsExt;
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        // Started as root, mosquitto drops to its own user, which writes its persistence here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let process = server(port, dir.path());
        Mqtt {
            port,
            dir,
            process,
            runtime: runtime(),
            collected: Arc::default(),
        }
    }

    /// A persistent session of `client_id` subscribed to `topic`, then left.
    fn subscribe_and_leave(&self, client_id: &str, topic: &str) {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.port);
        options.set_clean_session(false);
        self.runtime.block_on(async {
            let (client, mut events) = AsyncClient::new(options, 10);
            client
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            loop {
                match events.poll().await.expect("connected") {
                    Event::Incoming(Packet::SubAck(_)) => break,
                    _ => continue,
                }
            }
            client.disconnect().await.expect("disconnect");
            let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
        });
    }
}

impl Broker for Mqtt {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn connection(&self) -> String {
        format!("host: 127.0.0.1, port: {}", self.port)
    }

    fn puller(&self, source: &str) -> String {
        format!(
            "topics: [{source}], client_id: {FERRY_CLIENT}, max_wait: 1s, external_id: payload_hash"
        )
    }

    fn pusher(&self, target: &str) -> String {
        format!("topic: {target}")
    }

    /// ferry's session on `source`, and the collector's on `target`, reading from now on.
    fn prepare(&mut self, source: &str, target: &str) {
        self.subscribe_and_leave(FERRY_CLIENT, source);
        let mut options = MqttOptions::new("e2e-collector", "127.0.0.1", self.port);
        options.set_clean_session(false);
        let (client, mut events) = AsyncClient::new(options, 100);
        let collected = self.collected.clone();
        let target = target.to_string();
        self.runtime.spawn(async move {
            client
                .subscribe(target, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => collected
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&publish.payload).into_owned()),
                    Ok(_) => {}
                    // The broker restarts: poll again, which connects again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }

    fn produce(&mut self, source: &str, count: usize) {
        let options = MqttOptions::new("e2e-producer", "127.0.0.1", self.port);
        self.runtime.block_on(async {
            let (client, mut events) = AsyncClient::new(options, 1000);
            let acks = tokio::spawn(async move {
                let mut acked = 0;
                while acked < count {
                    if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("up") {
                        acked += 1;
                    }
                }
            });
            for n in 0..count {
                client
                    .publish(source, QoS::AtLeastOnce, false, payload(n))
                    .await
                    .expect("publish");
            }
            acks.await.expect("every message acknowledged");
        });
    }

    fn count(&mut self, _target: &str) -> usize {
        self.collected.lock().unwrap().len()
    }

    fn read(&mut self, _target: &str) -> Vec<String> {
        std::thread::sleep(Duration::from_secs(1));
        self.collected.lock().unwrap().clone()
    }

    fn exactly_once(&self) -> bool {
        false
    }

    /// Stops the broker as a service manager does (SIGTERM: it writes what it holds) and
    /// starts it again.
    fn restart(&mut self) {
        self.process.signal("TERM");
        let _ = self.process.0.wait();
        self.process = server(self.port, self.dir.path());
    }
}
