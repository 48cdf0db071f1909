//! A real MQTT broker for tests: Debian's `mosquitto` on a free 127.0.0.1
//! port, with a config file written here (a listener on 127.0.0.1 only,
//! anonymous clients, no persistence), stopped by its PID when dropped and
//! restartable on the same port; `mosquitto_pub` and `mosquitto_sub` as
//! devices. A missing mosquitto fails the test with what to install: the
//! tests never skip (tests/run-all.sh installs it).
//!
//! [`Mosquitto::start_tls`] gives a broker whose one listener speaks TLS
//! (mqtts://), with a CA and a certificate for localhost and 127.0.0.1
//! made here with rcgen; its clients then use `--cafile`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The broker binary: $MOSQUITTO, Debian's /usr/sbin/mosquitto, or
/// `mosquitto` on the PATH.
fn binary() -> String {
    if let Ok(path) = std::env::var("MOSQUITTO") {
        return path;
    }
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        return "/usr/sbin/mosquitto".into();
    }
    "mosquitto".into()
}

fn missing(what: &str, error: std::io::Error) -> ! {
    panic!(
        "{what} cannot be run ({error}): these tests need a real MQTT broker and its clients; \
         install them with `apt-get install mosquitto mosquitto-clients` (tests/run-all.sh does)"
    )
}

/// A CA certificate (PEM) in `dir/NAME.pem`, and its signer.
fn make_ca(dir: &Path, name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("sabai test {name}"));
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    (params, key)
}

/// A CA that signed nothing this broker shows: trusting it alone must
/// fail the handshake.
pub fn unrelated_ca(dir: &Path) -> PathBuf {
    make_ca(dir, "unrelated-ca");
    dir.join("unrelated-ca.pem")
}

/// A mosquitto process.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Its listener speaks TLS, with `dir/ca.pem`'s certificate.
    tls: bool,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(false)
    }

    /// A broker whose one listener speaks TLS (mqtts://).
    pub fn start_tls() -> Mosquitto {
        Mosquitto::start_with(true)
    }

    fn start_with(tls: bool) -> Mosquitto {
        let port = sabai_redis::testing::free_port();
        let dir = std::env::temp_dir().join(format!("sabai-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if tls {
            let (ca, ca_key) = make_ca(&dir, "ca");
            let key = rcgen::KeyPair::generate().unwrap();
            let params =
                rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
            let cert = params.signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key)).unwrap();
            std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
            // mosquitto started as root reads them as user mosquitto,
            // whatever the umask: a test key, readable by all.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            for name in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let mut broker = Mosquitto { child: None, port, dir, tls };
        broker.run();
        broker
    }

    /// The CA (PEM) that signed a TLS broker's certificate.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "a plain broker has no CA");
        self.dir.join("ca.pem")
    }

    /// Where a test may write files of its own; removed with the broker.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `-h -p` for mosquitto_pub and mosquitto_sub, and `--cafile` for TLS
    /// (the host name then checked against the certificate's).
    fn client_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-h", "127.0.0.1", "-p"].map(String::from).to_vec();
        args.push(self.port.to_string());
        if self.tls {
            args.push("--cafile".into());
            args.push(self.ca_file().to_string_lossy().into_owned());
        }
        args
    }

    fn run(&mut self) {
        let config = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            self.port
        );
        if self.tls {
            let path = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
            text += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                path("ca.pem"),
                path("cert.pem"),
                path("key.pem")
            );
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto", e));
        self.child = Some(child);
        // Up when it takes a TCP connection (at most 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited at start ({status}); port {} taken?", self.port);
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL, by its PID): the bridge loses the connection at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it and starts it again on the same port, with nothing kept
    /// (persistence false): every subscription is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// `mosquitto_pub` of one message (QoS 1), its payload given on stdin
    /// so it may be any bytes.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.publish_with(topic, payload, &[]);
    }

    /// The same with more flags (`-r` to retain).
    pub fn publish_with(&self, topic: &str, payload: &[u8], flags: &[&str]) {
        let mut child = Command::new("mosquitto_pub")
            .args(self.client_args())
            .args(["-q", "1", "-t", topic, "-s"])
            .args(flags)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_pub", e));
        child.stdin.take().unwrap().write_all(payload).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "mosquitto_pub -t {topic} failed: {status}");
    }

    /// `mosquitto_pub -l`: each line a message, in order, on one connection.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let mut child = Command::new("mosquitto_pub")
            .args(self.client_args())
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_pub", e));
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "mosquitto_pub -l failed: {status}");
    }

    /// A `mosquitto_sub` on `filter` (QoS 1), once it is subscribed: it
    /// also follows a probe topic, published to until a probe comes back
    /// (its own output is buffered, so its SUBACK line cannot be waited for).
    pub fn subscribe(&self, filter: &str) -> Subscriber {
        let probe = format!("sabai-test/probe/{}", rand::random::<u32>());
        let child = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-q", "1", "-t", filter, "-t", &probe])
            .args(["-F", "MSG %t %p"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_sub", e));
        let (tx, rx) = mpsc::channel();
        let mut subscriber = Subscriber { child, messages: rx };
        let stdout = subscriber.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(message) = line.strip_prefix("MSG ") {
                    let (topic, payload) = message.split_once(' ').unwrap_or((message, ""));
                    if tx.send((topic.to_owned(), payload.to_owned())).is_err() {
                        break;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        'probing: loop {
            assert!(Instant::now() < deadline, "mosquitto_sub was not subscribed within 10 s");
            self.publish(&probe, b"probe");
            while let Ok((topic, _)) = subscriber.messages.recv_timeout(Duration::from_millis(200)) {
                if topic == probe {
                    break 'probing;
                }
            }
        }
        // Probes still on their way are skipped by `next`.
        subscriber
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `mosquitto_sub`, stopped by its PID when dropped.
pub struct Subscriber {
    child: Child,
    messages: mpsc::Receiver<(String, String)>,
}

impl Subscriber {
    /// The next message (topic, payload) within 10 s, probes skipped.
    pub fn next(&self) -> (String, String) {
        loop {
            let message =
                self.messages.recv_timeout(Duration::from_secs(10)).expect("no MQTT message within 10 s");
            if !message.0.starts_with("sabai-test/probe/") {
                return message;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
