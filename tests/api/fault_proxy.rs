//! A TCP proxy for fault injection between the service and PostgreSQL or Redis.
//!
//! Faults apply to every connection, open or new, from the moment they are set:
//! - `Pass`: bytes flow.
//! - `Delay(d)`: each chunk waits `d` before it is forwarded (in both directions).
//! - `Blackhole`: nothing is forwarded and nothing is refused, like a network partition. Bytes sent
//!   meanwhile wait in the kernel buffers and flow again after `Pass`, as TCP would retransmit them.
//! - `Reset`: every connection is reset (RST), and new ones are reset as soon as they are accepted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay(Duration),
    Blackhole,
    Reset,
}

pub struct FaultProxy {
    pub port: u16,
    fault: watch::Sender<Fault>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (fault, watcher) = watch::channel(Fault::Pass);
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = watcher.clone();
                tokio::spawn(async move {
                    if *mode.borrow() == Fault::Reset {
                        reset(&client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        reset(&client);
                        return;
                    };
                    client.set_nodelay(true).ok();
                    server.set_nodelay(true).ok();
                    relay(client, server, mode).await;
                });
            }
        });
        Self {
            port,
            fault,
            acceptor,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// `url` (a postgres:// or redis:// URL on 127.0.0.1) pointed at this proxy instead.
    pub fn url_for(&self, url: &str, upstream_port: u16) -> String {
        url.replace(
            &format!("127.0.0.1:{upstream_port}"),
            &format!("127.0.0.1:{}", self.port),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.fault.send_replace(Fault::Reset);
    }
}

fn reset(stream: &TcpStream) {
    stream.set_zero_linger().ok();
}

async fn relay(mut a: TcpStream, mut b: TcpStream, mut mode: watch::Receiver<Fault>) {
    let mut from_a = vec![0u8; 16 * 1024];
    let mut from_b = vec![0u8; 16 * 1024];
    loop {
        let fault = *mode.borrow_and_update();
        match fault {
            Fault::Reset => {
                reset(&a);
                reset(&b);
                return;
            }
            Fault::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Fault::Pass | Fault::Delay(_) => {}
        }
        let delay = match fault {
            Fault::Delay(d) => d,
            _ => Duration::ZERO,
        };
        tokio::select! {
            read = a.read(&mut from_a) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    b.shutdown().await.ok();
                    return;
                }
                tokio::time::sleep(delay).await;
                if b.write_all(&from_a[..n]).await.is_err() {
                    return;
                }
            }
            read = b.read(&mut from_b) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    a.shutdown().await.ok();
                    return;
                }
                tokio::time::sleep(delay).await;
                if a.write_all(&from_b[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
